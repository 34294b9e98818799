"""``fer predict``: class probabilities of images from a model bundle, as JSON."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import click

from fer_utils.cli.base import project


def printable(text: str) -> str:
    """``text`` (a file name, or a message naming one) with the bytes of a name that is not UTF-8
    shown as ``\\xNN``: POSIX hands such names over as surrogate escapes, which no UTF-8 output
    (so no JSON reader) accepts. Valid names come back unchanged."""
    return os.fsencode(text).decode("utf-8", errors="backslashreplace")


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path, exists=True), default=None,
              help="Model bundle folder (CNN or fused). Default: the bundle with the best validation macro F1 "
                   "among those trained on the data set of --data.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Without --bundle: serve a model trained on this data set (default: the project's "
                   "data/synthetic).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--crop-face", "crop", is_flag=True,
              help="Find the largest face (OpenCV Haar cascade) and predict on a square crop around it, as "
                   "the aligned faces the models learnt from; no face found: the whole image. Each answer "
                   'then has "face": {"box", "crop_box", "notice"}.')
def predict_cmd(images, bundle, data_path, device, crop):
    """Predict the expression of each image; JSON on stdout (the bundle used, one object per image).

    A fused bundle (CNN + captioner + text encoder + head) also gives each image's "caption" (the
    text its head read) and "vote" (the emotion the caption names, or null).

    --crop-face: each image is predicted on the crop around its largest face (fer_utils.inference.faces.crop_face)
    and its answer has "face": {"box": [x, y, w, h] of the face in the file's pixels or null,
    "crop_box": [x0, y0, x1, y1] cut out or null (whole image used), "notice": why the whole image
    was used, or that several faces were found, or null}.

    An image that cannot be used (missing, corrupt, unsupported) gets {"image", "error"} and the
    others are still answered. Warnings (e.g. a tiny image) go to stderr. Exit status: 0 all
    answered; 1 some image failed; 2 no answer at all (unusable bundle, bad option).
    """
    folders = project() if bundle is None else None   # before the imports: no project folder is said at once
    from fer_utils.inference.bundle import default_bundle
    from fer_utils.inference.predict import Predictor

    if bundle is None:
        if data_path is None and not folders.synthetic.exists():
            raise click.UsageError(f"no --bundle given, and the default data set {folders.synthetic} does not "
                                   "exist (so no bundle is trained on it): run `make study`, or pass --bundle DIR "
                                   "or --data PATH (the data set a bundle under data/runs was trained on)")
        if data_path is not None and not data_path.exists():
            raise click.BadParameter(f"{data_path} does not exist: name a bundle or the data set it was "
                                     "trained on", param_hint="--data")
        bundle = default_bundle(data_path)
    predictor = Predictor.from_bundle(bundle, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if crop:
            results, names = _predict_faces(predictor, images)
        else:
            results, names = predictor.predict_labeled(images, on_error="report"), {}
    for warning in caught:
        message = str(warning.message)
        name = message.split(":", 1)[0]
        if name in names:   # a crop's warning names the file, not "image 0 (in memory)"
            message = names[name] + message[len(name):]
        click.echo(f"warning: {printable(message)}", err=True)
    out = [{"image": printable(str(path)), **({"error": printable(res["error"])} if "error" in res else res)}
           for path, res in zip(images, results)]
    summary = predictor.summary()
    used = {key: summary[key] for key in ("path", "model", "val_macro_f1", "data")}
    used["path"] = printable(used["path"])
    click.echo(json.dumps({"bundle": used, "predictions": out}, indent=2, ensure_ascii=False, allow_nan=False))
    failed = sum("error" in res for res in results)
    if failed:
        click.echo(f"error: {failed} of {len(results)} images could not be read", err=True)
        raise SystemExit(1)


def _predict_faces(predictor, images) -> tuple[list[dict], dict[str, str]]:
    """Per image, the answer on its face crop with "face" added, or {"error"} naming the file; and
    the in-memory names the predictor gives the crops (in its warnings) -> the files they came from.
    Files are decoded in full (no JPEG draft): the face box is in the file's pixels."""
    from fer_utils.data import open_image
    from fer_utils.errors import DataError
    from fer_utils.inference.faces import FaceCrop, crop_face

    found: dict[int, FaceCrop] = {}
    errors: dict[int, str] = {}
    for position, path in enumerate(images):
        try:
            found[position] = crop_face(open_image(path))
        except DataError as exc:
            errors[position] = str(exc)
    answers = iter(predictor.predict_labeled([crop.image for crop in found.values()], on_error="report"))
    names = {f"image {k} (in memory)": f"{images[position]} (face crop)" for k, position in enumerate(found)}
    results = []
    for position in range(len(images)):
        if position in errors:
            results.append({"error": errors[position]})
            continue
        answer = next(answers)
        results.append(answer if "error" in answer else {**answer, "face": found[position].to_dict()})
    return results, names

"""``fer predict``: class probabilities of images from a model bundle, as JSON."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import click

from .base import project


def printable(text: str) -> str:
    """``text`` (a file name, or a message naming one) with the bytes of a name that is not UTF-8
    shown as ``\\xNN``: POSIX hands such names over as surrogate escapes, which no UTF-8 output
    (so no JSON reader) accepts. Valid names come back unchanged."""
    return os.fsencode(text).decode("utf-8", errors="backslashreplace")


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Model bundle folder (CNN or fused). Default: the bundle with the best validation macro F1 "
                   "among those trained on the data set of --data.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Without --bundle: serve a model trained on this data set (default: the project's "
                   "data/synthetic).")
@click.option("--device", default="cpu", show_default=True)
def predict_cmd(images, bundle, data_path, device):
    """Predict the expression of each image; JSON on stdout (the bundle used, one object per image).

    A fused bundle (CNN + captioner + text encoder + head) also gives each image's "caption" (the
    text its head read) and "vote" (the emotion the caption names, or null).

    An image that cannot be used (missing, corrupt, unsupported) gets {"image", "error"} and the
    others are still answered. Warnings (e.g. a tiny image) go to stderr. Exit status: 0 all
    answered; 1 some image failed; 2 no answer at all (unusable bundle, bad option).
    """
    from ..predict import Predictor, choose_bundle

    if bundle is None:
        from ..data import describe_dataset, load_dataset

        folders = project()
        data_path = data_path or folders.synthetic
        if not data_path.exists():
            raise click.BadParameter(f"{data_path} does not exist: name a bundle or the data set it was "
                                     "trained on", param_hint="--data")
        record = describe_dataset(data_path, load_dataset(data_path))
        bundle = choose_bundle(folders.bundles, record["fingerprint"])["path"]
    predictor = Predictor.from_bundle(bundle, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = predictor.predict_labeled(images, on_error="report")
    for warning in caught:
        click.echo(f"warning: {printable(str(warning.message))}", err=True)
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

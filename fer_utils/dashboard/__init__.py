"""The Voila dashboard's computations: the notebook next to this file (``dashboard.ipynb``, shipped
as package data and served by ``fer dashboard``) holds only widgets and layout.

Everything goes through the study's own inference path: uploads are checked by
:func:`fer_utils.inference.uploads.read_upload` (content sniffed, decompression bombs refused), the largest
face is cropped by :func:`fer_utils.inference.faces.crop_face` (as on the web site and in
``fer predict --crop-face``), the bundle's :class:`~fer_utils.inference.predict.Predictor` answers, a CNN
bundle's decision is explained by Grad-CAM (:func:`fer_utils.inference.explain.gradcam`, captum), a fused
bundle's text path by :func:`fer_utils.inference.explain.text_contribution`. Figures come from
:mod:`fer_utils.study.plots`. Test results are the bundle's predictions on the test split of the data
set it was trained on (checked by fingerprint), cached by bundle weights and data fingerprint.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_utils.errors import DataError, FERError
from fer_utils.labels import EMOTIONS, KOREAN

NOTEBOOK = Path(__file__).with_name("dashboard.ipynb")
"""The dashboard notebook (package data)."""
ENV_BUNDLES = "FER_DASHBOARD_BUNDLES"
ENV_DATA = "FER_DASHBOARD_DATA"
ENV_BUNDLE = "FER_DASHBOARD_BUNDLE"
CACHE_NAMESPACE, CACHE_VERSION = "dashboard-test", 1
NO_BUNDLE = ("No model bundle found under {root}. Train the study's models with `make study` (or "
             "`fer study run`), or start the dashboard with `fer dashboard --bundle DIR`.")


@dataclass(frozen=True)
class Settings:
    """Where the dashboard looks: bundles under ``bundles``, the data set ``data`` (its fingerprint
    picks the default bundle, its test split gives the test results), an explicit ``bundle``."""

    bundles: Path
    data: Path
    bundle: Path | None = None
    cache: Path | None = None

    @classmethod
    def from_environment(cls, env=None) -> Settings:
        """From ``FER_DASHBOARD_*`` (set by ``fer dashboard``), else the project's folders."""
        from fer_utils.paths import project_paths

        env = os.environ if env is None else env
        folders = project_paths(env)
        return cls(bundles=Path(env.get(ENV_BUNDLES) or folders.bundles),
                   data=Path(env.get(ENV_DATA) or folders.synthetic),
                   bundle=Path(env[ENV_BUNDLE]) if env.get(ENV_BUNDLE) else None, cache=folders.cache)


@dataclass(frozen=True)
class BundleChoice:
    label: str       # what the dropdown shows
    path: str
    summary: dict


def bundle_choices(settings: Settings) -> tuple[list[BundleChoice], str | None, str | None]:
    """``(choices, preselected path, message)``. Choices: every servable bundle under
    ``settings.bundles``, best validation macro F1 first, plus ``settings.bundle`` when named.
    Preselected: the named bundle, else the validation-best among those trained on
    ``settings.data`` (:func:`~fer_utils.inference.bundle.choose_bundle`), else the validation-best of all
    (the message says so). No bundle at all: no choices and a message with the command that makes one."""
    from fer_utils.inference.bundle import bundle_summary, default_bundle, list_bundles

    servable, skipped = list_bundles(settings.bundles)
    if settings.bundle is not None:
        named = bundle_summary(settings.bundle)
        servable = [named] + [s for s in servable if Path(s["path"]).resolve() != Path(settings.bundle).resolve()]
    if not servable:
        message = NO_BUNDLE.format(root=settings.bundles)
        if skipped:
            message += f" ({len(skipped)} bundle folder(s) there cannot be chosen automatically, e.g. {skipped[0]})"
        return [], None, message
    servable.sort(key=lambda s: -(s["val_macro_f1"] if isinstance(s["val_macro_f1"], (int, float)) else -1))
    choices = [BundleChoice(_label(s, settings.bundles), s["path"], s) for s in servable]
    if settings.bundle is not None:
        return choices, named["path"], None
    message = None
    try:
        best = str(default_bundle(settings.data, root=settings.bundles))
    except (FERError, OSError) as exc:
        best = servable[0]["path"]
        message = f"No bundle trained on {settings.data} ({exc}); preselected the best validation score of all."
    return choices, best, message


def _label(summary: dict, root: Path) -> str:
    path = Path(summary["path"])
    try:
        where = path.relative_to(root).as_posix()
    except ValueError:
        where = str(path)
    score = summary["val_macro_f1"]
    score = f"val macro F1 {score:.3f}" if isinstance(score, (int, float)) else "no validation score"
    return f"{summary['model']} · {score} · {where}"


def trained_on(summary: dict) -> str:
    """What the model was trained on, from the bundle's data record, in plain words."""
    data = summary.get("data") or {}
    if data.get("synthetic"):
        return ("Trained on synthetic cartoon faces (the project's embedded data set): its answers "
                "are not a judgement of real emotions.")
    name = data.get("name", "an unnamed data set")
    return (f"Trained on {name} ({data.get('n_images', '?')} images, fingerprint {data.get('fingerprint', '?')}): "
            "an estimate of the expression shown, not of what a person feels.")


_PREDICTORS: dict[str, object] = {}


def load_predictor(path: str | os.PathLike):
    """The bundle's Predictor, loaded once per process (switching back is instant)."""
    from fer_utils.inference.predict import Predictor

    key = str(Path(path).resolve())
    if key not in _PREDICTORS:
        _quiet_hub()
        _PREDICTORS[key] = Predictor.from_bundle(key)
    return _PREDICTORS[key]


def _quiet_hub() -> None:
    """No "Loading weights" progress bars in the page when a fused bundle loads its text encoder."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging
    except ImportError:  # the vlm extra is not installed: no fused bundle can load anyway
        return
    disable_progress_bars()
    transformers_logging.disable_progress_bar()


@dataclass
class Analysis:
    """What the dashboard shows for one uploaded image."""

    name: str
    error: str | None = None
    face: Image.Image | None = None
    face_notice: str | None = None
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    caption: str | None = None
    vote: str | None = None
    contribution: object | None = None     # fer_utils.inference.explain.TextContribution (fused bundles)
    gradcam: object | None = None          # fer_utils.inference.explain.GradCAM (CNN bundles)
    seconds: float = 0.0


def analyse(predictor, name: str, data: bytes) -> Analysis:
    """Check, crop, predict and explain one upload; a bad upload gives ``error`` (nothing raised)."""
    from fer_utils.inference.explain import gradcam, text_contribution
    from fer_utils.inference.faces import crop_face
    from fer_utils.inference.predict import FusedPredictor
    from fer_utils.inference.uploads import UploadError, read_upload

    start = time.perf_counter()
    try:
        checked = read_upload(bytes(data), name)
    except UploadError as exc:
        return Analysis(name=name, error=str(exc), seconds=time.perf_counter() - start)
    crop = crop_face(checked.image)
    result = Analysis(name=checked.name, face=crop.image, face_notice=crop.notice())
    if isinstance(predictor, FusedPredictor):
        contribution = text_contribution(predictor, crop.image)
        result.contribution = contribution
        result.label, result.probabilities = contribution.label, dict(contribution.probabilities)
        result.caption, result.vote = contribution.caption, contribution.vote
    else:
        answer = predictor.predict_labeled([crop.image])[0]
        result.label, result.probabilities = answer["label"], answer["probabilities"]
        result.gradcam = gradcam(predictor, crop.image)
    result.seconds = time.perf_counter() - start
    return result


def png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def image_png(image: Image.Image, size: int | None = None) -> bytes:
    """An image as PNG bytes, shrunk to at most ``size`` pixels on its long side."""
    if size is not None:
        image = image.copy()
        image.thumbnail((size, size))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def probability_png(probabilities: dict[str, float], compare: dict[str, float] | None = None) -> bytes:
    """The bar chart of one image's class probabilities (and, for a fused bundle, those with a
    neutral caption)."""
    import matplotlib.pyplot as plt

    from fer_utils.study.plots import probability_bars

    figure, ax = plt.subplots(figsize=(4.6, 2.8))
    probability_bars(probabilities, ax=ax, compare=compare,
                     compare_label="with a neutral caption" if compare else None)
    return png(figure)


@dataclass(frozen=True)
class SplitResults:
    """The bundle's predictions on the test split of its data set."""

    frame: pd.DataFrame      # id, path, pixels, true, predicted (class names), p_<class>
    metrics: dict            # fer_utils.training.evaluate.evaluate(...)
    cached: bool


def split_results(predictor, data: str | os.PathLike, cache_root: str | os.PathLike | None = None) -> SplitResults:
    """Predictions of ``predictor`` on the test split of ``data``, which must be the data set the
    bundle was trained on (same fingerprint: else :class:`DataError` saying which it needs).
    Cached by the bundle's weights and the data fingerprint."""
    from fer_utils.cache import Cache
    from fer_utils.data import describe_dataset, load_dataset
    from fer_utils.training.evaluate import evaluate

    index = load_dataset(data)
    record = describe_dataset(data, index)
    wanted = (predictor.manifest.get("data") or {}).get("fingerprint")
    if wanted != record["fingerprint"]:
        trained = predictor.manifest.get("data") or {}
        raise DataError(f"the bundle was trained on {trained.get('name', '?')} (fingerprint {wanted}, at "
                        f"{trained.get('path', '?')}), not on {data} (fingerprint {record['fingerprint']}): "
                        "start the dashboard with --data naming that data set to see its test results")
    test = index[index["split"] == "test"].reset_index(drop=True)
    cache = Cache(cache_root, CACHE_NAMESPACE, CACHE_VERSION)
    key = cache.key(weights=predictor.manifest.get("weights_sha256", ""), data=record["fingerprint"],
                    kind=predictor.manifest.get("kind", "cnn"))
    proba = cache.get(key)
    cached = proba is not None and proba.shape == (len(test), len(EMOTIONS))
    if not cached:
        # files by path (decoded exactly as `fer predict` decodes them), pixel rows (FER2013) as arrays
        inputs = [np.asarray(row.pixels, dtype=np.uint8) if row.pixels is not None else row.path
                  for row in test.itertuples()]
        proba = predictor.predict(inputs, batch_size=64)
        cache.put(key, np.asarray(proba, dtype=np.float32))
    predicted = proba.argmax(axis=1)
    frame = pd.DataFrame({"id": test["id"], "path": test["path"], "pixels": test["pixels"],
                          "true": [EMOTIONS[i] for i in test["label"]],
                          "predicted": [EMOTIONS[i] for i in predicted]})
    for i, name in enumerate(EMOTIONS):
        frame[f"p_{name}"] = proba[:, i]
    return SplitResults(frame, evaluate(test["label"].to_numpy(), proba), cached)


def confusion_png(results: SplitResults) -> bytes:
    import matplotlib.pyplot as plt

    from fer_utils.study.plots import confusion_matrix

    figure, ax = plt.subplots(figsize=(6.4, 5.4))
    confusion_matrix(results.metrics["confusion_matrix"], ax=ax, title="Test confusion matrix (rows: true)")
    return png(figure)


def per_class_png(results: SplitResults) -> bytes:
    import matplotlib.pyplot as plt

    from fer_utils.study.plots import per_class_f1

    frame = pd.DataFrame([{"class": name, "f1": values["f1"], "model": "this bundle"}
                          for name, values in results.metrics["per_class"].items()])
    figure, ax = plt.subplots(figsize=(7.5, 3.0))
    per_class_f1(frame, ax=ax)
    ax.get_legend().remove()
    return png(figure)


def misclassified(results: SplitResults, true: str | None = None, predicted: str | None = None) -> pd.DataFrame:
    """The misclassified test images, optionally of one true and/or one predicted class, most
    confident mistakes first."""
    frame = results.frame[results.frame["true"] != results.frame["predicted"]]
    if true:
        frame = frame[frame["true"] == true]
    if predicted:
        frame = frame[frame["predicted"] == predicted]
    confidence = frame.apply(lambda row: row[f"p_{row['predicted']}"], axis=1) if len(frame) else frame["id"]
    return frame.assign(confidence=confidence).sort_values("confidence", ascending=False)


def open_test_image(row) -> Image.Image:
    """A test image (a row of :attr:`SplitResults.frame`), decoded as the study decodes it."""
    from fer_utils.data import open_image

    return open_image({"path": row.path, "pixels": row.pixels})


def class_name(name: str | None) -> str:
    """``happiness (행복)``; ``—`` for None."""
    return "—" if name is None else f"{name} ({KOREAN[name]})"


__all__ = ["NOTEBOOK", "Settings", "BundleChoice", "bundle_choices", "trained_on", "load_predictor", "Analysis",
           "analyse", "png", "image_png", "probability_png", "SplitResults", "split_results", "confusion_png",
           "per_class_png", "misclassified", "open_test_image", "class_name", "FERError"]

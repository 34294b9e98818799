"""Model bundles and the one inference path: images in, class probabilities out.

A bundle is a folder::

    model.safetensors   the Classifier's state dict
    bundle.json         format_version, architecture, num_classes, labels (English and Korean, in
                        class order), preprocessing, metrics (test scores and the validation macro
                        F1 it was selected on), data (the training data's record: name,
                        fingerprint, synthetic or not), provenance, weights_sha256

``save_bundle`` writes one; ``Predictor.from_bundle`` loads it and turns images into class
probabilities with exactly the preprocessing the model was trained with. A bundle that cannot be
used (missing file or key, unknown architecture, labels other than :data:`fer_utils.labels.EMOTIONS`
in that order, weights of the wrong shape or not matching their checksum, non-finite outputs)
raises an error naming the file and what is wrong. ``choose_bundle`` picks the bundle a front end
serves when none is named: the best validation macro F1 among the bundles trained on a given data
set — never the newest file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fer_utils.cache import atomic_write
from fer_utils.data import build_transform, file_sha256, open_image
from fer_utils.data.index import to_rgb, warn_if_tiny
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.models.registry import create_model, list_models
from fer_utils.preprocessing import Preprocessing
from fer_utils.models.runtime import batched_forward, resolve_device

BUNDLE_FORMAT = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_KEYS: tuple[str, ...] = ("architecture", "num_classes", "labels", "labels_ko", "preprocessing",
                                  "weights_sha256")
"""Keys of ``bundle.json`` besides ``format_version``; metrics, data and provenance are optional."""

ImageLike = Image.Image | str | os.PathLike | np.ndarray


def save_bundle(path: str | os.PathLike, model: nn.Module, arch: str, preprocessing: Preprocessing,
                metrics: Mapping, data: Mapping, provenance: Mapping | None = None) -> Path:
    """Write ``model`` (a registry Classifier of architecture ``arch``) as a bundle folder ``path``.

    ``metrics`` should hold ``val_macro_f1`` (what :func:`choose_bundle` ranks by) and the test
    scores; ``data`` is the training data's record (:func:`fer_utils.data.describe_dataset`).
    Both files are written atomically, ``bundle.json`` last with the weights file's sha256, so a
    loader can tell a complete bundle and an error (e.g. metrics that are not JSON) leaves an
    existing bundle in the folder untouched. Returns the folder.
    """
    if arch not in list_models() or getattr(model, "arch", arch) != arch:
        raise ConfigError(f"architecture {arch!r} is not registered or not the model's "
                          f"({getattr(model, 'arch', None)!r}); registered: {', '.join(list_models())}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes != NUM_CLASSES:
        raise ConfigError(f"a bundle holds a {NUM_CLASSES}-class registry model, got num_classes={num_classes}")
    missing = [key for key in ("name", "fingerprint", "synthetic") if key not in data]
    if missing:
        raise ConfigError(f"bundle data record lacks {', '.join(missing)}: pass fer_utils.data.describe_dataset(...)")
    manifest = {
        "format_version": BUNDLE_FORMAT,
        "architecture": arch,
        "num_classes": num_classes,
        "labels": list(EMOTIONS),
        "labels_ko": list(EMOTIONS_KO),
        "preprocessing": preprocessing.to_dict(),
        "metrics": dict(metrics),
        "data": dict(data),
        "provenance": dict(provenance or {}),
    }
    try:
        json.dumps(manifest, allow_nan=False)  # NaN is not JSON: a strict reader refuses it
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bundle metrics/data/provenance must be JSON-serialisable: {exc}") from None
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(
        state, tmp, metadata={"format": "fer_utils bundle", "architecture": arch}))
    manifest["weights_sha256"] = file_sha256(weights)
    atomic_write(folder / BUNDLE_JSON, json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return folder


def _refuse_constant(name: str):
    """``json.loads``'s hook for NaN / Infinity, which Python reads but JSON does not have."""
    raise ValueError(f"{name} is not a JSON number")


def _read_manifest(file: Path) -> dict:
    """The checked contents of a ``bundle.json``; :class:`DataError` naming ``file`` when unusable.

    Strict: standard JSON only (no NaN), the supported format version, every key of
    :data:`REQUIRED_KEYS`, a registered architecture, and exactly the canonical classes —
    ``num_classes`` 7 and the labels of :data:`EMOTIONS` / :data:`EMOTIONS_KO` in that order (the
    weights' outputs are in that order: other labels would silently relabel every prediction).
    """
    if not file.is_file():
        raise WeightsNotFoundError(f"{file}: bundle manifest missing (not a model bundle folder?)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{file}: expected a JSON object")
    if manifest.get("format_version") != BUNDLE_FORMAT:
        raise DataError(f"{file}: format_version {manifest.get('format_version')!r} is not supported "
                        f"(this fer_utils reads {BUNDLE_FORMAT})")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}")
    if manifest["architecture"] not in list_models():
        raise DataError(f"{file}: unknown architecture {manifest['architecture']!r}; "
                        f"registered: {', '.join(list_models())}")
    n = manifest["num_classes"]
    if type(n) is not int or n != NUM_CLASSES:
        raise DataError(f"{file}: num_classes {n!r} is not {NUM_CLASSES}")
    for key, expected in (("labels", EMOTIONS), ("labels_ko", EMOTIONS_KO)):
        if manifest[key] != list(expected):
            raise DataError(f"{file}: {key} {manifest[key]!r} are not {expected!r} in that order")
    try:
        manifest["preprocessing"] = Preprocessing.from_dict(manifest["preprocessing"])
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{file}: bad preprocessing ({exc})") from None
    return manifest


class Predictor:
    """Images in, class probabilities out, for one model bundle."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, labels: Sequence[str],
                 labels_ko: Sequence[str], device: str = "cpu", source: Path | None = None,
                 manifest: Mapping | None = None):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.preprocessing = preprocessing
        self.labels = tuple(labels)
        self.labels_ko = tuple(labels_ko)
        self.source = source
        self.manifest = dict(manifest or {})
        self.transform = build_transform(preprocessing)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, device: str = "cpu") -> Predictor:
        """Load a bundle folder (or its ``bundle.json``)."""
        folder = Path(path)
        if folder.name == BUNDLE_JSON:
            folder = folder.parent
        manifest = _read_manifest(folder / BUNDLE_JSON)
        weights_file = folder / WEIGHTS_FILE
        if not weights_file.is_file():
            raise WeightsNotFoundError(f"{weights_file}: model weights missing from the bundle")
        if file_sha256(weights_file) != manifest["weights_sha256"]:
            raise DataError(f"{weights_file}: contents do not match the weights_sha256 recorded in "
                            f"{folder / BUNDLE_JSON} (replaced or half-written bundle)")
        try:
            state = load_file(weights_file)
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{weights_file}: unreadable or corrupt weights ({exc})") from None
        model = create_model(manifest["architecture"], num_classes=manifest["num_classes"], pretrained=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(f"{weights_file}: weights do not fit architecture "
                            f"{manifest['architecture']!r} with {manifest['num_classes']} classes ({exc})") from None
        return cls(model, manifest["preprocessing"], manifest["labels"], manifest["labels_ko"], device,
                   source=folder, manifest=manifest)

    def summary(self) -> dict:
        """The bundle this predictor serves: path, model, validation macro F1, metrics, data record."""
        return _summary(self.source, self.manifest)

    def _tensor(self, image: ImageLike, position: int) -> torch.Tensor:
        """The model input of ``images[position]``, decoded as in training (:func:`~fer_utils.data.index.to_rgb`).

        Raises :class:`DataError` naming the file (or the position of an in-memory image) when it
        cannot be used; warns when it is tiny.
        """
        if isinstance(image, (str, os.PathLike)):
            name = os.fspath(image)
            rgb = open_image(name, draft_size=self.preprocessing.image_size)  # as make_datasets does
        else:
            name = f"image {position} (in memory)"
            rgb = to_rgb(image, name)
        warn_if_tiny(rgb, name)
        return self.transform(rgb)

    def _rows(self, images: list[ImageLike], batch_size: int, report: bool) -> list[np.ndarray | DataError]:
        """Per image, its probabilities, or (when ``report``; else it is raised) the DataError of an
        image that cannot be used. Non-finite outputs are the bundle's fault: always raised."""
        rows: list[np.ndarray | DataError] = []
        for start in range(0, len(images), batch_size):
            decoded: list[torch.Tensor | DataError] = []
            for position in range(start, min(start + batch_size, len(images))):
                try:
                    decoded.append(self._tensor(images[position], position))
                except DataError as exc:
                    if not report:
                        raise
                    decoded.append(exc)
            tensors = [t for t in decoded if isinstance(t, torch.Tensor)]
            found = iter(self._probabilities(torch.stack(tensors)) if tensors else ())
            rows.extend(next(found) if isinstance(t, torch.Tensor) else t for t in decoded)
        return rows

    def _probabilities(self, batch: torch.Tensor) -> np.ndarray:
        logits, _ = batched_forward(self.model, [batch], self.device)
        proba = logits.softmax(1).numpy()
        if not np.isfinite(proba).all():
            raise DataError(f"{self.source or 'this model (not loaded from a bundle)'}: the model gives "
                            "non-finite probabilities (NaN or infinity): its weights are corrupt or diverged "
                            "in training; retrain it or use another bundle")
        return proba

    def predict(self, images: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Probabilities ``[N, num_classes]`` (float32, finite, rows sum to 1) of PIL images, paths or
        uint8 arrays. The first image that cannot be used raises :class:`DataError` naming it."""
        rows = self._rows(list(images), batch_size, report=False)
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_labeled(self, images: Sequence[ImageLike], batch_size: int = 32,
                        on_error: str = "raise") -> list[dict]:
        """Per image: ``{"label", "label_ko", "probabilities": {class name: float}}``.

        ``on_error="report"``: an image that cannot be used (missing, corrupt, refused mode) gets
        ``{"error": message naming it}`` in its place and the others are still answered;
        ``"raise"`` (default): the first such image raises :class:`DataError`.
        """
        if on_error not in ("raise", "report"):
            raise ConfigError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        results = []
        for row in self._rows(list(images), batch_size, report=on_error == "report"):
            if isinstance(row, DataError):
                results.append({"error": str(row)})
                continue
            best = int(row.argmax())
            results.append({"label": self.labels[best], "label_ko": self.labels_ko[best],
                            "probabilities": {name: float(p) for name, p in zip(self.labels, row)}})
        return results


def bundle_summary(folder: str | os.PathLike) -> dict:
    """What a front end shows of a bundle without loading its weights: ``{"path", "model",
    "val_macro_f1", "metrics", "data"}``. Raises like :meth:`Predictor.from_bundle` when the
    manifest is unusable."""
    folder = Path(folder)
    return _summary(folder, _read_manifest(folder / BUNDLE_JSON))


def _summary(folder: Path | None, manifest: Mapping) -> dict:
    metrics = manifest.get("metrics") or {}
    return {"path": str(folder) if folder else None, "model": manifest.get("architecture"),
            "val_macro_f1": metrics.get("val_macro_f1"), "metrics": metrics, "data": manifest.get("data")}


def list_bundles(root: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """``(servable, skipped)`` bundles under ``root`` (searched recursively).

    Servable: a valid manifest, a weights file, a validation macro F1 and a data record (the
    weights' checksum is verified when the bundle is loaded). ``skipped`` says, per other bundle
    folder, why it cannot be chosen automatically (it can still be named explicitly).
    """
    root = Path(root)
    servable, skipped = [], []
    for manifest in sorted(root.rglob(BUNDLE_JSON)) if root.is_dir() else []:
        folder = manifest.parent
        try:
            summary = bundle_summary(folder)
        except (DataError, WeightsNotFoundError) as exc:
            skipped.append(f"{folder}: {exc}")
            continue
        if not (folder / WEIGHTS_FILE).is_file():
            skipped.append(f"{folder}: no {WEIGHTS_FILE}")
        elif not isinstance(summary["val_macro_f1"], (int, float)) or not isinstance(summary["data"], dict):
            skipped.append(f"{folder}: no validation macro F1 or data record (made by an older fer_utils?)")
        else:
            servable.append(summary)
    return servable, skipped


def choose_bundle(root: str | os.PathLike, data_fingerprint: str) -> dict:
    """The summary (see :func:`bundle_summary`) of the bundle to serve by default: the best
    validation macro F1 among the servable bundles under ``root`` trained on the data set with
    ``data_fingerprint`` (ties: the first path in sorted order). Test scores never enter the
    choice. Raises :class:`WeightsNotFoundError` saying what was found when none qualifies."""
    servable, skipped = list_bundles(root)
    matching = [b for b in servable if b["data"].get("fingerprint") == data_fingerprint]
    if not matching:
        others = sorted({f"{b['data'].get('name')} ({b['data'].get('fingerprint')})" for b in servable})
        detail = (f"; bundles found for other data: {', '.join(others)}" if others else "") + \
                 (f"; {len(skipped)} unusable bundle folder(s), e.g. {skipped[0]}" if skipped else "")
        raise WeightsNotFoundError(f"no model bundle trained on the data set with fingerprint {data_fingerprint} "
                                   f"under {root}{detail}. Train one (`fer study run`) or name one with --bundle")
    return max(matching, key=lambda b: b["val_macro_f1"])

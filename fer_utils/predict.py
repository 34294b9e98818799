"""Model bundles and the one inference path used by the CLI, the Flask site and the dashboard.

A bundle is a folder::

    model.safetensors   the Classifier's state dict
    bundle.json         format_version, architecture, num_classes, labels (English and Korean, in
                        class order), preprocessing, metrics, provenance, weights_sha256

``save_bundle`` writes one; ``Predictor.from_bundle`` loads it and turns images into class
probabilities with exactly the preprocessing the model was trained with. A bundle that cannot be
used (missing file, unknown architecture, weights of the wrong shape) raises an error naming the
file and what is wrong.
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

from fer_utils.data import build_transform, file_sha256, open_image
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.models.registry import Preprocessing, create_model, list_models
from fer_utils.models.runtime import batched_forward, resolve_device

BUNDLE_FORMAT = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"

ImageLike = Image.Image | str | os.PathLike | np.ndarray


def save_bundle(path: str | os.PathLike, model: nn.Module, arch: str, preprocessing: Preprocessing,
                metrics: Mapping | None = None, provenance: Mapping | None = None) -> Path:
    """Write ``model`` (a registry Classifier of architecture ``arch``) as a bundle folder ``path``.

    ``metrics`` and ``provenance`` must be JSON-serialisable. ``bundle.json`` is written last and
    records the weights file's sha256, so a loader can tell a complete bundle. Returns the folder.
    """
    if arch not in list_models() or getattr(model, "arch", arch) != arch:
        raise ConfigError(f"architecture {arch!r} is not registered or not the model's "
                          f"({getattr(model, 'arch', None)!r}); registered: {', '.join(list_models())}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes != NUM_CLASSES:
        raise ConfigError(f"a bundle holds a {NUM_CLASSES}-class registry model, got num_classes={num_classes}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # Write both files under temporary names first, then move them into place, bundle.json last:
    # an error (e.g. metrics that are not JSON) leaves an existing bundle in the folder untouched.
    tmp_weights, tmp_manifest = folder / f"{WEIGHTS_FILE}.tmp", folder / f"{BUNDLE_JSON}.tmp"
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_weights, metadata={"format": "fer_utils bundle", "architecture": arch})
    manifest = {
        "format_version": BUNDLE_FORMAT,
        "architecture": arch,
        "num_classes": num_classes,
        "labels": list(EMOTIONS),
        "labels_ko": list(EMOTIONS_KO),
        "preprocessing": preprocessing.to_dict(),
        "metrics": dict(metrics or {}),
        "provenance": dict(provenance or {}),
        "weights_sha256": file_sha256(tmp_weights),
    }
    try:
        text = json.dumps(manifest, indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        tmp_weights.unlink()
        raise ConfigError(f"bundle metrics/provenance must be JSON-serialisable: {exc}") from None
    tmp_manifest.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp_weights, folder / WEIGHTS_FILE)
    os.replace(tmp_manifest, folder / BUNDLE_JSON)
    return folder


def _read_manifest(file: Path) -> dict:
    if not file.is_file():
        raise WeightsNotFoundError(f"{file}: bundle manifest missing (not a model bundle folder?)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{file}: expected a JSON object")
    if manifest.get("format_version") != BUNDLE_FORMAT:
        raise DataError(f"{file}: format_version {manifest.get('format_version')!r} is not supported "
                        f"(this fer_utils reads {BUNDLE_FORMAT})")
    missing = [k for k in ("architecture", "num_classes", "labels", "labels_ko", "preprocessing") if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}")
    if manifest["architecture"] not in list_models():
        raise DataError(f"{file}: unknown architecture {manifest['architecture']!r}; "
                        f"registered: {', '.join(list_models())}")
    n = manifest["num_classes"]
    if not (isinstance(n, int) and len(manifest["labels"]) == n and len(manifest["labels_ko"]) == n):
        raise DataError(f"{file}: num_classes {n!r} does not match the {len(manifest['labels'])} labels")
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
        self.transform = build_transform(preprocessing.image_size, preprocessing.mean, preprocessing.std)

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
        expected = manifest.get("weights_sha256")
        if expected is not None and file_sha256(weights_file) != expected:
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

    def _tensor(self, image: ImageLike) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise DataError(f"image array must be uint8 H x W (grey) or H x W x 3, got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            # names the file when missing or corrupt; decoded exactly as in training (make_datasets)
            image = open_image(image, draft_size=self.preprocessing.image_size)
        return self.transform(image.convert("RGB"))

    def predict(self, images: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Probabilities ``[N, num_classes]`` (float32, rows sum to 1) of PIL images, paths or uint8 arrays."""
        images = list(images)
        if not images:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        batches = (torch.stack([self._tensor(im) for im in images[i:i + batch_size]])
                   for i in range(0, len(images), batch_size))
        logits, _ = batched_forward(self.model, batches, self.device)
        return logits.softmax(1).numpy()

    def predict_labeled(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[dict]:
        """Per image: ``{"label", "label_ko", "probabilities": {class name: float}}``."""
        results = []
        for row in self.predict(images, batch_size):
            best = int(row.argmax())
            results.append({"label": self.labels[best], "label_ko": self.labels_ko[best],
                            "probabilities": {name: float(p) for name, p in zip(self.labels, row)}})
        return results


def find_latest_bundle(root: str | os.PathLike = "data") -> Path:
    """The folder of the most recently written ``bundle.json`` under ``root`` (searched recursively)."""
    root = Path(root)
    manifests = list(root.rglob(BUNDLE_JSON)) if root.is_dir() else []
    if not manifests:
        raise WeightsNotFoundError(f"no model bundle ({BUNDLE_JSON}) found under {root}: train a model first "
                                   f"or give the bundle folder explicitly")
    return max(manifests, key=lambda p: p.stat().st_mtime).parent

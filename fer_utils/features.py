"""CNN feature extraction, batched, with a content-addressed cache on disk.

``extract_features(model, index, preprocessing, cache_dir="data/cache/features")`` returns one
feature vector per index row. The cache key is a sha256 over everything that determines the
result: each image's content hash (in index order), the model weights' hash, the preprocessing,
the feature layer and the numeric precision. A re-run with nothing changed reads the cache; a
changed image byte, weight or setting computes afresh (into a new file: nothing is overwritten).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torchvision.transforms import v2

from fer_utils.data import FERDataset, build_transform, file_sha256
from fer_utils.data.fingerprint import pixels_sha256
from fer_utils.errors import DataError
from fer_utils.models.registry import Preprocessing, create_model
from fer_utils.models.runtime import amp_dtype, batched_forward, make_loader, resolve_device, weights_sha256

CACHE_FORMAT = 1


def image_hashes(index: pd.DataFrame) -> list[str]:
    """sha256 of each sample's image content (file bytes or in-memory pixels), in index order."""
    hashes = []
    for row in index.itertuples(index=False):
        if isinstance(row.pixels, np.ndarray):
            hashes.append(pixels_sha256(row.pixels))
        elif row.path is not None:
            hashes.append(file_sha256(row.path))
        else:
            raise DataError(f"sample {row.id}: neither an image path nor pixels")
    return hashes


def split_transform(transform: v2.Compose) -> tuple[v2.Compose, v2.Compose]:
    """Split an eval transform at its float conversion: per-image uint8 steps, per-batch float steps.

    ``build_transform`` is ``Resize -> ToImage -> ToDtype(float32, scale) -> Normalize``. Running
    the last two on a whole batch (on the model's device) instead of on each image gives the same
    numbers (they are elementwise) at a fraction of the cost, and moves uint8 batches, a quarter
    of the bytes, to the GPU; on a 2-core CPU it took per-image decoding from ~0.3 ms to ~0.15 ms.
    """
    steps = list(transform.transforms)
    cut = next(i for i, step in enumerate(steps) if isinstance(step, v2.ToDtype))
    return v2.Compose(steps[:cut]), v2.Compose(steps[cut:])


def _feature_fn(model: nn.Module) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The feature layer: ``forward_features`` (registry models) or else the model's output."""
    if hasattr(model, "forward_features"):
        return "forward_features", model.forward_features
    return "output", model


def cache_key(image_hashes: list[str], weights_hash: str, preprocessing: Preprocessing, layer: str,
              precision: str) -> str:
    """sha256 of everything that determines a feature matrix."""
    payload = {"format": CACHE_FORMAT, "images": image_hashes, "weights": weights_hash,
               "preprocessing": preprocessing.to_dict(), "layer": layer, "precision": precision}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str, n: int) -> np.ndarray | None:
    """The cached matrix, or None when the file is absent, unreadable or not for this key."""
    try:
        with safe_open(path, framework="np") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
            features = handle.get_tensor("features")
    except (SafetensorError, OSError):
        return None
    return features if features.shape[0] == n else None


def _write_cache(path: Path, key: str, features: np.ndarray, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": torch.from_numpy(features)}, tmp, metadata={"key": key, "ids": json.dumps(ids)})
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def extract_features(model_or_name: nn.Module | str, index: pd.DataFrame, preprocessing: Preprocessing,
                     batch_size: int = 64, num_workers: int | str = "auto", device: str = "auto",
                     cache_dir: str | os.PathLike | None = None, model_id: str | None = None,
                     amp: bool = False, channels_last: bool = True) -> tuple[list[str], np.ndarray]:
    """``(ids, features [N, D] float32)`` of every row of ``index``, in index order.

    ``model_or_name`` is a module (a registry :class:`~fer_utils.models.Classifier` gives its
    penultimate features; any other module its output) or a registry name, which means that
    architecture with its pretrained ImageNet weights (raises WeightsNotFoundError if absent).
    Images are decoded and transformed by a DataLoader over :class:`~fer_utils.data.FERDataset`
    (``num_workers="auto"``: see :func:`fer_utils.models.runtime.default_num_workers`).
    ``channels_last`` (NHWC layout; the model is converted in place) was 1.2-1.45x faster for all
    three registry CNNs on a 2-core CPU and suits GPUs. ``amp`` (autocast: bfloat16, or float16
    on GPUs without bfloat16) roughly doubled CPU throughput again on a CPU with AVX512-BF16, but
    bfloat16 features differ from float32 ones in the third significant digit, so it is off by
    default and part of the cache key. ``cache_dir=None`` disables the cache; otherwise the result
    is stored in ``cache_dir/<model_id>-<key prefix>.safetensors``, ``model_id`` defaulting to
    the architecture (or class) name.
    """
    if isinstance(model_or_name, str):
        model = create_model(model_or_name, pretrained=True)
        model_id = model_id or model_or_name
    else:
        model = model_or_name
        model_id = model_id or getattr(model, "arch", type(model).__name__)
    ids = index["id"].astype(str).tolist()
    device = resolve_device(device)
    layer, forward = _feature_fn(model)

    path = key = None
    if cache_dir is not None:
        precision = str(amp_dtype(device)) if amp else "float32"
        key = cache_key(image_hashes(index), weights_sha256(model), preprocessing, layer, precision)
        safe_id = re.sub(r"[^\w.-]", "_", model_id)
        path = Path(cache_dir) / f"{safe_id}-{key[:16]}.safetensors"
        cached = _read_cache(path, key, len(ids))
        if cached is not None:
            return ids, cached

    per_image, per_batch = split_transform(
        build_transform(preprocessing.image_size, preprocessing.mean, preprocessing.std))
    dataset = FERDataset(index, per_image, draft_size=preprocessing.image_size)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(dataset, batch_size, device, num_workers)
    features, _ = batched_forward(lambda x: forward(per_batch(x)), loader, device, amp=amp,
                                  channels_last=channels_last)
    features = features.reshape(len(features), -1).numpy()
    if path is not None:
        _write_cache(path, key, features, ids)
    return ids, features

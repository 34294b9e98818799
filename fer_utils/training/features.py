"""CNN feature extraction, batched, with a per-image content-addressed cache on disk.

``extract_features(model, index, preprocessing, cache_dir=paths.cache)`` returns one feature
vector per index row. Each image's vector is a :class:`~fer_utils.cache.Cache` entry (namespace
``features``) keyed by everything that determines it: the image's content hash, the model
weights' hash, the preprocessing, the feature layer and the numeric precision (and
:data:`CACHE_FORMAT`). Only the images without an entry are computed: a re-run with nothing
changed computes nothing, a larger data set reuses the rows it shares with a smaller one, and
shards extracted apart (or on other machines) add up. A changed image byte, weight or setting
misses (a new entry; nothing is overwritten).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_utils.cache import Cache
from fer_utils.data.dataset import FERDataset
from fer_utils.data.tensor_transforms import eval_transform
from fer_utils.data.fingerprint import image_hashes
from fer_utils.models.registry import create_model
from fer_utils.models.runtime import amp_dtype, batched_forward, make_loader, resolve_device, weights_sha256
from fer_utils.options import Preprocessing

CACHE_NAMESPACE = "features"
CACHE_FORMAT = 3
"""Version of the feature entries (1 was a whole-matrix safetensors file per data set; 2 resized
with PIL per image; 3 is the tensor path: decoded at full size, resized on the device)."""


def feature_layer(model: nn.Module) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The feature layer's name and function: ``forward_features`` (registry models) or else the model's output."""
    if hasattr(model, "forward_features"):
        return "forward_features", model.forward_features
    return "output", model


def is_feature_row(row: np.ndarray) -> bool:
    """Whether a cached entry is a usable feature vector (one float32 row)."""
    return row.ndim == 1 and row.dtype == np.float32


def feature_keys(cache: Cache, index: pd.DataFrame, model: nn.Module, preprocessing: Preprocessing,
                 layer: str, precision: str) -> list[str]:
    """The cache key of each row's feature vector, in index order."""
    shared = {"weights": weights_sha256(model), "preprocessing": preprocessing.to_dict(), "layer": layer,
              "precision": precision}
    return [cache.key(image=image_hash, **shared) for image_hash in image_hashes(index)]


def extract_features(model_or_name: nn.Module | str, index: pd.DataFrame, preprocessing: Preprocessing,
                     batch_size: int = 64, num_workers: int | str = "auto", device: str = "auto",
                     cache_dir: str | os.PathLike | None = None, amp: bool = False,
                     channels_last: bool = True) -> tuple[list[str], np.ndarray]:
    """``(ids, features [N, D] float32)`` of every row of ``index``, in index order.

    ``model_or_name`` is a module (a registry :class:`~fer_utils.models.Classifier` gives its
    penultimate features; any other module its output) or a registry name, which means that
    architecture with its pretrained ImageNet weights (raises WeightsNotFoundError if absent).
    Images are decoded once (:func:`~fer_utils.data.decoded_images`, cached under ``cache_dir``),
    batched as uint8 by a DataLoader over :class:`~fer_utils.data.dataset.FERDataset` (``num_workers="auto"``:
    see :func:`fer_utils.models.runtime.default_num_workers`) and resized and normalised on
    ``device`` by the evaluation :class:`~fer_utils.data.tensor_transforms.BatchTransform`, as in training.
    ``channels_last`` (NHWC layout; the model is converted in place) was 1.2-1.45x faster for all
    three registry CNNs on a 2-core CPU and suits GPUs. ``amp`` (autocast: bfloat16, or float16
    on GPUs without bfloat16) roughly doubled CPU throughput again on a CPU with AVX512-BF16, but
    bfloat16 features differ from float32 ones in the third significant digit, so it is off by
    default and part of the cache key.

    ``cache_dir`` is the cache root (e.g. :attr:`fer_utils.paths.ProjectPaths.cache`); each
    image's vector is stored under ``cache_dir/features/`` (see the module docstring) and only
    images without an entry are computed (an image present twice, once). ``cache_dir=None``
    disables the cache. Entries are keyed by content, not by a model name: the same weights give
    the same entries whatever the model is called.
    """
    model = create_model(model_or_name, pretrained=True) if isinstance(model_or_name, str) else model_or_name
    if index.empty:
        raise ValueError("no features to extract: the index is empty")
    ids = index["id"].astype(str).tolist()
    device = resolve_device(device)
    layer, forward = feature_layer(model)
    # Prepared once, before the weights are hashed: a layout change makes new storages, which
    # would otherwise make the next call hash the same weights again (the hash is layout-free).
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def compute(rows: pd.DataFrame) -> np.ndarray:
        """Feature matrix ``[len(rows), D]`` of these rows, computed."""
        # The one tensor path: images decoded once (the decoded-image cache under cache_dir, shared
        # with make_datasets over the same index), uint8 batches moved to the device, resized and
        # normalised there by the evaluation BatchTransform that training validated with.
        dataset = FERDataset(rows, batch_transform=eval_transform(preprocessing), cache_dir=cache_dir,
                             store_size=preprocessing.image_size)
        loader = make_loader(dataset, batch_size, device, num_workers)
        features, _ = batched_forward(forward, loader, device, amp=amp, channels_last=channels_last,
                                      transform=dataset.batch_transform)
        return features.reshape(len(features), -1).numpy()

    cache = Cache(cache_dir, CACHE_NAMESPACE, CACHE_FORMAT)
    if not cache.enabled:
        return ids, compute(index)
    precision = str(amp_dtype(device)) if amp else "float32"
    keys = feature_keys(cache, index, model, preprocessing, layer, precision)
    rows, todo = cache.lookup_arrays(keys, is_feature_row)
    if todo:
        computed = compute(index.iloc[list(todo.values())])
        cache.put_arrays(list(todo), computed)
        fresh = dict(zip(todo, computed))
        rows = [fresh[key] if row is None else row for key, row in zip(keys, rows)]
    return ids, np.stack(rows)

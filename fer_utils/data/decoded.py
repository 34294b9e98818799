"""Decoded-image cache: every image of an index decoded once into one uint8 array ``[N, H, W, 3]``.

Decoding a JPEG with PIL (and resizing it) on every epoch, per sample, on the CPU was the
bottleneck of training and feature extraction on a GPU (extraction ran at 0.24-0.49 of the
forward-only rate on an H100). Here an index is decoded once, by the package's one decoder
(:func:`~fer_utils.data.index.load_rgb`: RGB, EXIF orientation not applied, as training always
decoded), into one array at a common *store size*:

* the images' own size when they all share one (RAF-DB aligned: 100 x 100; FER2013: 48 x 48),
  so nothing is resampled before the tensor path (:mod:`fer_utils.data.tensor_transforms`);
* otherwise ``store_size`` x ``store_size``, each image resized once with PIL's antialiased
  bilinear filter (what ``Resize((size, size))`` on PIL images did); :func:`fer_utils.data.transforms.make_datasets`
  passes the model's input size, so a mixed-size data set gets exactly one PIL resize, as before.

With a cache root the array is a ``.npy`` entry of :class:`~fer_utils.cache.Cache` (namespace
:data:`CACHE_NAMESPACE`), keyed by the ordered content hashes of the images
(:func:`~fer_utils.data.fingerprint.image_hashes`), the stored size and :data:`DECODED_FORMAT`;
it is written atomically (decoded straight into the temporary file, so a data set never has to
fit in memory) and opened with ``np.load(mmap_mode="r")``: a second call decodes nothing, and
DataLoader workers share the pages instead of each holding a copy. Without a cache root the
array is decoded into memory and nothing is written.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_utils.cache import Cache, atomic_write
from fer_utils.data.fingerprint import image_hashes
from fer_utils.data.index import check_index, load_rgb
from fer_utils.errors import ConfigError

CACHE_NAMESPACE = "decoded"
DECODED_FORMAT = 1
"""Version of the decoded-array entries: bump it when decoding or resizing changes."""


def _source_size(path: str | None, pixels) -> tuple[int, int]:
    """``(height, width)`` of a sample without decoding it (a file's header, or the array's shape).

    An unreadable file is decoded by :func:`load_rgb`, which raises the package's DataError naming it."""
    if isinstance(pixels, np.ndarray):
        return int(pixels.shape[0]), int(pixels.shape[1])
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:
        width, height = load_rgb(path, None).size
    return height, width


def store_shape(index: pd.DataFrame, store_size: int | None) -> tuple[int, int]:
    """``(H, W)`` of the decoded array: the images' common size, else ``store_size`` square."""
    sizes = {_source_size(path, pixels) for path, pixels in zip(index["path"], index["pixels"])}
    if len(sizes) == 1:
        return sizes.pop()
    if store_size is None:
        raise ConfigError(f"the images have {len(sizes)} different sizes: a decoded array needs a store_size "
                          "to resize them to")
    return store_size, store_size


def _decode_into(out: np.ndarray, index: pd.DataFrame) -> None:
    """Decode every row of ``index`` into ``out[i]`` (resized with PIL's antialiased bilinear if needed)."""
    height, width = out.shape[1:3]
    for i, (path, pixels) in enumerate(zip(index["path"], index["pixels"])):
        image = load_rgb(path, pixels)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)  # PIL's bilinear is antialiased
        out[i] = np.asarray(image, dtype=np.uint8)


def decoded_key(cache: Cache, hashes: list[str], shape: tuple[int, int]) -> str:
    """The cache key of the decoded array ``[N, *shape, 3]`` of images with these ordered content hashes.

    Keyed by the stored shape, not by the ``store_size`` asked for: a data set whose images share
    one size has one entry whatever model size it is trained at."""
    digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    return cache.key(images=digest, count=len(hashes), shape=list(shape))


def decoded_images(index: pd.DataFrame, cache_dir: str | os.PathLike | None = None,
                   store_size: int | None = None) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` of every row of ``index``, in order (see the module docstring).

    ``cache_dir`` is the cache root (e.g. :attr:`fer_utils.paths.ProjectPaths.cache`): the array
    is read from (or decoded once into) ``cache_dir/decoded/`` and returned as a read-only
    ``np.memmap``; ``None`` decodes into memory. ``store_size`` is the square size mixed-size
    images are resized to (ignored when all images share one size; a ConfigError when needed and
    None). A missing or corrupt image raises :class:`~fer_utils.errors.DataError` naming it.
    """
    check_index(index)
    if store_size is not None and (isinstance(store_size, bool) or not isinstance(store_size, int) or store_size < 1):
        raise ConfigError(f"store_size must be a positive int or None, got {store_size!r}")
    if index.empty:
        return np.zeros((0, 1, 1, 3), np.uint8)
    cache = Cache(cache_dir, CACHE_NAMESPACE, DECODED_FORMAT)
    height, width = store_shape(index, store_size)  # file headers only: nothing is decoded
    if not cache.enabled:
        out = np.empty((len(index), height, width, 3), np.uint8)
        _decode_into(out, index)
        return out
    path = cache.path(decoded_key(cache, image_hashes(index), (height, width)))
    array = _open(path, len(index))
    if array is not None:
        return array

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(index), height, width, 3))
        try:
            _decode_into(out, index)
            out.flush()
        finally:
            del out

    atomic_write(path, write)
    array = _open(path, len(index))
    if array is None:
        raise OSError(f"{path}: the decoded array just written cannot be read back")
    return array


def _open(path: Path, count: int) -> np.ndarray | None:
    """The memory-mapped entry at ``path``, or None when absent or not a ``[count, H, W, 3]`` uint8 array."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # absent or corrupt: a miss, as every cache get
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != count or array.shape[3] != 3:
        return None
    return array


__all__ = ["CACHE_NAMESPACE", "DECODED_FORMAT", "decoded_images", "decoded_key", "store_shape"]

"""The data index every loader returns, the problems scanners report, and image decoding.

Each source module (``rafdb``, ``fer2013``, ``imagefolder``) has a *scanner*: a generator that
walks the data set once and yields an :class:`Entry` per usable sample and a :class:`Problem`
per thing that is wrong. The loaders turn a scan into an index with :func:`index_from_scan`,
which raises :class:`~fer_utils.errors.DataError` on the first error; the checker
(:mod:`fer_utils.data.checks`) runs the same scanners and collects every problem instead. So
there is exactly one parser per format.

The index is a :class:`pandas.DataFrame` with the columns :data:`INDEX_COLUMNS`:

``id``      unique str (RAF-DB: ``train_00001``; FER2013: ``fer2013_00000``; image folders: the
            path relative to the root, POSIX style)
``path``    absolute path of the image file, or ``None`` when the pixels are in memory
``pixels``  ``None``, or a uint8 array (H x W grey or H x W x 3) for FER2013
``label``   int 0..6 indexing :data:`fer_utils.labels.EMOTIONS` (RAF-DB order)
``split``   ``"train"``, ``"val"`` or ``"test"``
``source``  ``"rafdb"``, ``"fer2013"`` or ``"imagefolder"``
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from fer_utils.errors import DataError
from fer_utils.labels import EMOTIONS, NUM_CLASSES

INDEX_COLUMNS: tuple[str, ...] = ("id", "path", "pixels", "label", "split", "source")
SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names in display order."""
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MAX_NAMED_MISSING = 5
"""How many missing image files a loader's error names before it gives only the count."""


@dataclass(frozen=True)
class Entry:
    """One sample found by a scanner; ``where`` says where it was declared (file:line or file)."""

    id: str
    path: str | None
    pixels: np.ndarray | None
    label: int
    split: str
    source: str
    where: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: the file, the line (if any) and what is wrong.

    ``warning=True`` marks something worth telling but harmless for loading (for example an
    image on disk that the label file does not list); loaders ignore warnings.
    """

    file: str
    message: str
    line: int | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


def build_index(entries: Iterable[Entry]) -> pd.DataFrame:
    """The index DataFrame (columns :data:`INDEX_COLUMNS`) of some entries, in their order.

    Ids are unique by construction: each scanner derives them from unique names or row numbers.
    """
    rows = [(e.id, e.path, e.pixels, e.label, e.split, e.source) for e in entries]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index["label"] = index["label"].astype("int64")
    return index


def missing_images(entries: Iterable[Entry]) -> list[Entry]:
    """The entries whose image file does not exist (a cheap stat per file)."""
    return [e for e in entries if e.path is not None and not os.path.isfile(e.path)]


def index_from_scan(scan: Iterable[Entry | Problem]) -> pd.DataFrame:
    """Run a scanner to the end and build its index; raise :class:`DataError` on any error.

    The first error problem is raised as soon as it is seen. After the scan, a folder where an
    image file should be is an error naming it; missing image files are reported together: the
    first :data:`MAX_NAMED_MISSING` are named, with the total count.
    """
    entries = []
    for item in scan:
        if isinstance(item, Problem):
            if not item.warning:
                raise DataError(str(item))
        else:
            entries.append(item)
    missing = missing_images(entries)
    folders = [e for e in missing if os.path.isdir(e.path)]
    if folders:
        raise DataError(f"{folders[0].path}: is a folder, not an image file (listed at {folders[0].where})")
    if missing:
        named = "; ".join(f"{e.path} (listed at {e.where})" for e in missing[:MAX_NAMED_MISSING])
        more = f" and {len(missing) - MAX_NAMED_MISSING} more" if len(missing) > MAX_NAMED_MISSING else ""
        raise DataError(f"{len(missing)} image file(s) missing: {named}{more}")
    return build_index(entries)


def class_counts(labels, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Number of samples per class (length ``num_classes``) of an array-like of int labels.

    A label outside 0..num_classes-1 raises :class:`DataError`.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"label {bad} outside 0..{num_classes - 1}")
    return np.bincount(labels, minlength=num_classes)


def check_index(index: pd.DataFrame) -> None:
    """Raise :class:`DataError` unless ``index`` has the index columns, valid labels and splits."""
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"not a data index: columns {', '.join(missing)} missing (expected {', '.join(INDEX_COLUMNS)})")
    unknown = sorted(set(index["split"]) - set(SPLITS))
    if unknown:
        raise DataError(f"unknown split name(s) {', '.join(map(repr, unknown))} in the index; "
                        f"expected {', '.join(SPLITS)}")
    class_counts(index["label"], len(EMOTIONS))


MIN_IMAGE_SIDE = 16
"""Predicting on an image smaller than this on a side warns (:func:`warn_if_tiny`)."""
NEUTRAL_GREY: tuple[int, int, int] = (128, 128, 128)
"""The background transparent pixels are composited on."""
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def to_rgb(image: Image.Image | np.ndarray, name: str) -> Image.Image:
    """The one conversion of a decoded image to 8-bit RGB: training, prediction and uploads use it.

    ``name`` (a file name, or a description of an in-memory image) is what errors name. Rules:

    * an array must be uint8, H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA);
    * 16-bit integer modes (``I;16``, ``I;16B``, ...) and ``I`` (32-bit integer, whose samples are
      read as 16-bit ones, as Pillow gives 16-bit PNGs/TIFFs) become ``round(v / 257)``; ``I``
      values outside 0..65535 are refused;
    * ``F`` (floating point) in [0, 1] becomes ``round(v * 255)``; any other range, or a NaN or
      infinity, is refused: its scale cannot be known, and a guess (min-max) would change with
      the image's content;
    * transparency (an alpha channel, or a transparent palette entry or colour) is composited
      on :data:`NEUTRAL_GREY` instead of being dropped (which shows the hidden colour, often black);
    * everything else (RGB, L, 1, P, CMYK, YCbCr, ...) is Pillow's ``convert("RGB")`` unchanged,
      so ordinary images (the study's JPEGs) decode exactly as they always have.

    A refused image raises :class:`~fer_utils.errors.DataError` naming ``name`` and the mode.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise DataError(f"{name}: image array must be uint8 H x W (grey), H x W x 3 (RGB) or H x W x 4 "
                            f"(RGBA), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise DataError(f"{name}: not an image (a {type(image).__name__}); expected a PIL image, "
                        "a uint8 array or a file path")
    if image.mode in _WIDE_INTEGER_MODES or image.mode == "F":
        image = _to_8_bit(image, name)
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            background = Image.new("RGBA", image.size, (*NEUTRAL_GREY, 255))
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as exc:
        raise DataError(f"{name}: image mode {image.mode!r} cannot be converted to RGB ({exc})") from None


def _to_8_bit(image: Image.Image, name: str) -> Image.Image:
    """An ``L`` image from a 16/32-bit integer or floating-point one, by the rules of :func:`to_rgb`."""
    values = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise DataError(f"{name}: image mode F with NaN or infinite values: floating-point samples "
                            "must lie in [0, 1] (scaled by 255)")
        if values.min() < 0 or values.max() > 1:
            raise DataError(f"{name}: image mode F with values {values.min():g}..{values.max():g}: "
                            "floating-point samples must lie in [0, 1] (scaled by 255)")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8))
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 0xFFFF:
        raise DataError(f"{name}: image mode {image.mode} with values {low}..{high}: integer samples are "
                        "read as 16-bit and must lie in 0..65535")
    return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8))


def warn_if_tiny(image: Image.Image, name: str) -> None:
    """Warn, naming the image, when it is smaller than :data:`MIN_IMAGE_SIDE` on a side.

    For prediction paths (a person's upload or file): such an image is still predicted, but
    the answer says little. Training stays quiet; a data set's sizes are the checker's business.
    """
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        warnings.warn(f"{name}: {width}x{height} pixels is smaller than {MIN_IMAGE_SIDE} on a side; "
                      "the prediction says little", UserWarning, stacklevel=2)


ORIENTATION = 0x0112
"""The EXIF tag saying how a camera's pixels must be turned to stand upright."""


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (a phone photo stored sideways stands up), as
    every viewer shows it and as the web site's uploads are; unchanged when it has no such tag."""
    if image.getexif().get(ORIENTATION, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def load_rgb(path: str | None, pixels: np.ndarray | None, draft_size: int | None = None) -> Image.Image:
    """An RGB image (see :func:`to_rgb`) from in-memory ``pixels`` (fast path) or else from the file ``path``."""
    if isinstance(pixels, np.ndarray):
        return to_rgb(pixels, "in-memory pixels")
    if path is None:
        raise DataError("sample has neither an image path nor pixels")
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft("RGB", (draft_size, draft_size))  # JPEG only: decode at a reduced scale
            image.load()  # decoding errors are the file's; to_rgb's are about its mode
            return to_rgb(upright(image), path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file missing") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if os.path.isdir(path):
            raise DataError(f"{path}: is a folder, not an image file") from None
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise DataError(f"{path}: empty file (0 bytes)") from None
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None


def open_image(row_or_path: Mapping | str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open a sample as an RGB PIL image (decoded by the rules of :func:`to_rgb`).

    ``row_or_path`` is an index row (anything with ``path``/``pixels`` keys, e.g. a
    ``DataFrame.iloc[i]``) or a file path. ``draft_size`` lets a JPEG decoder work at a reduced
    scale that is still at least ``draft_size`` on each side (cheap for large originals).
    A missing, empty (0 bytes), unreadable or corrupt file, or a folder, raises :class:`DataError`
    naming the file.
    """
    if isinstance(row_or_path, (str, os.PathLike)):
        return load_rgb(os.fspath(row_or_path), None, draft_size)
    return load_rgb(row_or_path.get("path"), row_or_path.get("pixels"), draft_size)

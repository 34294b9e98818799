"""The data index every loader returns, the problems scanners report, and image opening.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

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

    The first error problem is raised as soon as it is seen. After the scan, missing image files
    are reported together: the first :data:`MAX_NAMED_MISSING` are named, with the total count.
    """
    entries = []
    for item in scan:
        if isinstance(item, Problem):
            if not item.warning:
                raise DataError(str(item))
        else:
            entries.append(item)
    missing = missing_images(entries)
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


def load_rgb(path: str | None, pixels: np.ndarray | None, draft_size: int | None = None) -> Image.Image:
    """An RGB image from in-memory ``pixels`` (fast path) or else from the file ``path``."""
    if isinstance(pixels, np.ndarray):
        return Image.fromarray(pixels).convert("RGB")
    if path is None:
        raise DataError("sample has neither an image path nor pixels")
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft("RGB", (draft_size, draft_size))  # JPEG only: decode at a reduced scale
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file missing") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None


def open_image(row_or_path: Mapping | str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open a sample as an RGB PIL image.

    ``row_or_path`` is an index row (anything with ``path``/``pixels`` keys, e.g. a
    ``DataFrame.iloc[i]``) or a file path. ``draft_size`` lets a JPEG decoder work at a reduced
    scale that is still at least ``draft_size`` on each side (cheap for large originals).
    A missing, unreadable or corrupt file raises :class:`DataError` naming the file.
    """
    if isinstance(row_or_path, (str, os.PathLike)):
        return load_rgb(os.fspath(row_or_path), None, draft_size)
    return load_rgb(row_or_path.get("path"), row_or_path.get("pixels"), draft_size)

"""Image folders, one folder per class.

Two layouts are accepted:

* ``root/<split>/<class>/*.jpg`` with split folders ``train``, ``val`` (or ``validation``) and
  ``test`` (case-insensitive);
* ``root/<class>/*.jpg``: every image goes to the ``"train"`` split; carve validation/test splits
  with :func:`fer_utils.data.splits.make_splits` (and keep a real test set apart for a study).

A class folder is named by an English class name, a common alias (``happy``, ``sad``,
``angry``, ...) or a Korean name (``행복``, ...), matched by :func:`fer_utils.labels.index_of`;
names are Unicode-normalised (NFC) first, because macOS stores Hangul file names decomposed.
Images are ``.jpg .jpeg .png .bmp .webp`` (any case); other files and nested folders are
ignored with a warning. Ids are paths relative to ``root`` (``train/happy/001.jpg``).
"""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fer_utils.data.index import IMAGE_EXTENSIONS, Entry, Problem, index_from_scan
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, index_of

SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "validation": "val", "test": "test"}
ACCEPTED_CLASS_NAMES = (f"{', '.join(EMOTIONS)} (English), {', '.join(EMOTIONS_KO)} (Korean), "
                        "or a common alias such as happy, sad, angry, surprised, fearful, disgusted")


def class_of_folder(name: str) -> int | None:
    """Class index named by a folder name, or ``None`` if the name is not a class name."""
    try:
        return index_of(unicodedata.normalize("NFC", name))
    except ValueError:
        return None


def split_of_folder(name: str) -> str | None:
    """Split named by a folder name (``train``/``val``/``validation``/``test``), else ``None``."""
    return SPLIT_FOLDERS.get(name.lower())


def _visible(folder: Path) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)


def _scan_class_folders(root: Path, folder: Path, split: str) -> Iterator[Entry | Problem]:
    for entry in _visible(folder):
        if not entry.is_dir():
            yield Problem(entry.path, "file outside a class folder; ignored", warning=True)
            continue
        label = class_of_folder(entry.name)
        if label is None:
            yield Problem(entry.path, f"unknown class folder {entry.name!r}; accepted names: {ACCEPTED_CLASS_NAMES}")
            continue
        for file in _visible(Path(entry.path)):
            if file.is_file() and os.path.splitext(file.name)[1].lower() in IMAGE_EXTENSIONS:
                path = Path(file.path)
                yield Entry(path.relative_to(root).as_posix(), str(path), None, label, split, "imagefolder", file.path)
            else:
                kind = "folder" if file.is_dir() else "file"
                yield Problem(file.path, f"{kind} in a class folder that is not a "
                                         f"{'/'.join(sorted(IMAGE_EXTENSIONS))} image; ignored", warning=True)


def scan_imagefolder(root: str | os.PathLike) -> Iterator[Entry | Problem]:
    """Scan an image-folder tree: one Entry per image, a Problem per unknown class/split folder."""
    root = Path(root).resolve()
    if not root.is_dir():
        yield Problem(str(root), "image folder not found")
        return
    entries = _visible(root)
    found_any = False
    if any(e.is_dir() and split_of_folder(e.name) for e in entries):
        for entry in entries:
            split = split_of_folder(entry.name)
            if not entry.is_dir():
                yield Problem(entry.path, "file outside a split/class folder; ignored", warning=True)
            elif split is None:
                yield Problem(entry.path, f"folder {entry.name!r} beside split folders is not a split; "
                                          f"expected {', '.join(SPLIT_FOLDERS)}")
            else:
                for item in _scan_class_folders(root, Path(entry.path), split):
                    found_any |= isinstance(item, Entry)
                    yield item
    else:
        for item in _scan_class_folders(root, root, "train"):
            found_any |= isinstance(item, Entry)
            yield item
    if not found_any:
        yield Problem(str(root), "no images found; expected <root>/<split>/<class>/*.jpg or <root>/<class>/*.jpg")


def load_imagefolder(root: str | os.PathLike) -> pd.DataFrame:
    """Index of an image-folder data set (see the module docstring for the two layouts)."""
    return index_from_scan(scan_imagefolder(root))

"""One entry point for every format: detect the layout of a path and load (or scan) it."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fer_utils.data.fer2013 import scan_fer2013
from fer_utils.data.imagefolder import class_of_folder, scan_imagefolder, split_of_folder
from fer_utils.data.index import Entry, Problem, index_from_scan
from fer_utils.data.rafdb import scan_rafdb
from fer_utils.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = ("rafdb", "fer2013", "imagefolder")
ACCEPTED_LAYOUTS = """accepted layouts:
  RAF-DB:       <root>/basic/EmoLabel/list_patition_label.txt and <root>/basic/Image/aligned/*_aligned.jpg
                (or Image/original/*.jpg); <root> may also be basic/ itself
  FER2013:      a .csv file with the columns emotion,pixels,Usage (fer2013.csv)
                or emotion, Usage, pixels (icml_face_data.csv)
  image folder: <root>/<split>/<class>/*.jpg (split: train, val, test) or <root>/<class>/*.jpg"""


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path``: a ``.csv`` file is ``"fer2013"``; a folder holding ``basic/`` or
    ``EmoLabel/`` is ``"rafdb"``; a folder with split or class sub-folders is ``"imagefolder"``.

    Anything else raises :class:`DataError` describing the accepted layouts.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "fer2013"
        raise DataError(f"{path}: not a recognised data set (a file that is not .csv)\n{ACCEPTED_LAYOUTS}")
    if (path / "basic").is_dir() or (path / "EmoLabel").is_dir():
        return "rafdb"
    if any(d.is_dir() and (split_of_folder(d.name) or class_of_folder(d.name) is not None) for d in path.iterdir()):
        return "imagefolder"
    raise DataError(f"{path}: not a recognised data set (no label file, CSV, split or class folders)\n{ACCEPTED_LAYOUTS}")


def scan(path: str | os.PathLike, fmt: str = "auto", variant: str = "aligned") -> tuple[str, Iterator[Entry | Problem]]:
    """``(format, scanner)`` for ``path``; ``fmt`` is ``"auto"`` or one of :data:`FORMATS`.

    ``variant`` (``"aligned"``/``"original"``) applies to RAF-DB only.
    """
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "rafdb":
        return fmt, scan_rafdb(path, variant)
    if fmt == "fer2013":
        return fmt, scan_fer2013(path)
    if fmt == "imagefolder":
        return fmt, scan_imagefolder(path)
    raise ConfigError(f"unknown data format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")


def load_dataset(path: str | os.PathLike, fmt: str = "auto", variant: str = "aligned") -> pd.DataFrame:
    """Index of the data set at ``path`` (format detected unless ``fmt`` names one).

    The synthetic data set is written in RAF-DB's layout, so it loads as ``"rafdb"``.
    """
    return index_from_scan(scan(path, fmt, variant)[1])

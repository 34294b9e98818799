"""One entry point for every format: detect the layout of a path, load (or scan) it, describe it."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fer_utils.data.fer2013 import find_csv, scan_fer2013
from fer_utils.data.fingerprint import fingerprint, image_hashes
from fer_utils.data.imagefolder import class_of_folder, scan_imagefolder, split_of_folder
from fer_utils.data.index import Entry, Problem, index_from_scan
from fer_utils.data.rafdb import scan_rafdb
from fer_utils.errors import ConfigError, DataError
from fer_utils.options import DATA_FORMATS as FORMATS

ACCEPTED_LAYOUTS = """accepted layouts:
  RAF-DB:       <root>/basic/EmoLabel/list_patition_label.txt and <root>/basic/Image/aligned/*_aligned.jpg
                (or Image/original/*.jpg); <root> may also be basic/ itself
  FER2013:      a .csv file with the columns emotion,pixels,Usage (fer2013.csv)
                or emotion, Usage, pixels (icml_face_data.csv)
  image folder: <root>/<split>/<class>/*.jpg (split: train, val, test) or <root>/<class>/*.jpg"""


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path``: a ``.csv`` file is ``"fer2013"``; a folder holding ``basic/`` or
    ``EmoLabel/`` is ``"rafdb"``; a folder with split or class sub-folders is ``"imagefolder"``;
    a folder holding one of FER2013's file names (:func:`~fer_utils.data.fer2013.find_csv`) is
    ``"fer2013"``.

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
    csv_file = find_csv(path)   # a folder holding FER2013's CSV stands for it
    if isinstance(csv_file, Path):
        return "fer2013"
    if csv_file:
        raise DataError(f"{path}: {csv_file}")
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


def describe_dataset(path: str | os.PathLike, index: pd.DataFrame, split_index: pd.DataFrame | None = None) -> dict:
    """The data record of a loaded data set, which run records and model bundles keep so that
    the apps can say what a model was trained on and find the bundles of a data set.

    ``{"name", "path", "source", "n_images", "synthetic", "fingerprint"}``, where ``fingerprint``
    is the content fingerprint of ``index`` as loaded (before any split), the same for every
    run on this data set; with ``split_index`` (that index after :func:`make_splits`) also
    ``split_fingerprint``, which tells the exact train/val/test partition. Images are hashed once.
    """
    from fer_utils.data.synthetic import is_synthetic

    hashes = dict(zip(index["id"], image_hashes(index)))
    root = Path(path).resolve()
    record = {"name": root.stem if root.is_file() else root.name, "path": str(root),
              "source": str(index["source"].iloc[0]) if len(index) else None, "n_images": int(len(index)),
              "synthetic": is_synthetic(root), "fingerprint": fingerprint(index, hashes=hashes)}
    if split_index is not None:
        record["split_fingerprint"] = fingerprint(split_index, hashes=hashes)
    return record

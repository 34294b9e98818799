"""FER2013 from its CSV file.

Two header variants are accepted: ``emotion,pixels,Usage`` (``fer2013.csv``) and
``emotion, Usage, pixels`` (``icml_face_data.csv``; header names have leading spaces). Each row
holds a FER2013 label 0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral — a different
order from RAF-DB, mapped with :func:`fer_utils.labels.fer2013_to_index`) and 2,304
space-separated grey values, a 48 x 48 image kept in memory in the index's ``pixels`` column.

Splits: ``Training`` -> ``"train"``, ``PublicTest`` -> ``"val"``, ``PrivateTest`` -> ``"test"``.
FER2013's own "public test" set is the one used for model selection in the literature, so it is
the validation split here and the private test set is read once at the end. Keep it with
``make_splits(index, val_fraction=None)``.

Sample ids are ``fer2013_00000``, ``fer2013_00001``, ... numbered by data row (0-based, the
header not counted), so an id stays the same whichever header variant the file has.
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.data.index import Entry, Problem, index_from_scan
from fer_utils.labels import fer2013_to_index

SIDE = 48
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")


def _parse_pixels(text: str) -> np.ndarray | str:
    """A 48 x 48 uint8 array from the pixel text, or a description of what is wrong with it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy < 2.3 warns on a bad token
        try:
            array = np.fromstring(text, dtype=np.int64, sep=" ")  # fast path, ~3x quicker than split
        except (ValueError, DeprecationWarning):
            array = None
    if array is None or array.size != SIDE * SIDE:
        count = len(text.split())
        if count != SIDE * SIDE:
            return f"{count} pixel values, expected {SIDE * SIDE} ({SIDE}x{SIDE})"
        return "pixel values are not all integers"
    if array.min() < 0 or array.max() > 255:
        return "pixel values outside 0..255"
    return array.astype(np.uint8).reshape(SIDE, SIDE)


def scan_fer2013(csv_path: str | os.PathLike) -> Iterator[Entry | Problem]:
    """Scan a FER2013 CSV: yield one Entry per valid row and one Problem (file:line) per bad row."""
    path = Path(csv_path).resolve()
    where = str(path)
    if not path.is_file():
        yield Problem(where, "FER2013 CSV file not found")
        return
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if sorted(header) != sorted(COLUMNS):
            yield Problem(where, f"header {','.join(header)!r} is not a FER2013 header; expected the columns "
                                 "emotion,pixels,Usage (in any order)", 1)
            return
        column = {name: header.index(name) for name in COLUMNS}
        row_no = -1
        for fields in reader:
            if not fields:
                continue
            row_no += 1
            line = reader.line_num
            if len(fields) != len(COLUMNS):
                yield Problem(where, f"{len(fields)} fields, expected {len(COLUMNS)} ({','.join(header)})", line)
                continue
            raw_label, usage = fields[column["emotion"]].strip(), fields[column["Usage"]].strip()
            try:
                label = fer2013_to_index(int(raw_label))
            except ValueError:
                yield Problem(where, f"emotion {raw_label!r} is not an integer 0..6", line)
                continue
            if usage not in USAGE_TO_SPLIT:
                yield Problem(where, f"Usage {usage!r} is not one of {', '.join(USAGE_TO_SPLIT)}", line)
                continue
            pixels = _parse_pixels(fields[column["pixels"]])
            if isinstance(pixels, str):
                yield Problem(where, pixels, line)
                continue
            yield Entry(f"fer2013_{row_no:05d}", None, pixels, label, USAGE_TO_SPLIT[usage], "fer2013", f"{where}:{line}")


def load_fer2013(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Index of a FER2013 CSV (pixels in memory); a bad row raises DataError naming file:line."""
    return index_from_scan(scan_fer2013(csv_path))

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

Messy files are problems at their line, never tracebacks: a compressed file (gzip, zip, bzip2,
xz) named ``.csv``, a byte that is not UTF-8, a double quote that is not closed on its line, or
a field over the csv module's field limit. That limit (131,072 characters by default) is left
alone: it is process-wide state, and a valid FER2013 field is never longer than
:data:`MAX_FIELD` characters, so a row that reaches it is malformed whatever the limit.

FER2013 fields never hold a quote or a line break, so each physical line is one record, parsed
on its own: a stray quote cannot swallow the following lines into one field (which made rows
vanish and the error show up many lines later). One bad line is one problem at that line and
the rest of the file is still read. A path that is a folder holding one of :data:`CSV_NAMES`
means that file.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.data.index import Entry, Problem, index_from_scan
from fer_utils.labels import NUM_CLASSES, fer2013_to_index

SIDE = 48
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
CSV_NAMES: tuple[str, ...] = ("fer2013.csv", "icml_face_data.csv")
"""The file names FER2013 is distributed under; a folder holding exactly one of them stands for it."""
MAX_FIELD = 4 * SIDE * SIDE - 1
"""The longest valid field, 9,215 characters: 2,304 pixel values of up to three digits and the spaces between."""
_LABELS = {str(n): fer2013_to_index(n) for n in range(NUM_CLASSES)}  # exact: int() takes "+3", full-width "3"
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


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


def _undecodable(fields: list[str]) -> str | None:
    """What is wrong with a row read with ``errors="surrogateescape"`` whose bytes are not all
    UTF-8 (each such byte became a lone surrogate), or None for a row of text."""
    for field in fields:
        if not field.isascii():
            try:
                field.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"not UTF-8 text: byte 0x{ord(field[exc.start]) - 0xDC00:02x} (save the file as UTF-8)"
    return None


def _records(handle: io.TextIOBase) -> Iterator[tuple[int, list[str] | str]]:
    """``(line, fields)`` per non-blank line of ``handle``, or ``(line, what is wrong)`` for a line
    the csv module cannot read (an unclosed or stray double quote, a field over its limit) or
    whose bytes are not UTF-8.

    Each physical line is parsed on its own (FER2013 fields have no quotes or line breaks), so a
    bad line is reported at its own number and never takes the following lines with it.
    """
    for line_no, line in enumerate(handle, start=1):
        try:
            fields = next(csv.reader((line,), strict=True), [])
        except csv.Error as exc:
            if "field limit" in str(exc):
                yield line_no, (f"unreadable CSV row: {exc}; a valid FER2013 field has at most "
                                f"{MAX_FIELD:,} characters")
            elif line.count('"') % 2:
                yield line_no, ("an unclosed double quote (a CSV reader would swallow the following lines "
                                "into this row); FER2013 fields have no quotes")
            else:
                yield line_no, f"a stray double quote ({exc}); FER2013 fields have no quotes"
            continue
        if fields:
            yield line_no, _undecodable(fields) or fields


def find_csv(folder: str | os.PathLike) -> Path | str | None:
    """The FER2013 CSV in ``folder``: the one file named as in :data:`CSV_NAMES` (any case);
    else what to do instead when the folder holds other ``.csv`` files (or both names); else None."""
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() == ".csv" and not p.name.startswith(".") and p.is_file())
    known = [p for p in files if p.name.lower() in CSV_NAMES]
    if len(known) == 1:
        return known[0]
    if not files:
        return None
    which = "both " + " and ".join(CSV_NAMES) if known else f"no {' or '.join(CSV_NAMES)}"
    return f"a folder with {which}; pass the .csv file itself: {', '.join(map(str, known or files))}"


def scan_fer2013(csv_path: str | os.PathLike) -> Iterator[Entry | Problem]:
    """Scan a FER2013 CSV: yield one Entry per valid row and one Problem (file:line) per bad row.

    A file that is compressed, has no header or has no data row is one problem.
    """
    path = Path(csv_path).resolve()
    where = str(path)
    if path.is_dir():
        found = find_csv(path)
        if not isinstance(found, Path):
            yield Problem(where, found or f"FER2013 CSV file not found: a folder without {' or '.join(CSV_NAMES)}")
            return
        path, where = found, str(found)
    if not path.is_file():
        yield Problem(where, "FER2013 CSV file not found")
        return
    try:
        raw = path.open("rb")
    except OSError as exc:
        yield Problem(where, f"cannot read the file ({exc.strerror or exc})")
        return
    with raw:
        head = raw.peek(8)
        compression = next((kind for magic, kind in _COMPRESSION_MAGIC.items() if head.startswith(magic)), None)
        if compression:
            yield Problem(where, f"a {compression}-compressed file, not CSV text; decompress it first", 1)
            return
        records = _records(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=""))
        line, header = next(records, (None, None))
        if header is None:
            yield Problem(where, f"the file is empty: expected the header {','.join(COLUMNS)} and one row per image")
            return
        if isinstance(header, str):
            yield Problem(where, header, line)
            return
        header = [name.strip() for name in header]
        if sorted(header) != sorted(COLUMNS):
            yield Problem(where, f"header {','.join(header)!r} is not a FER2013 header; expected the columns "
                                 "emotion,pixels,Usage (in any order)", line)
            return
        column = {name: header.index(name) for name in COLUMNS}
        row_no = -1
        for line, fields in records:
            row_no += 1
            if isinstance(fields, str):
                yield Problem(where, fields, line)
                continue
            if len(fields) != len(COLUMNS):
                yield Problem(where, f"{len(fields)} fields, expected {len(COLUMNS)} ({','.join(header)})", line)
                continue
            raw_label, usage = fields[column["emotion"]].strip(), fields[column["Usage"]].strip()
            label = _LABELS.get(raw_label)
            if label is None:
                yield Problem(where, f"emotion {raw_label!r} is not an integer 0..{NUM_CLASSES - 1}", line)
                continue
            if usage not in USAGE_TO_SPLIT:
                yield Problem(where, f"Usage {usage!r} is not one of {', '.join(USAGE_TO_SPLIT)}", line)
                continue
            pixels = _parse_pixels(fields[column["pixels"]])
            if isinstance(pixels, str):
                yield Problem(where, pixels, line)
                continue
            yield Entry(f"fer2013_{row_no:05d}", None, pixels, label, USAGE_TO_SPLIT[usage], "fer2013", f"{where}:{line}")
        if row_no < 0:
            yield Problem(where, "no data rows after the header: the data set is empty")


def load_fer2013(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Index of a FER2013 CSV (pixels in memory); a bad row raises DataError naming file:line."""
    return index_from_scan(scan_fer2013(csv_path))

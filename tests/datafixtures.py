"""Builders of tiny data sets on disk for the fer_utils.data tests (imported as ``datafixtures``).

pytest's default "prepend" import mode puts this folder on ``sys.path`` (tests/ has no
``__init__.py``), so test modules import it with ``from datafixtures import ...``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_utils.data import INDEX_COLUMNS
from fer_utils.labels import EMOTIONS

RAFDB_TRAIN_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)
RAFDB_TEST_COUNTS = (329, 74, 160, 1185, 478, 162, 680)
FER2013_HEADERS = {"fer2013": "emotion,pixels,Usage", "icml": "emotion, Usage, pixels"}


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct RGB colour per class 0..6."""
    return (30 * label + 20, 255 - 30 * label, (70 * label) % 256)


def write_image(path: Path, colour=(128, 128, 128), size: int = 8) -> Path:
    """A small solid-colour image; the format follows the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def rafdb_lines(train_per_class: int = 2, test_per_class: int = 1) -> list[tuple[str, int]]:
    """(name, RAF-DB label 1..7) pairs, classes in turn: train_00001.jpg 1, train_00002.jpg 2, ..."""
    lines = []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for i in range(7 * per_class):
            lines.append((f"{split}_{i + 1:05d}.jpg", i % 7 + 1))
    return lines


def make_rafdb(root: Path, lines: list[tuple[str, int]] | None = None, extra_text: str = "") -> Path:
    """A RAF-DB tree under ``root`` (``root/basic/...``) with aligned and original images.

    ``extra_text`` is appended to the label file verbatim (for malformed lines).
    """
    lines = rafdb_lines() if lines is None else lines
    basic = root / "basic"
    label_file = basic / "EmoLabel" / "list_patition_label.txt"
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text("".join(f"{name} {label}\n" for name, label in lines) + extra_text)
    for name, label in lines:
        stem = name.removesuffix(".jpg")
        write_image(basic / "Image" / "aligned" / f"{stem}_aligned.jpg", class_colour(label - 1))
        write_image(basic / "Image" / "original" / name, class_colour(label - 1), size=16)
    return root


def pixel_text(value: int = 0, count: int = 48 * 48) -> str:
    return " ".join(str((value + i) % 256) for i in range(count))


def make_fer2013(path: Path, rows: list[tuple[str, str, str]], header: str = "fer2013") -> Path:
    """A FER2013 CSV of ``(emotion, usage, pixels)`` rows in the column order of ``header``."""
    lines = [FER2013_HEADERS[header]]
    for emotion, usage, pixels in rows:
        lines.append(f"{emotion},{pixels},{usage}" if header == "fer2013" else f"{emotion},{usage},{pixels}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_imagefolder(root: Path, folders: dict[str, int]) -> Path:
    """Images under ``root/<folder>/`` (folder may be ``class`` or ``split/class``), n per folder."""
    for folder, count in folders.items():
        for i in range(count):
            write_image(root / folder / f"{i:03d}.png")
    return root


def rafdb_sized_index() -> pd.DataFrame:
    """An index with RAF-DB's real per-class counts (12,271 train / 3,068 test), no files."""
    rows = []
    for split, counts in (("train", RAFDB_TRAIN_COUNTS), ("test", RAFDB_TEST_COUNTS)):
        for label, count in enumerate(counts):
            rows += [(f"{split}_{label}_{i:05d}", None, None, label, split, "rafdb") for i in range(count)]
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))


def per_class(index: pd.DataFrame, split: str) -> np.ndarray:
    return np.bincount(index.loc[index["split"] == split, "label"], minlength=len(EMOTIONS))

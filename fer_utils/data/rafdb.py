"""RAF-DB (basic): the official label file and image folders.

Layout (``root`` is the folder that contains ``basic/``, or ``basic/`` itself)::

    basic/EmoLabel/list_patition_label.txt     "train_00001.jpg 5" per line (official misspelling)
    basic/Image/aligned/train_00001_aligned.jpg   variant "aligned" (100 x 100)
    basic/Image/original/train_00001.jpg          variant "original"

Labels 1..7 follow :data:`fer_utils.labels.EMOTIONS` (stored as 0..6); the split is the name
prefix (``train_`` / ``test_``). RAF-DB has no validation split: carve one with
:func:`fer_utils.data.splits.make_splits`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fer_utils.data.index import IMAGE_EXTENSIONS, Entry, Problem, index_from_scan
from fer_utils.errors import ConfigError
from fer_utils.labels import NUM_CLASSES, rafdb_to_index

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
VARIANTS: tuple[str, ...] = ("aligned", "original")
SPLIT_PREFIXES: dict[str, str] = {"train_": "train", "test_": "test"}


@dataclass(frozen=True)
class RafdbLayout:
    """Where the label file and the images of one variant are expected."""

    basic: Path
    variant: str

    @property
    def label_file(self) -> Path:
        return self.basic / LABEL_FILE

    @property
    def image_dir(self) -> Path:
        return self.basic / "Image" / self.variant

    def image_path(self, name: str) -> Path:
        """Image file of a label-file name (``train_00001.jpg``) in this variant."""
        if self.variant == "aligned":
            stem, ext = os.path.splitext(name)
            return self.image_dir / f"{stem}_aligned{ext}"
        return self.image_dir / name


def rafdb_layout(root: str | os.PathLike, variant: str = "aligned") -> RafdbLayout:
    """The layout under ``root`` (the folder holding ``basic/``, or ``basic/`` itself)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown RAF-DB variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    root = Path(root).resolve()
    basic = root / "basic" if (root / "basic").is_dir() else root
    return RafdbLayout(basic, variant)


def parse_label_file(label_file: Path) -> Iterator[tuple[int, str, int, str] | Problem]:
    """Parse ``list_patition_label.txt``: yield ``(line_no, name, label 0..6, split)`` or a Problem.

    Blank lines are skipped. A line is a problem when it does not have exactly two fields, the
    label is not an integer 1..7, the name has no ``train_``/``test_`` prefix, or the name was
    already listed.
    """
    where = str(label_file)
    seen: dict[str, int] = {}
    try:
        lines = label_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        yield Problem(where, f"not a UTF-8 text file ({exc})")
        return
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            yield Problem(where, f"malformed line {line.strip()!r}: expected '<image name> <label 1..7>'", line_no)
            continue
        name, raw_label = fields
        try:
            label = rafdb_to_index(int(raw_label))
        except ValueError:
            yield Problem(where, f"label {raw_label!r} of {name} is not an integer 1..{NUM_CLASSES}", line_no)
            continue
        split = next((s for prefix, s in SPLIT_PREFIXES.items() if name.startswith(prefix)), None)
        if split is None:
            yield Problem(where, f"image name {name!r} does not start with train_ or test_", line_no)
            continue
        stem = os.path.splitext(name)[0]  # the sample id
        if stem in seen:
            yield Problem(where, f"image {name} listed twice (first at line {seen[stem]})", line_no)
            continue
        seen[stem] = line_no
        yield line_no, name, label, split


def scan_rafdb(root: str | os.PathLike, variant: str = "aligned") -> Iterator[Entry | Problem]:
    """Scan a RAF-DB tree: layout problems, then one Entry or Problem per label-file line, then a
    warning per image on disk that the label file does not list.

    Image existence is not checked here (see :func:`fer_utils.data.index.missing_images`).
    """
    layout = rafdb_layout(root, variant)
    label_file_ok = layout.label_file.is_file()
    if not label_file_ok:
        yield Problem(str(layout.label_file), f"wrong layout: RAF-DB label file not found under {layout.basic}")
    if not layout.image_dir.is_dir():
        yield Problem(str(layout.image_dir), f"wrong layout: RAF-DB image folder for variant {variant!r} not found")
    if not label_file_ok:
        return
    listed: set[str] = set()
    for item in parse_label_file(layout.label_file):
        if isinstance(item, Problem):
            yield item
            continue
        line_no, name, label, split = item
        path = str(layout.image_path(name))
        listed.add(path)
        yield Entry(os.path.splitext(name)[0], path, None, label, split, "rafdb", f"{layout.label_file}:{line_no}")
    if layout.image_dir.is_dir():
        for file in sorted(os.scandir(layout.image_dir), key=lambda f: f.name):
            if file.is_file() and os.path.splitext(file.name)[1].lower() in IMAGE_EXTENSIONS and file.path not in listed:
                yield Problem(file.path, f"image not listed in {LABEL_FILE.name}; ignored", warning=True)


def load_rafdb(root: str | os.PathLike, variant: str = "aligned") -> pd.DataFrame:
    """Index of RAF-DB (basic) under ``root``; ``variant`` is ``"aligned"`` or ``"original"``.

    Raises :class:`~fer_utils.errors.DataError` naming file and line for a malformed label line,
    naming the expected path for a wrong layout, and naming missing image files.
    """
    return index_from_scan(scan_rafdb(root, variant))

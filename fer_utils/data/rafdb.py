"""RAF-DB (basic): the official label file and image folders.

Layout (``root`` is the folder that contains ``basic/``, or ``basic/`` itself)::

    basic/EmoLabel/list_patition_label.txt     "train_00001.jpg 5" per line (official misspelling)
    basic/Image/aligned/train_00001_aligned.jpg   variant "aligned" (100 x 100)
    basic/Image/original/train_00001.jpg          variant "original"

Labels 1..7 follow :data:`fer_utils.labels.EMOTIONS` (stored as 0..6); the split is the name
prefix (``train_`` / ``test_``), train names have five digits and test names four. RAF-DB has no
validation split: carve one with :func:`fer_utils.data.splits.make_splits`.

Reading and writing share this module: :func:`rafdb_layout` finds a tree to read,
:meth:`RafdbLayout.for_writing`, :func:`image_name` and :func:`label_line` make one (the synthetic
stand-in, :mod:`fer_utils.data.synthetic`, is written through them).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fer_utils.data.index import IMAGE_EXTENSIONS, Entry, Problem, index_from_scan
from fer_utils.errors import ConfigError
from fer_utils.labels import NUM_CLASSES, index_to_rafdb, rafdb_to_index
from fer_utils.options import RAFDB_VARIANTS

BASIC = "basic"
"""The folder that holds RAF-DB (basic)'s label file and images."""
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
"""The label file, relative to ``basic/`` (the official name is misspelled)."""
VARIANTS: tuple[str, ...] = RAFDB_VARIANTS
"""Image variants, each a folder ``basic/Image/<variant>/``."""
SPLITS: tuple[str, ...] = ("train", "test")
"""RAF-DB's splits, in label-file order (train lines first)."""
SPLIT_PREFIXES: dict[str, str] = {f"{split}_": split for split in SPLITS}
"""Name prefix -> split."""
NAME_DIGITS: dict[str, int] = dict(zip(SPLITS, (5, 4)))
"""Digits of the image number in a split's names (``train_00001.jpg``, ``test_0001.jpg``)."""
NAME_EXTENSION = ".jpg"
_ALIGNED_SUFFIX = "_aligned"  # of the aligned variant's file names: train_00001_aligned.jpg
_PREFIX_OF_SPLIT = {split: prefix for prefix, split in SPLIT_PREFIXES.items()}
_NAME = re.compile("(?:" + "|".join(map(re.escape, SPLIT_PREFIXES)) + r")\d+" + re.escape(NAME_EXTENSION))
_LABELS = {str(n): rafdb_to_index(n) for n in range(1, NUM_CLASSES + 1)}  # exact: int() takes "+4", full-width "4"


def _checked_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown RAF-DB variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


@dataclass(frozen=True)
class RafdbLayout:
    """Where the label file and the images of one variant are expected."""

    basic: Path
    variant: str

    @classmethod
    def for_writing(cls, root: str | os.PathLike, variant: str = "aligned") -> RafdbLayout:
        """The layout to write a data set into: always ``root/basic/`` (unlike :func:`rafdb_layout`,
        which also accepts ``basic/`` itself when reading)."""
        return cls(Path(root) / BASIC, _checked_variant(variant))

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
            return self.image_dir / f"{stem}{_ALIGNED_SUFFIX}{ext}"
        return self.image_dir / name

    def label_name(self, file_name: str) -> str | None:
        """The label-file name of an image file of this variant, the inverse of :meth:`image_path`
        (``train_00001_aligned.jpg`` -> ``train_00001.jpg``); None when ``file_name`` is not named
        like a RAF-DB image of this variant."""
        stem, ext = os.path.splitext(file_name)
        if self.variant == "aligned":
            if not stem.endswith(_ALIGNED_SUFFIX):
                return None
            stem = stem[: -len(_ALIGNED_SUFFIX)]
        return stem + ext if _NAME.fullmatch(stem + ext) else None


def rafdb_layout(root: str | os.PathLike, variant: str = "aligned") -> RafdbLayout:
    """The layout under ``root`` (the folder holding ``basic/``, or ``basic/`` itself)."""
    _checked_variant(variant)
    root = Path(root).resolve()
    basic = root / BASIC if (root / BASIC).is_dir() else root
    return RafdbLayout(basic, variant)


def split_of(name: str) -> str | None:
    """The split of a label-file name, from its prefix (``test_0001.jpg`` -> ``"test"``); None
    when the name has no split prefix."""
    return next((split for prefix, split in SPLIT_PREFIXES.items() if name.startswith(prefix)), None)


def image_name(split: str, number: int, total: int = 0) -> str:
    """Label-file name of image ``number`` (from 1) of ``split``: ``train_00001.jpg``, ``test_0001.jpg``.

    The number has the split's :data:`NAME_DIGITS`, widened when ``total`` (the split's image
    count) or ``number`` needs more, so that all names of a split have the same width.
    """
    if split not in _PREFIX_OF_SPLIT:
        raise ValueError(f"unknown RAF-DB split {split!r}; expected one of {', '.join(SPLITS)}")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"image number must be a positive integer, got {number!r}")
    digits = max(NAME_DIGITS[split], len(str(max(number, total))))
    return f"{_PREFIX_OF_SPLIT[split]}{number:0{digits}d}{NAME_EXTENSION}"


def label_line(name: str, label: int) -> str:
    """The label-file line (newline included) of image ``name`` with internal label ``label`` 0..6:
    ``label_line("train_00001.jpg", 4)`` is ``"train_00001.jpg 5\\n"``, read back by
    :func:`parse_label_file`. Raises ValueError for a name without a split prefix or with
    whitespace, or a label outside 0..6."""
    if split_of(name) is None or name.split() != [name]:
        raise ValueError(f"not a RAF-DB image name: {name!r}")
    return f"{name} {index_to_rafdb(label)}\n"


def parse_label_file(label_file: Path,
                     bad_names: set[str] | None = None) -> Iterator[tuple[int, str, int, str] | Problem]:
    """Parse ``list_patition_label.txt``: yield ``(line_no, name, label 0..6, split)`` or a Problem.

    The file is UTF-8, with or without a byte order mark. Blank lines are skipped. A line is a
    problem when its bytes are not UTF-8 (named with the byte and its offset in the line; the
    other lines are still read), it does not have exactly two fields, the label is not one of
    the digits 1..7, the name is not a plain file name (it has a path separator or a
    non-printable character), has no ``train_``/``test_`` prefix, or was already listed. A file
    that lists no image is one problem. ``bad_names``, when given, receives the image name (the
    first field, if it is a plain file name) of each line that was a problem: that image is
    listed, just wrongly.
    """
    where = str(label_file)
    seen: dict[str, int] = {}
    bad_names = set() if bad_names is None else bad_names
    try:
        data = label_file.read_bytes()
    except OSError as exc:
        yield Problem(where, f"cannot read the file ({exc.strerror or exc})")
        return
    data = data.removeprefix(b"\xef\xbb\xbf")
    # Only \n, \r\n and \r end a line, as in an editor (str.splitlines also splits at \f, \x1c, \u2028, ...).
    # Split before decoding (UTF-8 never has these bytes inside a character), so a bad byte costs one line.
    any_text = False
    for line_no, raw in enumerate(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            any_text = True
            first = raw.decode("utf-8", "replace").split()[0:1]
            if first and "\ufffd" not in first[0]:
                bad_names.add(first[0])
            yield Problem(where, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} of the line "
                                 "(save the file as UTF-8)", line_no)
            continue
        fields = line.split()
        if not fields:
            continue
        any_text = True
        name = fields[0]
        plain = "/" not in name and "\\" not in name and name.isprintable()
        if plain:
            bad_names.add(name)  # taken back below when the line turns out good
        if len(fields) != 2:
            yield Problem(where, f"malformed line {line.strip()!r}: expected '<image name> <label 1..7>'", line_no)
            continue
        raw_label = fields[1]
        label = _LABELS.get(raw_label)
        if label is None:
            yield Problem(where, f"label {raw_label!r} of {name} is not an integer 1..{NUM_CLASSES}", line_no)
            continue
        if not plain:
            yield Problem(where, f"image name {name!r} is not a plain file name: it has a path separator "
                                 "or a non-printable character", line_no)
            continue
        split = split_of(name)
        if split is None:
            yield Problem(where, f"image name {name!r} does not start with {' or '.join(SPLIT_PREFIXES)}", line_no)
            continue
        stem = os.path.splitext(name)[0]  # the sample id
        if stem in seen:
            yield Problem(where, f"image {name} listed twice (first at line {seen[stem]})", line_no)
            continue
        seen[stem] = line_no
        bad_names.discard(name)
        yield line_no, name, label, split
    if not any_text:
        yield Problem(where, "the label file lists no images: the data set is empty")


def scan_rafdb(root: str | os.PathLike, variant: str = "aligned") -> Iterator[Entry | Problem]:
    """Scan a RAF-DB tree: layout problems, then one Entry or Problem per label-file line, then a
    warning per image on disk that the label file does not list (an image named on a line that
    is a problem is listed: that line's problem says what is wrong).

    Image existence is not checked here (see :func:`fer_utils.data.index.missing_images`).
    """
    layout = rafdb_layout(root, variant)
    label_file_ok = layout.label_file.is_file()
    if not label_file_ok:
        yield Problem(str(layout.label_file), f"wrong layout: RAF-DB label file not found under {layout.basic}")
    if not layout.image_dir.is_dir():
        present = [repr(v) for v in VARIANTS if v != variant and RafdbLayout(layout.basic, v).image_dir.is_dir()]
        hint = f"; variant {' and '.join(present)} is there" if present else ""
        yield Problem(str(layout.image_dir),
                      f"wrong layout: RAF-DB image folder for variant {variant!r} not found{hint}")
    if not label_file_ok:
        return
    listed: set[str] = set()
    bad_names: set[str] = set()  # of lines that are problems: those images are listed, just wrongly
    for item in parse_label_file(layout.label_file, bad_names):
        if isinstance(item, Problem):
            yield item
            continue
        line_no, name, label, split = item
        path = str(layout.image_path(name))
        listed.add(path)
        yield Entry(os.path.splitext(name)[0], path, None, label, split, "rafdb", f"{layout.label_file}:{line_no}")
    listed.update(str(layout.image_path(name)) for name in bad_names)
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

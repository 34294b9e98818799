"""Writing the synthetic data set: class counts, one job per image, the files, :func:`generate`.

Every path and name comes from :mod:`fer_utils.data.rafdb`, the module the loader reads RAF-DB
with: :meth:`~fer_utils.data.rafdb.RafdbLayout.for_writing` places the label file and the image
folders, :func:`~fer_utils.data.rafdb.image_name` numbers the images of a split and
:func:`~fer_utils.data.rafdb.label_line` writes their labels. Beside ``basic/`` go
``synthetic.json`` (the parameters) and ``SYNTHETIC.md`` (what this is).

Image ``k`` of a split is drawn from its own ``numpy.random.Generator`` seeded with
``(seed, split number, k)`` (number 0 of a split shuffles its classes), so the files are the same
whichever process draws an image and in whatever order.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fer_utils import __version__
from fer_utils.cache import atomic_write
from fer_utils.data import rafdb
from fer_utils.data.synthetic.faces import ALIGNED_SIZE, DEFAULT_ORIGINAL_SIZE, render
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS, index_to_rafdb

GENERATOR_VERSION = 2
"""Bumped whenever the same seed and scale would give different files (drawing or writing)."""
DEFAULT_SEED = 0
DEFAULT_SCALE = 0.08
"""8 % of RAF-DB (1,254 images): what the default study can train four CNNs on within its CPU budget."""
DEFAULT_MIN_PER_CLASS = 20
"""At least this many images of every class in each split: at the default scale, RAF-DB's
proportions would leave 6 fear test images, too few to compare models on (so the default test
set's class proportions differ from RAF-DB's: fear, disgust and anger are raised to 20)."""
JPEG_QUALITY = 90
METADATA_FILE = "synthetic.json"
README_FILE = "SYNTHETIC.md"

RAFDB_TRAIN_COUNTS: dict[str, int] = dict(zip(EMOTIONS, (1290, 281, 717, 4772, 1982, 705, 2524)))
RAFDB_TEST_COUNTS: dict[str, int] = dict(zip(EMOTIONS, (329, 74, 160, 1185, 478, 162, 680)))
_RAFDB_COUNTS = dict(zip(rafdb.SPLITS, (RAFDB_TRAIN_COUNTS, RAFDB_TEST_COUNTS)))
_MAX_CHUNK = 32  # images per task sent to a worker process


# --------------------------------------------------------------------------- class counts

def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def class_counts(scale: float = DEFAULT_SCALE, min_per_class: int = DEFAULT_MIN_PER_CLASS) -> dict[str, dict[str, int]]:
    """Images per split ("train", "test") and class (EMOTIONS order) at ``scale`` of RAF-DB.

    Each count is RAF-DB's count times ``scale`` rounded half up, and at least ``min_per_class``
    so that every class exists in both splits.
    """
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0 or not math.isfinite(scale):
        raise ConfigError(f"scale must be a positive number, got {scale!r}")
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 1:
        raise ConfigError(f"min_per_class must be a positive integer, got {min_per_class!r}")
    return {split: {e: max(min_per_class, _round_half_up(n * scale)) for e, n in counts.items()}
            for split, counts in _RAFDB_COUNTS.items()}


# --------------------------------------------------------------------------- the images

@dataclass(frozen=True)
class _Job:
    """One image: the seed of its random stream, its class and the file of each variant."""

    stream: tuple[int, int, int]  # (seed, split number, image number from 1)
    name: str                     # label-file name, e.g. "train_00001.jpg"
    emotion: int
    original_size: int
    files: dict[str, Path]        # variant -> image file


def _layouts(root: Path) -> dict[str, rafdb.RafdbLayout]:
    """The layout of every RAF-DB image variant under ``root``; they share ``basic/`` and the label file."""
    return {variant: rafdb.RafdbLayout.for_writing(root, variant) for variant in rafdb.VARIANTS}


def _plan(seed: int, counts: dict[str, dict[str, int]], original_size: int,
          layouts: dict[str, rafdb.RafdbLayout]) -> list[_Job]:
    """One job per image: the splits in label-file order, numbered from 1, classes in a seeded
    random order."""
    jobs = []
    for split_id, split in enumerate(rafdb.SPLITS):
        labels = np.repeat(np.arange(len(EMOTIONS)), [counts[split][e] for e in EMOTIONS])
        labels = np.random.default_rng([seed, split_id, 0]).permutation(labels)  # number 0: the shuffle
        for number, label in enumerate(labels, start=1):
            name = rafdb.image_name(split, number, len(labels))
            files = {variant: layout.image_path(name) for variant, layout in layouts.items()}
            jobs.append(_Job((seed, split_id, number), name, int(label), original_size, files))
    return jobs


def _write_image(job: _Job) -> None:
    rng = np.random.default_rng(list(job.stream))
    original, aligned = render(EMOTIONS[job.emotion], rng, None, job.original_size, ALIGNED_SIZE)
    for variant, image in (("original", original), ("aligned", aligned)):
        image.save(job.files[variant], "JPEG", quality=JPEG_QUALITY)


def _write_images(jobs: list[_Job], workers: int, progress: bool) -> None:
    """Every job's images: in this process when ``workers`` is 1, else in a pool of ``workers``
    processes fed chunks of jobs."""
    with tqdm(total=len(jobs), desc="synthetic RAF-DB", unit="img", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _write_image(job)
                bar.update()
            return
        chunk = max(1, min(_MAX_CHUNK, len(jobs) // (4 * workers)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_write_image, jobs, chunksize=chunk):
                bar.update()


# --------------------------------------------------------------------------- the data set

def is_synthetic(root: str | os.PathLike) -> bool:
    """Whether the data set at ``root`` (its folder, or the ``basic/`` folder in it) was written by
    :func:`generate`, i.e. has ``synthetic.json`` beside ``basic/``."""
    root = Path(root)
    return (root / METADATA_FILE).is_file() or (root.name == rafdb.BASIC and (root.parent / METADATA_FILE).is_file())


def made_by_another_version(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a synthetic set that another generator version wrote (its
    ``synthetic.json`` names another ``generator_version``); False for a current set, anything
    that is not a synthetic set, or a ``synthetic.json`` that cannot be read."""
    try:
        meta = json.loads((Path(root) / METADATA_FILE).read_text(encoding="utf-8"))
        return meta["generator_version"] != GENERATOR_VERSION
    except (OSError, ValueError, KeyError, TypeError):
        return False


def raised_classes_note(root: str | os.PathLike) -> str:
    """Markdown naming the classes whose count in a synthetic set was raised to its minimum per
    class, with their share of each split against RAF-DB's, so that a page says how the set's
    proportions differ from RAF-DB's; ``""`` when none was raised or ``root`` is not synthetic."""
    try:
        meta = json.loads((Path(root) / METADATA_FILE).read_text(encoding="utf-8"))
        counts, scale, minimum = meta["counts"], meta["scale"], meta["min_per_class"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    lines = []
    for split, real in _RAFDB_COUNTS.items():
        raised = [e for e, n in real.items() if counts[split][e] == minimum and _round_half_up(n * scale) < minimum]
        if raised:
            total, real_total = sum(counts[split].values()), sum(real.values())
            lines.append(f"- {split}: " + "; ".join(
                f"{e} {counts[split][e]} images ({counts[split][e] / total:.1%}; RAF-DB {real[e] / real_total:.1%})"
                for e in raised))
    if not lines:
        return ""
    return (f"**Class proportions differ from RAF-DB's.** This synthetic set is {scale:g} of RAF-DB's size "
            f"with at least {minimum} images of every class in each of RAF-DB's two splits (train and test), so "
            "that every class has enough test images to compare models on; these classes were raised to that "
            "minimum (the study's validation split is then carved out of train, so it can hold fewer):\n\n"
            + "\n".join(lines) + "\n")


def _prepare(out: Path, layouts: dict[str, rafdb.RafdbLayout]) -> None:
    """Refuse to write into anything but a new or empty folder or an earlier synthetic set, and
    clear that set: its label file first, so that it never looks complete while images change.

    An earlier set is a folder with ``synthetic.json`` in it, not just beside it (as for
    :func:`is_synthetic`): the ``basic/`` folder of a synthetic set is refused like any other.
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is not a folder: choose a new or empty folder for the synthetic data set")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / METADATA_FILE).is_file():
        raise DataError(f"{out} is not empty and has no {METADATA_FILE}: refusing to write synthetic images "
                        f"into what may be a real data set; choose a new or empty folder, or an earlier synthetic set")
    next(iter(layouts.values())).label_file.unlink(missing_ok=True)
    for layout in layouts.values():
        if layout.image_dir.is_dir():
            for file in layout.image_dir.iterdir():
                if layout.label_name(file.name) is not None:
                    file.unlink()


def _metadata(seed: int, scale: float, min_per_class: int, original_size: int,
              counts: dict[str, dict[str, int]]) -> dict:
    return {
        "dataset": "synthetic stand-in for RAF-DB (basic)",
        "synthetic": True,
        "generator": __package__,  # fer_utils.data.synthetic, the public module
        "generator_version": GENERATOR_VERSION,
        "fer_utils_version": __version__,
        "seed": seed,
        "scale": scale,
        "min_per_class": min_per_class,
        "original_size": original_size,
        "aligned_size": ALIGNED_SIZE,
        "jpeg_quality": JPEG_QUALITY,
        "rafdb_labels": {str(index_to_rafdb(i)): e for i, e in enumerate(EMOTIONS)},
        "counts": counts,
        "totals": {split: sum(c.values()) for split, c in counts.items()},
    }


def _readme(meta: dict) -> str:
    rows = "\n".join(f"| {index_to_rafdb(i)} | {e} | {meta['counts']['train'][e]} | {meta['counts']['test'][e]} |"
                     for i, e in enumerate(EMOTIONS))
    relative = _layouts(Path())
    label_file = next(iter(relative.values())).label_file.as_posix()
    aligned, original = (relative[variant].image_path(f"*{rafdb.NAME_EXTENSION}").as_posix()
                         for variant in ("aligned", "original"))
    return f"""# Synthetic stand-in for RAF-DB (basic) -- not real faces

Every image here is a **synthetic** cartoon face drawn procedurally by `{meta['generator']}`
(generator version {meta['generator_version']}, fer_utils {meta['fer_utils_version']}) with
seed {meta['seed']} and scale {meta['scale']} of RAF-DB's class counts. No photograph, no real
person and no RAF-DB image is involved. Expressions follow the EMFACS action-unit prototypes.

It copies RAF-DB's on-disk layout (`{label_file}`,
`{aligned}` at {meta['aligned_size']} x {meta['aligned_size']},
`{original}`) so that the study's pipeline can run without the licensed data.
Accuracies measured on it say nothing about facial-expression recognition on real faces.

Regenerate byte-identically with `fer_utils.data.synthetic.generate(out_dir, seed={meta['seed']},
scale={meta['scale']})`; the parameters are in `{METADATA_FILE}`.

| RAF-DB label | class | train | test |
|---|---|---|---|
{rows}
| | total | {meta['totals']['train']} | {meta['totals']['test']} |
"""


def generate(out_dir: str | os.PathLike, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE,
             original_size: int = DEFAULT_ORIGINAL_SIZE, progress: bool = False, workers: int = 1,
             min_per_class: int = DEFAULT_MIN_PER_CLASS) -> Path:
    """Write a synthetic RAF-DB (basic) under ``out_dir`` and return ``out_dir`` as a Path.

    Class counts are :func:`class_counts` (``scale`` of RAF-DB's, at least ``min_per_class``).
    Originals are ``original_size`` pixels on their long side (square, 4:5 or 3:4, portrait or
    landscape); aligned crops are 100 x 100. ``workers`` processes draw the images (1: this
    process). The files are byte-identical for the same ``seed``, ``scale``, ``original_size``
    and ``min_per_class``, whatever ``workers`` is.

    ``out_dir`` may be new, empty, or an earlier synthetic set (a folder holding
    ``synthetic.json``, whose label file and images are replaced); any other folder with
    something in it raises DataError, so nothing is ever written into a real data set. An
    earlier set's label file is removed before anything else and the new one is written last,
    atomically: a set cut off half-way has no label file, which the loader and the checker
    report, and never pairs old labels with new images. ``synthetic.json`` is written before
    the images, so such a set can be regenerated in place.
    """
    counts = class_counts(scale, min_per_class)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(original_size, bool) or not isinstance(original_size, int) or original_size < 64:
        raise ConfigError(f"original_size must be an integer >= 64, got {original_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    seed = int(seed)
    out = Path(out_dir)
    layouts = _layouts(out)
    _prepare(out, layouts)
    label_file = next(iter(layouts.values())).label_file
    for folder in (label_file.parent, *(layout.image_dir for layout in layouts.values())):
        folder.mkdir(parents=True, exist_ok=True)
    meta = _metadata(seed, scale, min_per_class, original_size, counts)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / README_FILE).write_text(_readme(meta), encoding="utf-8")

    jobs = _plan(seed, counts, original_size, layouts)
    _write_images(jobs, workers, progress)
    atomic_write(label_file, "".join(rafdb.label_line(job.name, job.emotion) for job in jobs))
    return out

"""Check a data set on disk and report every problem at once (the ``fer check`` command).

The checker runs the same scanners as the loaders (one parser per format) but collects every
problem instead of stopping at the first, then opens and fully decodes each image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from fer_utils.data.index import Entry, Problem, build_index, load_rgb, missing_images
from fer_utils.data.loaders import detect_format, scan
from fer_utils.data.splits import split_counts
from fer_utils.errors import DataError


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: one message per problem, images per class x split as
    listed (by the label file, the CSV's valid rows or the class folders: missing and corrupt
    images included, so the table shows what the data set declares), how many image files opened
    and decoded without error (``images_checked``) and how many image files were listed
    (``images_listed``; 0 for FER2013, whose pixels are in the CSV)."""

    errors: list[str]
    warnings: list[str]
    counts: pd.DataFrame
    path: str = ""
    fmt: str = ""
    images_checked: int = 0
    images_listed: int = 0

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors

    def format(self, max_messages: int = 50) -> str:
        """A human-readable report; at most ``max_messages`` errors and warnings are listed each."""
        verdict = "OK" if self.ok else "PROBLEMS FOUND"
        lines = [f"Data set {self.path} (format: {self.fmt or 'unknown'}): {verdict} — "
                 f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        failed = self.images_listed - self.images_checked
        if self.images_checked or self.images_listed:
            lines.append(f"{self.images_checked} image file(s) opened and decoded"
                         + (f", of {self.images_listed} listed: {failed} missing or unreadable (see Errors)"
                            if failed > 0 else ""))
        if self.counts["total"].sum():
            table = self.counts.copy()
            table.loc["total"] = table.sum()
            title = _TABLE_TITLES.get(self.fmt, "Images per class and split")
            if failed > 0:
                title += " (readable or not)"
            lines += ["", f"{title}:", table.to_string()]
        for title, messages in (("Errors", self.errors), ("Warnings", self.warnings)):
            if messages:
                lines += ["", f"{title}:"] + [f"  {m}" for m in messages[:max_messages]]
                if len(messages) > max_messages:
                    lines.append(f"  ... and {len(messages) - max_messages} more")
        return "\n".join(lines)


_TABLE_TITLES = {"rafdb": "Images listed in the label file, per class and split",
                 "fer2013": "Valid CSV rows per class and split",
                 "imagefolder": "Image files in the class folders, per class and split"}


def _check_images(entries: list[Entry], errors: list[str]) -> int:
    """Add an error per missing or undecodable image; return how many images were decoded."""
    def listed(e: Entry) -> str:
        return "" if e.where == e.path else f" (listed at {e.where})"

    missing = missing_images(entries)
    for entry in missing:
        if os.path.isdir(entry.path):
            errors.append(f"{entry.path}: is a folder, not an image file{listed(entry)}")
        elif os.path.isdir(os.path.dirname(entry.path)):  # a missing folder is one layout error already
            errors.append(f"{entry.path}: image file missing{listed(entry)}")
    missing_ids = {e.id for e in missing}
    present = [e for e in entries if e.path is not None and e.id not in missing_ids]
    decoded = 0
    for entry in present:
        try:
            load_rgb(entry.path, None)
        except DataError as exc:
            errors.append(f"{exc}{listed(entry)}")
        else:
            decoded += 1
    return decoded


def check_dataset(path: str | os.PathLike, fmt: str = "auto", variant: str = "aligned") -> CheckReport:
    """Check the data set at ``path``; never raises for problems in the data, reports them all.

    Errors: wrong layout (label file or image folder missing, unrecognised path), an empty data
    set (a label file that lists nothing, a CSV without data rows, no image in the folders),
    unreadable files (compressed, not UTF-8), malformed lines or rows, labels out of range,
    unsafe or duplicate names, missing images, unreadable or corrupt images (each one is opened
    and decoded; ``images_checked`` counts those that decoded). Warnings: images on disk that
    the label file does not list, and files that are ignored. ``variant`` applies to RAF-DB.
    A folder that is no other format but holds ``fer2013.csv`` or ``icml_face_data.csv`` is that
    CSV; one holding other ``.csv`` files is an error saying to pass the file itself.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        fmt = detect_format(path) if fmt == "auto" else fmt
    except DataError as exc:
        return CheckReport([str(exc)], [], split_counts(build_index([])), os.fspath(path), "")
    entries: list[Entry] = []
    for item in scan(path, fmt, variant)[1]:
        if isinstance(item, Problem):
            (warnings if item.warning else errors).append(str(item))
        else:
            entries.append(item)
    checked = _check_images(entries, errors)
    listed = sum(e.path is not None for e in entries)
    return CheckReport(errors, warnings, split_counts(build_index(entries)), os.fspath(path), fmt, checked, listed)

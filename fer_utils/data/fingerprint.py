"""Content fingerprints of a data index and of single files (for provenance and cache keys)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

from fer_utils.data.index import check_index
from fer_utils.errors import DataError

FINGERPRINT_LENGTH = 16


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks; a missing/unreadable file raises DataError."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read file for hashing ({exc.strerror or exc})") from None


def pixels_sha256(pixels: np.ndarray) -> str:
    """Hex SHA-256 of an in-memory image: its shape, dtype and bytes."""
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def fingerprint(index: pd.DataFrame, content: bool = True) -> str:
    """A short (16 hex digits) SHA-256 over the sorted ``(id, label, split, content hash)`` rows.

    With ``content=True`` each row's image bytes (file or in-memory pixels) are hashed, so a
    changed byte, label, split or sample changes the fingerprint; ``content=False`` hashes only
    ids, labels and splits (instant, but blind to edited images).
    """
    check_index(index)
    digest = hashlib.sha256()
    for row in index.sort_values("id").itertuples(index=False):
        if not content:
            image_hash = ""
        elif isinstance(row.pixels, np.ndarray):
            image_hash = pixels_sha256(row.pixels)
        elif row.path is not None:
            image_hash = file_sha256(row.path)
        else:
            raise DataError(f"sample {row.id}: neither an image path nor pixels to fingerprint")
        digest.update(f"{row.id}\t{row.label}\t{row.split}\t{image_hash}\n".encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]

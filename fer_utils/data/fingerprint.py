"""Content fingerprints of a data index and of single files (for provenance and cache keys)."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fer_utils.cache import file_sha256
from fer_utils.data.index import check_index
from fer_utils.errors import DataError

FINGERPRINT_LENGTH = 16


def pixels_sha256(pixels: np.ndarray) -> str:
    """Hex SHA-256 of an in-memory image: its shape, dtype and bytes."""
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def image_hashes(index: pd.DataFrame) -> list[str]:
    """Hex SHA-256 of each sample's image content, in index order: the file's bytes
    (:func:`file_sha256`) or the in-memory pixels (:func:`pixels_sha256`).

    This is the one content hash of an image: fingerprints and cache keys (features, captions,
    embeddings) all use it. A sample with neither a path nor pixels raises DataError naming it.
    """
    hashes = []
    for row in index.itertuples(index=False):
        if isinstance(row.pixels, np.ndarray):
            hashes.append(pixels_sha256(row.pixels))
        elif row.path is not None:
            hashes.append(file_sha256(row.path))
        else:
            raise DataError(f"sample {row.id}: neither an image path nor pixels to hash")
    return hashes


def fingerprint(index: pd.DataFrame, content: bool = True, hashes: Mapping[str, str] | None = None) -> str:
    """A short (16 hex digits) SHA-256 over the sorted ``(id, label, split, content hash)`` rows.

    With ``content=True`` each row's image content is hashed (:func:`image_hashes`), so a changed
    byte, label, split or sample changes the fingerprint; ``content=False`` hashes only ids,
    labels and splits (instant, but blind to edited images).

    ``hashes`` is an optional mapping ``id -> content hash`` computed beforehand, so that a caller
    fingerprinting several indexes over the same images (a whole data set and its split index,
    say) reads each file once::

        hashes = dict(zip(index["id"], image_hashes(index)))
        fingerprint(index, hashes=hashes), fingerprint(index[index["split"] == "test"], hashes=hashes)

    Rows whose id it lacks are hashed here; it is trusted as given, so it must be made from the
    images as they are now. It is ignored when ``content=False``.
    """
    check_index(index)
    rows = index.sort_values("id")
    ids = rows["id"].tolist()
    if not content:
        content_hashes = [""] * len(ids)
    elif hashes is None:
        content_hashes = image_hashes(rows)
    else:
        content_hashes = [hashes.get(sample_id) for sample_id in ids]
        todo = [i for i, h in enumerate(content_hashes) if h is None]
        for i, h in zip(todo, image_hashes(rows.iloc[todo])):
            content_hashes[i] = h
    digest = hashlib.sha256()
    for sample_id, label, split, image_hash in zip(ids, rows["label"], rows["split"], content_hashes):
        digest.update(f"{sample_id}\t{label}\t{split}\t{image_hash}\n".encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]

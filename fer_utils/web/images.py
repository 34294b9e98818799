"""Stored photos of the web site: cleaned images written under a random id.

:func:`store` writes fresh images made from the pixels alone (see :mod:`fer_utils.inference.uploads`), so no
EXIF (GPS included), comment or other metadata of the upload is ever stored, under
``uuid4().hex`` names: two uploads called ``photo.jpg`` never overwrite each other and no
user-given name reaches the file system.
"""
from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

from PIL import Image

from fer_utils.cache import atomic_write
from fer_utils.inference.uploads import FORMATS, CheckedImage, UploadError, display_name, read_upload

__all__ = ["FORMATS", "KINDS", "CheckedImage", "UploadError", "display_name", "read_upload", "file_path", "store",
           "remove", "new_file_id"]

KINDS = ("original", "face", "thumb")
"""Stored files per upload: the cleaned photo, the face crop the model saw, a thumbnail."""
THUMB_SIZE = 160
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")


def new_file_id() -> str:
    return uuid.uuid4().hex


def file_path(folder: Path, file_id: str, ext: str, kind: str) -> Path:
    """Where the ``kind`` file of upload ``file_id`` lives. Refuses ids and kinds that are not
    ours (nothing from a request is ever joined into a path unchecked)."""
    if not _FILE_ID.match(file_id or "") or kind not in KINDS or ext not in FORMATS.values():
        raise ValueError(f"not a stored file: {file_id!r} {kind!r} {ext!r}")
    return folder / (f"{file_id}{ext}" if kind == "original" else f"{file_id}.{kind}.jpg")


def _encode(image: Image.Image, ext: str) -> bytes:
    out = io.BytesIO()
    if ext == ".jpg":
        image.save(out, "JPEG", quality=92)
    elif ext == ".png":
        image.save(out, "PNG", optimize=False)
    else:
        image.save(out, "WEBP", quality=90)
    return out.getvalue()


def store(folder: Path, checked: CheckedImage, face: Image.Image) -> str:
    """Write the cleaned photo, the face crop and a thumbnail under a new random id; returns the id.
    Each file is written atomically; on a failure the files already written are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    file_id = new_file_id()
    thumb = checked.image.copy()
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    written = []
    try:
        for kind, image, ext in (("original", checked.image, checked.ext), ("face", face, ".jpg"),
                                 ("thumb", thumb, ".jpg")):
            path = file_path(folder, file_id, checked.ext, kind)
            written.append(atomic_write(path, _encode(image, ext)))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return file_id


def remove(folder: Path, file_id: str | None, ext: str) -> None:
    """Delete every stored file of upload ``file_id`` (missing ones are fine)."""
    if file_id is None:
        return
    for kind in KINDS:
        file_path(folder, file_id, ext, kind).unlink(missing_ok=True)

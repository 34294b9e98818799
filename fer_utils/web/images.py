"""Uploaded photos: checked from their content, cleaned, stored under a random id.

:func:`read_upload` trusts neither the file name nor the browser's content type: Pillow sniffs
the bytes, only JPEG, PNG and WebP pass, the decoded size is checked *before* any pixel is
decoded (a decompression bomb is a small file that decodes to a huge image), a truncated file is
refused, and the EXIF orientation is applied. :func:`store` writes fresh images made from the
pixels alone, so no EXIF (GPS included), comment or other metadata of the upload is ever stored,
under ``uuid4().hex`` names: two uploads called ``photo.jpg`` never overwrite each other and no
user-given name reaches the file system.
"""
from __future__ import annotations

import hashlib
import io
import re
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..cache import atomic_write

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
"""Accepted formats (as Pillow names them) and the extension each is stored with."""
KINDS = ("original", "face", "thumb")
"""Stored files per upload: the cleaned photo, the face crop the model saw, a thumbnail."""
THUMB_SIZE = 160
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")


def _n(message: str) -> str:
    """Marks a message for the translation catalogue; the site translates it when shown."""
    return message


class UploadError(ValueError):
    """An upload that cannot be used. ``message`` is English with ``%(name)s``-style fields
    (``params``), so the site can translate it; ``str()`` gives the filled-in English text."""

    def __init__(self, message: str, **params):
        self.message = message
        self.params = params
        super().__init__(message % params)


@dataclass(frozen=True)
class CheckedImage:
    image: Image.Image      # RGB, upright (EXIF orientation applied), pixels only
    format: str             # JPEG / PNG / WEBP
    sha256: str             # of the uploaded bytes
    name: str               # the name the client gave (display only; never a path)

    @property
    def ext(self) -> str:
        return FORMATS[self.format]


def read_upload(data: bytes, name: str, max_pixels: int) -> CheckedImage:
    """The checked image of an upload's bytes, or :class:`UploadError` saying what is wrong."""
    name = display_name(name)
    if not data:
        raise UploadError(_n("%(name)s is empty"), name=name)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format
            if fmt not in FORMATS:
                raise UploadError(_n("%(name)s is a %(format)s file; upload a JPEG, PNG or WebP photo"),
                                  name=name, format=fmt or "unknown")
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(_n("%(name)s is %(width)d × %(height)d pixels, more than the %(limit)s allowed"),
                                  name=name, width=width, height=height, limit=f"{max_pixels:,}")
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(_n("%(name)s is not an image; upload a JPEG, PNG or WebP photo"), name=name) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UploadError(_n("%(name)s decodes to an image too large to process"), name=name) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise UploadError(_n("%(name)s is damaged or truncated and cannot be read"), name=name) from None
    return CheckedImage(rgb, fmt, hashlib.sha256(data).hexdigest(), name)


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image of ``image``'s pixels (transparency flattened onto white), with no metadata."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return Image.fromarray(np.asarray(image.convert("RGB")))


def display_name(name: str | None) -> str:
    """The client's file name, reduced to something safe to show: its last path part, printable, ≤ 120 chars."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or "upload"


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

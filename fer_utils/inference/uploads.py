"""Uploaded images, checked from their content: the web site and the dashboard share this step.

:func:`read_upload` trusts neither the file name nor the browser's content type: Pillow sniffs
the bytes, only JPEG, PNG and WebP pass, the decoded size is checked *before* any pixel is
decoded (a decompression bomb is a small file that decodes to a huge image), a truncated file is
refused, and the EXIF orientation is applied. The image it returns is made from the pixels alone
(no EXIF, GPS included). Torch-free.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from fer_utils.data.index import upright

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
"""Accepted formats (as Pillow names them) and the extension each is stored with."""
MAX_IMAGE_PIXELS = 40_000_000
"""Default limit of decoded pixels (a 40-megapixel photo passes; a decompression bomb does not)."""


def _n(message: str) -> str:
    """Marks a message for the web site's translation catalogue; the site translates it when shown."""
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


def read_upload(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> CheckedImage:
    """The checked image of an upload's bytes, or :class:`UploadError` saying what is wrong."""
    name = display_name(name)
    if not data:
        raise UploadError(_n("%(name)s is empty"), name=name)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # a phone's JPEG with a second picture inside (depth map, preview) opens as MPO: its
            # first frame is the photo itself
            fmt = "JPEG" if image.format == "MPO" else image.format
            if fmt not in FORMATS:
                raise UploadError(_n("%(name)s is a %(format)s file; upload a JPEG, PNG or WebP photo"),
                                  name=name, format=fmt or "unknown")
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(_n("%(name)s is %(width)d × %(height)d pixels, more than the %(limit)s allowed"),
                                  name=name, width=width, height=height, limit=f"{max_pixels:,}")
            image.load()
            image = upright(image)
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

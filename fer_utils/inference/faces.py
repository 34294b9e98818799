"""Find the face in a photo and cut it out as the models expect it: the one face step of the CLI,
the web site and the dashboard.

The models are trained on RAF-DB's *aligned* faces: square images that show the whole face with
a little margin. A person's photo (a selfie, a group shot, a portrait with a background) looks
nothing like that, so before predicting, :func:`crop_face` finds the largest face and cuts out a
square around it that looks like an aligned face; an image that already is one is left whole.

Detector: OpenCV's Haar cascade ``haarcascade_frontalface_default.xml``, which the
``opencv-python-headless`` 4.x wheel ships (``cv2.data.haarcascades``), so it works offline with
nothing to download. It finds upright, roughly frontal faces, which is what an expression model
can read anyway; profiles and strongly tilted faces are missed (the whole image is then used and
the answer says so). A stronger detector (e.g. OpenCV's YuNet or a CNN detector) would need
weights that no installed package ships, i.e. a download at run time, so it is not used.

Torch-free on purpose (numpy, Pillow, OpenCV only): a web page can crop and show the face
without loading a model.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from fer_utils.data.index import to_rgb
from fer_utils.errors import ConfigError

DETECTOR = "opencv-haar-frontalface-default"
"""Name of the detector :func:`detect_faces` uses (recorded in each :class:`FaceCrop`)."""
CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 320
"""Images are shrunk to at most this many pixels on the long side before detection: the cascade's
time grows with the pixel count (Grace Hopper's 600 x 512 photo: 31 ms at 640, 16 ms at 320 on a
2-core CPU, the web site's largest cost per request), and a face that fills >= 10 % of the short
side (see :data:`MIN_FACE_FRACTION`) of a 4:3 photo is still >= 24 px there, the cascade's own
window."""
MIN_FACE_FRACTION = 0.10
"""Smallest face searched for, as a fraction of the image's short side: smaller 'faces' are mostly
false detections in textured background, and too small to read an expression from anyway."""
MIN_FACE_PIXELS = 24
"""Smallest face searched for in pixels (the cascade's own 24 x 24 window)."""
SCALE_FACTOR = 1.1
"""Step between the cascade's scales: OpenCV's default; coarser steps miss faces between sizes."""
MIN_NEIGHBORS = 5
"""Overlapping hits needed to report a face: higher than OpenCV's default 3 to keep false
detections (in noise, hair, fabric) out, since a false face crop is worse than no crop."""

NOTICE_NO_FACE = "no face found: the whole image was used"
NOTICE_ALIGNED = "the face already fills the image: the whole image was used"
NOTICE_SEVERAL_FACES = "several faces found: the largest one was used"
"""The notices of :meth:`FaceCrop.notice`: plain English constants, so that the web layer can
translate them by looking them up."""

Box = tuple[int, int, int, int]

_local = threading.local()


@dataclass(frozen=True)
class FaceCrop:
    """What :func:`crop_face` found and the image to predict on.

    ``image``: the RGB image to predict on (the face crop, or the whole image).
    ``box``: ``(x, y, w, h)`` of the largest face in the *original* image's pixels, or ``None``
    when no face was found. ``crop_box``: ``(x0, y0, x1, y1)`` of the region cut out of the
    original (PIL ``crop`` convention, right/bottom exclusive), or ``None`` when the whole image is
    used. ``detector``: the detector's name. ``faces``: how many faces were found.
    """

    image: Image.Image
    box: Box | None
    crop_box: Box | None
    detector: str = DETECTOR
    faces: int = 0

    @property
    def found(self) -> bool:
        """Whether a face was found (even when the whole image is used, as an aligned face)."""
        return self.box is not None

    def notice(self) -> str | None:
        """What a person should be told about the crop (English; one of the ``NOTICE_*``
        constants), or ``None`` when the one face found was simply cut out."""
        if not self.found:
            return NOTICE_NO_FACE
        if self.crop_box is None:
            return NOTICE_ALIGNED
        return NOTICE_SEVERAL_FACES if self.faces > 1 else None

    def to_dict(self) -> dict:
        """JSON-ready ``{"box", "crop_box", "notice"}`` (lists or ``None``), as ``fer predict`` prints it."""
        return {"box": None if self.box is None else list(self.box),
                "crop_box": None if self.crop_box is None else list(self.crop_box),
                "notice": self.notice()}


def _cascade_path() -> str:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder is None:
        raise ConfigError(f"OpenCV {cv2.__version__} has no cv2.data.haarcascades folder, so {CASCADE_FILE} "
                          "cannot be found; install opencv-python-headless 4.x (OpenCV 5 ships no Haar cascades)")
    return os.path.join(folder, CASCADE_FILE)


def _classifier() -> cv2.CascadeClassifier:
    """This thread's cascade: ``CascadeClassifier`` is not documented as thread-safe, and the web
    server calls :func:`detect_faces` from several threads at once. One per thread (loading takes
    some tens of milliseconds, once per thread) instead of a lock, so threads never wait."""
    classifier = getattr(_local, "classifier", None)
    if classifier is None:
        path = _cascade_path()
        try:  # a corrupt file makes OpenCV 4 raise cv2.error (wrapped in a SystemError)
            classifier = cv2.CascadeClassifier(path) if os.path.isfile(path) else None
        except (cv2.error, SystemError):
            classifier = None
        if classifier is None or classifier.empty():
            raise ConfigError(f"{path}: the OpenCV Haar cascade cannot be loaded (missing or unreadable); "
                              f"install opencv-python-headless 4.x (OpenCV {cv2.__version__} is installed, "
                              "OpenCV 5 ships no Haar cascades)")
        _local.classifier = classifier
    return classifier


def detect_faces(image: Image.Image | np.ndarray) -> list[Box]:
    """Boxes ``(x, y, w, h)`` of the faces in ``image`` (PIL image, or uint8 array: grey, RGB or
    RGBA), in its own pixel coordinates, largest first (ties: top-left first, so the order is
    deterministic). Empty when there is none.

    The image is shrunk to at most :data:`DETECTION_MAX_SIDE` pixels on the long side first
    (detection time grows with the pixel count; faces worth reading stay well above the cascade's
    window), and the boxes are mapped back. Faces smaller than :data:`MIN_FACE_FRACTION` of the
    short side (or :data:`MIN_FACE_PIXELS`) are not searched for. Safe to call from several
    threads at once. Raises :class:`ConfigError` when the cascade cannot be loaded, and
    :class:`~fer_utils.errors.DataError` when the input is not an image (decoded by
    :func:`~fer_utils.data.index.to_rgb`, the package's one decoder, as training decodes).
    """
    rgb = to_rgb(image, "image")
    width, height = rgb.size
    scale = min(1.0, DETECTION_MAX_SIDE / max(width, height))
    grey = np.asarray(rgb.convert("L"))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)  # area: no aliasing when shrinking
    smallest = max(MIN_FACE_PIXELS, round(MIN_FACE_FRACTION * min(grey.shape)))
    if min(grey.shape) < smallest:
        return []
    found = _classifier().detectMultiScale(grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                           minSize=(smallest, smallest))
    boxes = []
    for x, y, w, h in (np.asarray(found).reshape(-1, 4) / scale):
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(width, round(x + w)), min(height, round(y + h))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


def _check_number(name: str, value, low: float, low_inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (value == low and not low_inclusive):
        bound = f">= {low}" if low_inclusive else f"> {low}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def crop_face(image: Image.Image | np.ndarray, margin: float = 0.25, aligned_fraction: float = 0.6) -> FaceCrop:
    """The largest face of ``image`` (PIL image or uint8 array) cut out like an aligned face.

    * No face found: the whole image (as RGB), ``box=None``: predicting on it is still better than
      refusing, and :meth:`FaceCrop.notice` says so.
    * The face box spans at least ``aligned_fraction`` of the short side: the image already is a
      face crop (e.g. a RAF-DB aligned image, whose face fills ~70 % of it), so it is used whole
      (``found`` is true, ``crop_box`` is ``None``): cropping it again would cut off the chin and
      forehead the model was trained to see. A value above 1 turns this off.
    * Otherwise the face box is grown by ``margin`` times its size on each side (0.25: about the
      forehead-to-chin framing of the aligned faces the models learnt from; Haar boxes are tight,
      from brows to mouth), made square (the models' input is square, so nothing is stretched),
      moved inside the image where it would stick out (so it stays square and keeps the face) and
      only shrunk to the image's short side when it is larger than that.

    Raises :class:`ConfigError` on a negative or non-finite ``margin``, a non-positive
    ``aligned_fraction`` or a cascade that cannot be loaded; :class:`~fer_utils.errors.DataError`
    on a non-image.
    """
    margin = _check_number("margin", margin, 0.0, low_inclusive=True)
    aligned_fraction = _check_number("aligned_fraction", aligned_fraction, 0.0, low_inclusive=False)
    rgb = to_rgb(image, "image")
    boxes = detect_faces(rgb)
    if not boxes:
        return FaceCrop(rgb, None, None, DETECTOR, 0)
    box = boxes[0]
    x, y, w, h = box
    width, height = rgb.size
    if max(w, h) >= aligned_fraction * min(width, height):
        return FaceCrop(rgb, box, None, DETECTOR, len(boxes))
    side = min(round(max(w, h) * (1 + 2 * margin)), width, height)
    x0 = min(max(0, round(x + w / 2 - side / 2)), width - side)
    y0 = min(max(0, round(y + h / 2 - side / 2)), height - side)
    crop_box = (x0, y0, x0 + side, y0 + side)
    return FaceCrop(rgb.crop(crop_box), box, crop_box, DETECTOR, len(boxes))

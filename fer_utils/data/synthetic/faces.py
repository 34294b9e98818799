"""Drawing one synthetic face: action units, identity, the photo around it and its aligned crop.

Each face is drawn with Pillow from a vector of facial action-unit (AU) intensities. The seven
classes are the EMFACS prototypes (:data:`PROTOTYPES`, see REFERENCE.md "Facial action units"),
scaled by a per-image expression intensity in [:data:`INTENSITY_MIN`, 1], and fear/surprise and
anger/disgust share units as in real data. Identity (face shape, skin tone,
hair, eye colour, glasses, occluders) and capture (background, placement, roll, lighting, colour
cast, blur, noise) vary per image so that the expression is learnable but not trivially.

Everything is drawn from the one ``numpy.random.Generator`` passed in, in an order that does not
depend on the class. :func:`render` gives an image's photo and aligned crop (what
:mod:`fer_utils.data.synthetic.writer` stores); :func:`draw_face` gives the crop alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_utils.errors import ConfigError
from fer_utils.labels import EMOTIONS, index_of

DEFAULT_ORIGINAL_SIZE = 160
"""Long side of a photo, in pixels."""
ALIGNED_SIZE = 100
"""Side of an aligned crop, in pixels (RAF-DB's aligned images are 100 x 100)."""

ACTION_UNITS: tuple[str, ...] = (
    "AU1",   # inner brow raiser
    "AU2",   # outer brow raiser
    "AU4",   # brow lowerer (brows down and together)
    "AU5",   # upper lid raiser
    "AU6",   # cheek raiser (lower lids pushed up, crow's feet)
    "AU7",   # lid tightener
    "AU9",   # nose wrinkler (also lifts the upper lip and lowers the brows a little)
    "AU12",  # lip corner puller (smile)
    "AU15",  # lip corner depressor
    "AU16",  # lower lip depressor
    "AU20",  # lip stretcher
    "AU23",  # lip tightener (lips pressed thin)
    "AU26",  # jaw drop
)
PROTOTYPES: dict[str, dict[str, float]] = {
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.8, "AU26": 1.0},
    "fear": {"AU1": 0.9, "AU2": 0.6, "AU4": 0.7, "AU5": 1.0, "AU7": 0.4, "AU20": 1.0, "AU26": 0.55},
    "disgust": {"AU9": 1.0, "AU15": 0.8, "AU16": 0.7},
    "happiness": {"AU6": 0.9, "AU12": 1.0},
    "sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 1.0},
    "anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 0.9, "AU23": 1.0},
    "neutral": {},
}
"""Full-intensity AU vector of each class (EMFACS prototypes; weights below 1 are the units that
are usually weaker in the prototype)."""
_OPEN_SMILE = (0.5, 0.4)  # probability of a smile with parted lips (teeth) and its AU26
# Difficulty of the expression task, calibrated on validation so that CNNs trained from random
# weights on the CPU within the default profile's budget learn it to RAF-DB-like accuracy
# (ResNet18 about 0.7; see notebooks/study.yaml). Generator version 1 (intensity from 0.3, Beta
# 1.6; masks 2 %, hands 4 %, blur 30 %) left ResNet18 at 0.58 after 10 epochs at 48 px, and
# VGG16 and DenseNet121 at the majority-class baseline.
INTENSITY_MIN, INTENSITY_BETA = 0.8, 2.0  # level = min + (1 - min) * Beta(a, 1)
OCCLUDER_SHARES = (0.01, 0.01)            # faces behind a mask, behind a hand
BLUR_SHARE = 0.1                          # photos out of focus

_SKIN_TONES = np.array([(255, 226, 206), (241, 196, 168), (224, 172, 135), (198, 136, 98),
                        (160, 104, 72), (120, 78, 52), (84, 56, 40)], dtype=float)
_HAIR_COLOURS = ((24, 20, 18), (58, 40, 28), (102, 70, 45), (128, 62, 36), (196, 160, 100),
                 (150, 148, 145), (212, 210, 204))
_HAIR_WEIGHTS = (0.3, 0.25, 0.17, 0.06, 0.1, 0.08, 0.04)
_IRIS_COLOURS = ((58, 34, 20), (98, 60, 30), (118, 98, 52), (70, 108, 70), (72, 110, 160),
                 (112, 120, 130))
_IRIS_WEIGHTS = (0.35, 0.25, 0.1, 0.1, 0.12, 0.08)
_HAIR_STYLES = ("short", "long", "bangs", "curly", "bald")
_HAIR_STYLE_WEIGHTS = (0.35, 0.3, 0.15, 0.1, 0.1)
_BACKGROUNDS = ("solid", "gradient", "blobs", "clutter")


@dataclass(frozen=True)
class _Face:
    """Identity and expression of one face, in face units (face width 1, origin at the centre of
    the head ellipse, y down)."""

    au: dict[str, float]
    aspect: float          # face height / width
    chin: float            # taper of the lower face
    skin: tuple[int, int, int]
    lip: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    hairline: float        # forehead height
    iris: tuple[int, int, int]
    eye_gap: float         # half distance between the eye centres
    eye_size: float
    eye_dy: float
    gaze: float
    brow_dy: float
    brow_thick: float
    nose_dy: float
    mouth_w: float         # half width of the mouth at rest
    mouth_dy: float
    mouth_curve: float     # resting corner height (+ = down)
    lip_thick: float
    yaw: float             # -1..1, shifts the inner features sideways
    glasses: str | None    # "round", "rect", "sun"
    glasses_colour: tuple[int, int, int]
    occluder: str | None   # "hand", "mask"
    occluder_side: float   # -1 / +1
    occluder_colour: tuple[int, int, int]


@dataclass(frozen=True)
class _Scene:
    """The photo around the face: canvas, background, placement and capture."""

    width: int
    height: int
    ss: int                # supersampling factor of the drawing canvas
    background: str
    bg_grid: np.ndarray    # (4, 4, 3) colours: gradient ends, blob field, clutter colours
    bg_shapes: np.ndarray  # (8, 5) clutter rectangles / ellipses, uniform 0..1
    bg_angle: float
    clothes: tuple[int, int, int]
    face_w: float          # face width, in final pixels
    cx: float              # head centre, in final pixels
    cy: float
    roll: float            # degrees, counter-clockwise
    crop_side: float       # aligned crop side / face width
    crop_roll: float       # roll the aligner undid (degrees)
    crop_dx: float         # aligner's error on the centre, in face widths
    crop_dy: float
    light_strength: float
    light_angle: float
    brightness: float
    contrast: float
    cast: tuple[float, float, float]
    grey: bool
    blur: float            # Gaussian blur radius in final pixels (0 = none)
    noise: float           # Gaussian noise sigma in grey levels


# --------------------------------------------------------------------------- sampling

def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float]):
    return options[int(rng.choice(len(options), p=np.asarray(weights) / sum(weights)))]


def _rgb(values) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, round(float(v)))) for v in values)
    return r, g, b


def _sample_aus(emotion: str, rng: np.random.Generator, intensity: float | None) -> dict[str, float]:
    """AU vector of one image: prototype x intensity x per-unit jitter, plus a small idiosyncratic
    activation of every unit. Draws the same number of values whatever the class."""
    drawn = INTENSITY_MIN + (1 - INTENSITY_MIN) * rng.beta(INTENSITY_BETA, 1.0)
    level = drawn if intensity is None else intensity
    jitter = rng.uniform(0.75, 1.15, len(ACTION_UNITS))
    idiosyncratic = np.abs(rng.normal(0.0, 0.05, len(ACTION_UNITS)))
    open_smile = rng.random() < _OPEN_SMILE[0]
    prototype = dict(PROTOTYPES[emotion])
    if emotion == "happiness" and open_smile:
        prototype["AU26"] = _OPEN_SMILE[1]
    return {au: float(min(1.2, prototype.get(au, 0.0) * level * j + idle))
            for au, j, idle in zip(ACTION_UNITS, jitter, idiosyncratic)}


def _sample_face(emotion: str, rng: np.random.Generator, intensity: float | None) -> _Face:
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    lo = min(int(tone), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo]) + rng.normal(0, 5, 3)
    lip = skin * 0.62 + np.array([70.0, 18.0, 24.0]) + rng.normal(0, 6, 3)
    hair = np.array(_pick(rng, _HAIR_COLOURS, _HAIR_WEIGHTS), float) + rng.normal(0, 8, 3)
    hair_style = _pick(rng, _HAIR_STYLES, _HAIR_STYLE_WEIGHTS)
    iris = np.array(_pick(rng, _IRIS_COLOURS, _IRIS_WEIGHTS), float) + rng.normal(0, 8, 3)
    accessory = rng.random()
    glasses = "sun" if accessory < 0.02 else "round" if accessory < 0.1 else "rect" if accessory < 0.2 else None
    occluding = rng.random()
    occluder = ("mask" if occluding < OCCLUDER_SHARES[0] else
                "hand" if occluding < sum(OCCLUDER_SHARES) else None)
    geometry = rng.uniform(size=16)
    glasses_colour = _rgb(rng.uniform(10, 140, 3)) if geometry[14] < 0.7 else (150, 150, 155)  # else metal
    occluder_colour = _rgb(rng.uniform(150, 250, 3))
    au = _sample_aus(emotion, rng, intensity)
    return _Face(
        au=au,
        aspect=1.18 + 0.25 * geometry[0],
        chin=0.05 + 0.3 * geometry[1],
        skin=_rgb(skin),
        lip=_rgb(lip),
        hair=_rgb(hair),
        hair_style=hair_style,
        hairline=0.24 + 0.08 * geometry[2],
        iris=_rgb(iris),
        eye_gap=0.185 + 0.035 * geometry[3],
        eye_size=0.85 + 0.3 * geometry[4],
        eye_dy=-0.02 + 0.04 * geometry[5],
        gaze=-0.5 + geometry[6],
        brow_dy=-0.015 + 0.03 * geometry[7],
        brow_thick=0.022 + 0.022 * geometry[8],
        nose_dy=-0.02 + 0.04 * geometry[9],
        mouth_w=0.135 + 0.045 * geometry[10],
        mouth_dy=-0.02 + 0.04 * geometry[11],
        mouth_curve=-0.012 + 0.024 * geometry[12],
        lip_thick=0.018 + 0.016 * geometry[13],
        yaw=float(np.clip(rng.normal(0, 0.35), -1, 1)),
        glasses=glasses,
        glasses_colour=glasses_colour,
        occluder=occluder,
        occluder_side=-1.0 if geometry[15] < 0.5 else 1.0,
        occluder_colour=occluder_colour,
    )


def _sample_scene(rng: np.random.Generator, original_size: int) -> _Scene:
    short_ratio = (1.0, 0.8, 0.75)[int(rng.integers(3))]
    portrait = rng.random() < 0.6
    long_side, short_side = original_size, round(original_size * short_ratio)
    width, height = (short_side, long_side) if portrait else (long_side, short_side)
    face_w = min(width, height) * rng.uniform(0.3, 0.4)
    crop_side = rng.uniform(1.3, 1.5)
    # keep the aligned crop (rolled by up to 23 degrees, its centre off by up to ~0.18 face widths)
    # inside the photo
    margin = (0.66 * crop_side + 0.18) * face_w
    cx = rng.uniform(margin, max(margin, width - margin))
    cy = rng.uniform(margin, max(margin, height - margin))
    ss = int(np.clip(math.ceil(1.5 * ALIGNED_SIZE / (crop_side * face_w)), 2, 3))
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    roll = rng.uniform(-15, 15)
    blurred, blur_radius = rng.random() < BLUR_SHARE, rng.uniform(0.3, 1.0)
    return _Scene(
        width=width, height=height, ss=ss, background=background,
        bg_grid=rng.uniform(15, 245, (4, 4, 3)), bg_shapes=rng.uniform(size=(8, 5)),
        bg_angle=rng.uniform(0, 2 * math.pi),
        clothes=_rgb(rng.uniform(10, 235, 3)),
        face_w=face_w, cx=cx, cy=cy,
        roll=roll,
        crop_side=crop_side,
        crop_roll=roll + float(np.clip(rng.normal(0, 3), -8, 8)),  # the aligner is not perfect
        crop_dx=rng.normal(0, 0.03), crop_dy=0.04 + rng.normal(0, 0.03),
        light_strength=rng.uniform(0.0, 0.3), light_angle=rng.uniform(0, 2 * math.pi),
        brightness=rng.uniform(0.82, 1.1), contrast=rng.uniform(0.75, 1.1),
        cast=tuple(float(c) for c in rng.uniform(0.92, 1.08, 3)),
        grey=bool(rng.random() < 0.06),
        blur=float(blur_radius) if blurred else 0.0,
        noise=float(rng.uniform(0, 7)),
    )


# --------------------------------------------------------------------------- drawing the face

def _shade(rgb: tuple[int, int, int], factor: float, alpha: float = 255) -> tuple[int, int, int, int]:
    """``rgb`` darkened (factor < 1) or lightened, with an alpha for blending."""
    r, g, b = _rgb([c * factor for c in rgb])
    return r, g, b, min(255, max(0, round(alpha)))


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 that passes through p1 at its middle; (n, 2) points."""
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    ctrl = 2 * p1 - (p0 + p2) / 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * ctrl + t ** 2 * p2


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> np.ndarray:
    angle = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.c_[cx + rx * np.cos(angle), cy + ry * np.sin(angle)]


class _Pen:
    """Draws a head on the photo canvas in face units: face width 1, origin at the head centre, y down.

    Coordinates are rolled with the head and scaled to ``px`` canvas pixels per face width.
    ``feature=True`` coordinates (eyes, brows, nose, mouth) are also shifted sideways by the head's
    yaw, more so with ``depth`` (how far a part stands out of the face); the outline, ears and
    hair are not. Ellipses are drawn as polygons so that they roll too.
    """

    def __init__(self, canvas: Image.Image, face: _Face, px: float, cx: float, cy: float, roll_degrees: float):
        self.px = px
        self._draw = ImageDraw.Draw(canvas, "RGBA")
        self._squeeze = 1 - 0.12 * abs(face.yaw)
        self._shift = 0.07 * face.yaw
        roll = math.radians(roll_degrees)
        # counter-clockwise on screen (y down): (x, y) -> (x cos + y sin, -x sin + y cos)
        self._matrix = px * np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
        self._offset = np.array([cx, cy])

    def points(self, xy, feature: bool = True, depth: float = 0.0) -> list[tuple[float, float]]:
        xy = np.array(xy, float).reshape(-1, 2)
        if feature:
            xy[:, 0] = xy[:, 0] * self._squeeze + self._shift * (1 + depth)
        return [tuple(p) for p in (xy @ self._matrix + self._offset).tolist()]

    def width(self, units: float) -> int:
        return max(1, round(units * self.px))

    def polygon(self, xy, fill, outline=None, width: float = 0.0, feature: bool = True, depth: float = 0.0) -> None:
        self._draw.polygon(self.points(xy, feature, depth), fill=fill, outline=outline,
                           width=self.width(width) if outline else 0)

    def line(self, xy, fill, width: float, feature: bool = True, depth: float = 0.0) -> None:
        self._draw.line(self.points(xy, feature, depth), fill=fill, width=self.width(width), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill, outline=None, width: float = 0.0,
                feature: bool = True, depth: float = 0.0) -> None:
        n = int(np.clip(2 * math.pi * max(rx, ry) * self.px / 3, 12, 72))
        self.polygon(_ellipse(cx, cy, rx, ry, n), fill, outline, width, feature, depth)


@dataclass(frozen=True)
class _Landmarks:
    """Vertical positions (face units) shared by several parts."""

    top: float
    bottom: float
    eye_y: float
    brow_y: float
    nose_y: float
    mouth_y: float


def _landmarks(face: _Face) -> _Landmarks:
    h = face.aspect
    eye_y = -0.04 * h + face.eye_dy
    return _Landmarks(top=-h / 2, bottom=h / 2 + 0.07 * face.au["AU26"], eye_y=eye_y,
                      brow_y=eye_y - 0.115 + face.brow_dy, nose_y=0.15 * h + face.nose_dy,
                      mouth_y=0.265 * h + face.mouth_dy)


def _draw_outline(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    """Long hair behind the head, ears, and the face itself (chin lowered by AU26)."""
    if face.hair_style == "long":
        top, bottom = lm.top - 0.06, lm.bottom + 0.35
        pen.ellipse(0, (top + bottom) / 2, 0.6, (bottom - top) / 2, fill=face.hair, feature=False)
    for side in (-1, 1):
        pen.ellipse(side * 0.5, lm.eye_y + 0.06, 0.055, 0.1, fill=_shade(face.skin, 0.9), feature=False)
    theta = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    sin, cos = np.sin(theta), np.cos(theta)
    lower = sin > 0
    x = 0.5 * cos * (1 - face.chin * np.where(lower, sin ** 2, 0))
    y = np.where(lower, lm.bottom * sin, -lm.top * sin)
    pen.polygon(np.c_[x, y], face.skin, feature=False)


def _draw_eye(pen: _Pen, face: _Face, lm: _Landmarks, side: int) -> float:
    """One eye (sclera, iris clipped by the lids, lid lines, crease); returns its half width."""
    au = face.au
    cx, cy = side * face.eye_gap, lm.eye_y
    ew = 0.085 * face.eye_size
    base_up, base_low = 0.04 * face.eye_size, 0.024 * face.eye_size
    up = base_up * max(0.2, 1 + 0.8 * au["AU5"] - 0.3 * au["AU7"] - 0.3 * au["AU6"] - 0.2 * au["AU9"])
    low = base_low * max(0.15, 1 + 0.25 * au["AU5"] - 0.7 * au["AU7"] - 0.7 * au["AU6"] - 0.35 * au["AU9"])
    t = np.linspace(-1, 1, 17)
    x = cx + ew * t
    upper = cy - up * (1 - t ** 2) * (1 - 0.12 * t * side)
    lower = cy + low * (1 - t ** 2)
    pen.polygon(np.r_[np.c_[x, upper], np.c_[x, lower][::-1]], (242, 238, 232))
    r = 0.034 * face.eye_size
    icx, icy = cx + face.gaze * 0.35 * ew, cy - 0.1 * r
    pen.ellipse(icx, icy, r, r, fill=face.iris)
    pen.ellipse(icx, icy, 0.45 * r, 0.45 * r, fill=(14, 11, 11))
    pen.ellipse(icx - 0.3 * r, icy - 0.35 * r, 0.2 * r, 0.2 * r, fill=(255, 255, 255, 220))
    # the lids clip the iris: repaint skin above the upper and below the lower lid
    top, bottom = min(icy - r, cy - up) - 0.01, max(icy + r, cy + low) + 0.01
    pen.polygon(np.r_[np.c_[x, upper], [(cx + ew, top), (cx - ew, top)]], face.skin)
    pen.polygon(np.r_[np.c_[x, lower], [(cx + ew, bottom), (cx - ew, bottom)]], face.skin)
    lash = _shade(face.hair, 0.35) if sum(face.hair) < 450 else (40, 30, 28, 255)
    pen.line(np.r_[np.c_[x, upper], [(cx + side * ew * 1.12, cy - 0.2 * up)]], lash, 0.011 * face.eye_size)
    pen.line(np.c_[x, lower], _shade(face.skin, 0.6, 150), 0.005)
    if up < base_up + 0.02:
        crease = cy - (base_up + 0.028) * (1 - 0.8 * t ** 2)
        pen.line(np.c_[x, crease][2:-2], _shade(face.skin, 0.72, 130), 0.005)
    return ew


def _draw_brows(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    """Tapered brows from inner to outer end. AU1 lifts the inner end, AU2 the outer one, AU4 pulls
    the inner end down and towards the midline (less so while AU1 lifts it), AU9 lowers them a
    little."""
    au = face.au
    au1, au2, au4, au9 = au["AU1"], au["AU2"], au["AU4"], au["AU9"]
    base = lm.brow_y
    colour = _shade(face.hair, 0.75) if face.hair_style != "bald" else _shade(face.skin, 0.55)
    for side in (-1, 1):
        inner = (side * (face.eye_gap - 0.105 - 0.03 * au4),
                 base - 0.075 * au1 + 0.06 * au4 * (1 - 0.75 * min(1.0, au1)) + 0.035 * au9)
        middle = (side * (face.eye_gap + 0.01),
                  base - 0.035 - 0.04 * au1 - 0.055 * au2 + 0.035 * au4 + 0.02 * au9)
        outer = (side * (face.eye_gap + 0.125), base + 0.01 - 0.065 * au2 + 0.01 * au4 + 0.01 * au9)
        pts = _bezier(inner, middle, outer)
        tangent = np.gradient(pts, axis=0)
        normal = np.c_[-tangent[:, 1], tangent[:, 0]] / np.linalg.norm(tangent, axis=1)[:, None]
        half = (face.brow_thick * (1 - 0.55 * np.linspace(0, 1, len(pts))) / 2)[:, None]
        pen.polygon(np.r_[pts - normal * half, (pts + normal * half)[::-1]], colour)


def _draw_wrinkles(pen: _Pen, face: _Face, lm: _Landmarks, eye_half_width: float) -> None:
    """Forehead lines (AU1/AU2), frown lines (AU4), nose wrinkles (AU9), crow's feet (AU6)."""
    au = face.au

    def crease(level: float) -> tuple[int, int, int, int]:
        return _shade(face.skin, 0.68, 170 * level)

    forehead = float(np.clip(0.65 * (au["AU1"] + au["AU2"]) - 0.2, 0, 1))
    if forehead > 0:
        for k in range(3):
            y = lm.brow_y - 0.095 - 0.045 * k - 0.03 * au["AU2"]
            pen.line(_bezier((-0.17, y + 0.012), (0, y), (0.17, y + 0.012)), crease(forehead), 0.006)
    frown = float(np.clip(1.2 * au["AU4"] - 0.15, 0, 1))
    if frown > 0:
        for side in (-1, 1):
            x = side * 0.025
            pen.line([(x, lm.brow_y - 0.005), (x * 0.8, lm.brow_y + 0.06)], crease(frown), 0.007)
    nose = float(np.clip(1.2 * au["AU9"] - 0.1, 0, 1))
    if nose > 0:
        for k in range(3):
            y = lm.eye_y + 0.005 + 0.028 * k
            pen.line(_bezier((-0.045, y + 0.008), (0, y), (0.045, y + 0.008)), crease(nose), 0.006, depth=0.5)
        for side in (-1, 1):
            pen.line([(side * 0.05, lm.eye_y + 0.02), (side * 0.085, lm.eye_y + 0.075)], crease(nose), 0.006)
    feet = float(np.clip(1.2 * au["AU6"] - 0.2, 0, 1))
    if feet > 0:
        for side in (-1, 1):
            x0 = side * (face.eye_gap + eye_half_width + 0.015)
            for dy in (-0.018, 0.004, 0.026):
                pen.line([(x0, lm.eye_y + dy), (x0 + side * 0.045, lm.eye_y + 1.6 * dy)], crease(feet), 0.005)


def _draw_nose(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    au9 = face.au["AU9"]
    y = lm.nose_y - 0.025 * au9  # AU9 lifts the nostrils
    shadow_side = 1 if face.yaw < 0 else -1
    pen.line([(shadow_side * 0.035, lm.eye_y + 0.03), (shadow_side * 0.045, y - 0.055)],
             _shade(face.skin, 0.75, 70), 0.01, depth=0.4)
    pen.line(_bezier((-0.03, y + 0.012), (0, y + 0.02), (0.03, y + 0.012)), _shade(face.skin, 0.7, 90), 0.006,
             depth=0.8)
    for side in (-1, 1):
        pen.line(_bezier((side * 0.035, y - 0.045), (side * (0.068 + 0.012 * au9), y - 0.012),
                         (side * 0.045, y + 0.012)), _shade(face.skin, 0.68, 170), 0.008, depth=0.6)
        pen.ellipse(side * (0.036 + 0.008 * au9), y, 0.016 + 0.006 * au9, 0.009 + 0.003 * au9,
                    fill=_shade(face.skin, 0.35, 230), depth=0.7)
    pen.ellipse(0, y - 0.02, 0.022, 0.014, fill=(255, 255, 255, 45), depth=0.8)


def _draw_mouth(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    """Lips, opening, teeth, folds. AU12 lifts and widens the corners, AU15 pulls them down, AU20
    stretches the lips sideways, AU23 presses them thin and shut, AU26 drops the jaw, AU16 lowers
    the lower lip, AU9 lifts the upper one."""
    au = face.au
    au6, au9, au12, au15, au16, au20, au23, au26 = (au[k] for k in
                                                    ("AU6", "AU9", "AU12", "AU15", "AU16", "AU20", "AU23", "AU26"))
    half = face.mouth_w * (1 + 0.35 * au20 + 0.2 * au12 - 0.08 * au23 - 0.15 * au26 * (1 - min(1.0, au20))
                           - 0.05 * au15)
    corner = face.mouth_curve - 0.055 * au12 + 0.045 * au15 + 0.012 * au20 + 0.012 * au16
    shut = max(0.0, 1 - au23)
    open_up = (0.028 * au26 + 0.025 * au9 + 0.012 * au12 + 0.01 * au20) * shut
    open_low = (0.17 * au26 + 0.035 * au16 + 0.015 * au20) * shut
    power = 0.9 - 0.4 * min(1.0, max(au20, au16))  # stretched lips open as a rectangle
    t = np.linspace(-1, 1, 25)
    bulge = (1 - t ** 2) ** power
    x = half * t
    mid = lm.mouth_y + corner * t ** 2
    inner_up, inner_low = mid - open_up * bulge, mid + open_low * bulge
    thin = (1 - 0.65 * min(1.0, au23)) * (1 - 0.3 * min(1.0, au20)) * (1 - 0.2 * min(1.0, au12))
    lip = np.sqrt(1 - t ** 2)
    outer_up = inner_up - 0.75 * face.lip_thick * thin * lip * (1 - 0.3 * np.exp(-(t / 0.15) ** 2))
    outer_low = inner_low + face.lip_thick * thin * lip
    # folds first: lines from the nose wings past the mouth corners
    fold = float(np.clip(0.8 * au12 + 0.4 * au6 + 0.8 * au9 + 0.3 * au20, 0, 1))
    for side in (-1, 1):
        start = (side * (0.075 + 0.012 * au9), lm.nose_y - 0.015 - 0.025 * au9)
        through = (side * (half + 0.02), lm.mouth_y - 0.04)
        end = (side * (half + 0.035 + 0.02 * au12), lm.mouth_y + 0.045 - 0.02 * au12)
        pen.line(_bezier(start, through, end), _shade(face.skin, 0.7, 25 + 140 * fold), 0.007)
        droop = float(np.clip(1.2 * au15 - 0.2, 0, 1))
        if droop > 0:
            cy = lm.mouth_y + corner
            pen.line([(side * (half + 0.005), cy + 0.005), (side * (half + 0.02), cy + 0.055)],
                     _shade(face.skin, 0.68, 150 * droop), 0.006)
    pen.polygon(np.r_[np.c_[x, outer_up], np.c_[x, outer_low][::-1]], face.lip)
    dark = (58, 20, 24)
    if open_up + open_low > 0.018:
        pen.polygon(np.r_[np.c_[x, inner_up], np.c_[x, inner_low][::-1]], dark)
        teeth = np.abs(t) < 0.75
        tooth_h = 0.032
        top_edge = np.minimum(inner_up + tooth_h, inner_low)
        pen.polygon(np.r_[np.c_[x, inner_up][teeth], np.c_[x, top_edge][teeth][::-1]], (236, 230, 214))
        lower_teeth = float(np.clip(au20 + au16 - 0.4, 0, 1))
        if lower_teeth > 0:
            bottom_edge = np.maximum(inner_low - 0.03 * lower_teeth, top_edge)
            pen.polygon(np.r_[np.c_[x, bottom_edge][teeth], np.c_[x, inner_low][teeth][::-1]], (226, 220, 204))
    pen.line(np.c_[x, mid], _shade(face.lip, 0.45, 200 + 55 * min(1.0, au23)), 0.007 + 0.005 * min(1.0, au23))


def _draw_cheeks(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    au6 = face.au["AU6"]
    for side in (-1, 1):
        y = lm.mouth_y - 0.13 - 0.05 * au6
        pen.ellipse(side * 0.25, y, 0.1, 0.065, fill=(225, 100, 100, int(15 + 45 * min(1.0, au6))))
        if au6 > 0.2:
            pen.ellipse(side * 0.23, y - 0.03, 0.06, 0.035, fill=(255, 255, 255, int(40 * min(1.0, au6))))


def _draw_hair(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    if face.hair_style == "bald":
        return
    side_y = lm.eye_y + (0.35 if face.hair_style == "long" else 0.02)
    rx, ry = 0.54, -lm.top + 0.06
    psi = np.linspace(math.pi, 2 * math.pi, 25)
    outer = np.r_[[(-rx, side_y)], np.c_[rx * np.cos(psi), ry * np.sin(psi)], [(rx, side_y)]]
    temple = 0.44
    xs = np.linspace(temple, -temple, 21)
    if face.hair_style == "bangs":
        fringe_y = lm.brow_y - 0.04
        hairline = fringe_y + 0.025 * (np.arange(len(xs)) % 2) + 0.06 * (xs / temple) ** 4
    else:
        hairline = lm.brow_y - face.hairline + 0.1 * (xs / temple) ** 2
    hairline = np.r_[lm.eye_y - 0.02, hairline[1:-1], lm.eye_y - 0.02]
    pen.polygon(np.r_[outer, np.c_[xs, hairline]], face.hair, feature=False)
    if face.hair_style == "curly":
        for angle in np.linspace(math.pi * 1.05, math.pi * 1.95, 11):
            pen.ellipse(rx * math.cos(angle), ry * math.sin(angle), 0.07, 0.07, fill=face.hair, feature=False)


def _draw_glasses(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    lens = (20, 20, 26, 235) if face.glasses == "sun" else (255, 255, 255, 28)
    rx, ry = 0.085 * face.eye_size + 0.035, 0.072
    y = lm.eye_y + 0.005
    for side in (-1, 1):
        x = side * face.eye_gap
        angle = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        exponent = 0.4 if face.glasses == "rect" else 1.0  # superellipse: rounded rectangle frames
        cos, sin = np.cos(angle), np.sin(angle)
        frame = np.c_[x + rx * np.sign(cos) * np.abs(cos) ** exponent, y + ry * np.sign(sin) * np.abs(sin) ** exponent]
        pen.polygon(frame, lens, outline=face.glasses_colour, width=0.016)
        pen.line([(side * (face.eye_gap + rx), y - 0.03), (side * 0.5, y - 0.04)], face.glasses_colour, 0.016)
    pen.line(_bezier((-(face.eye_gap - rx), y - 0.02), (0, y - 0.035), (face.eye_gap - rx, y - 0.02)),
             face.glasses_colour, 0.016)


def _draw_occluder(pen: _Pen, face: _Face, lm: _Landmarks) -> None:
    side = face.occluder_side
    if face.occluder == "mask":
        x = np.linspace(-0.48, 0.48, 17)
        top = lm.nose_y - 0.07 - 0.05 * (1 - (x / 0.48) ** 2)
        bottom = lm.bottom - 0.06 - (lm.bottom - lm.mouth_y - 0.1) * (x / 0.48) ** 2
        pen.polygon(np.r_[np.c_[x, top], np.c_[x, bottom][::-1]], face.occluder_colour)
        for k in range(3):
            y = lm.nose_y + 0.03 + 0.06 * k
            pen.line([(-0.4, y), (0.4, y)], _shade(face.occluder_colour, 0.8), 0.006)
        return
    skin = _shade(face.skin, 1.04)
    cx, cy = side * 0.32, lm.mouth_y + 0.08
    pen.ellipse(cx, cy, 0.19, 0.15, fill=skin, feature=False)
    for k in range(4):
        fx = cx - side * (0.12 - 0.075 * k)
        pen.ellipse(fx, cy - 0.2, 0.034, 0.13, fill=skin, outline=_shade(face.skin, 0.8), width=0.006,
                    feature=False)


def _draw_head(pen: _Pen, face: _Face) -> None:
    """The whole head, back to front."""
    lm = _landmarks(face)
    _draw_outline(pen, face, lm)
    eye_half_width = 0.0
    for side in (-1, 1):
        eye_half_width = _draw_eye(pen, face, lm, side)
    _draw_cheeks(pen, face, lm)
    _draw_wrinkles(pen, face, lm, eye_half_width)
    _draw_brows(pen, face, lm)
    _draw_nose(pen, face, lm)
    _draw_mouth(pen, face, lm)
    _draw_hair(pen, face, lm)
    if face.glasses:
        _draw_glasses(pen, face, lm)
    if face.occluder:
        _draw_occluder(pen, face, lm)


# --------------------------------------------------------------------------- the photo

def _background(scene: _Scene, width: int, height: int) -> Image.Image:
    """Out-of-focus background, drawn at a quarter of the canvas size and enlarged."""
    w, h = max(2, width // 4), max(2, height // 4)
    grid = scene.bg_grid
    if scene.background == "solid":
        small = Image.new("RGB", (w, h), _rgb(grid[0, 0]))
    elif scene.background == "gradient":
        yy, xx = np.mgrid[0:h, 0:w]
        s = (xx / w - 0.5) * math.cos(scene.bg_angle) + (yy / h - 0.5) * math.sin(scene.bg_angle)
        s = np.clip(s + 0.5, 0, 1)[..., None]
        small = Image.fromarray(((1 - s) * grid[0, 0] + s * grid[0, 1]).astype(np.uint8))
    elif scene.background == "blobs":
        small = Image.fromarray(grid.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    else:  # clutter: a wall with a few furniture-like rectangles and round things
        small = Image.new("RGB", (w, h), _rgb(grid[0, 0]))
        draw = ImageDraw.Draw(small)
        for k, (x, y, sx, sy, kind) in enumerate(scene.bg_shapes):
            box = (x * w - sx * w * 0.4, y * h - sy * h * 0.4, x * w + sx * w * 0.4, y * h + sy * h * 0.4)
            colour = _rgb(grid[1 + k // 4, k % 4])
            (draw.rectangle if kind < 0.6 else draw.ellipse)(box, fill=colour)
        small = small.filter(ImageFilter.GaussianBlur(1.0))
    return small.resize((width, height), Image.Resampling.BILINEAR)


def _draw_body(canvas: Image.Image, scene: _Scene, face: _Face, fw: float, cx: float, cy: float) -> None:
    """Neck and shoulders under the head (not rotated with it)."""
    draw = ImageDraw.Draw(canvas)
    neck = 0.21 * fw
    draw.rectangle((cx - neck, cy, cx + neck, cy + 1.25 * fw), fill=_shade(face.skin, 0.82)[:3])
    draw.ellipse((cx - 1.35 * fw, cy + 1.0 * fw, cx + 1.35 * fw, cy + 3.2 * fw), fill=scene.clothes)
    draw.polygon([(cx - neck, cy + 1.02 * fw), (cx + neck, cy + 1.02 * fw), (cx, cy + 1.3 * fw)],
                 fill=_shade(face.skin, 0.82)[:3])


def _photometric(image: Image.Image, scene: _Scene, affine: np.ndarray, blur: float,
                 rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, exposure, contrast, colour cast, grey, blur and sensor noise.

    ``affine`` (2 x 3) maps this image's pixel (x, y, 1) to final-size photo coordinates, so the
    aligned crop is lit exactly like the region of the photo it shows.
    """
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    a = np.asarray(image, dtype=np.float32)
    h, w = a.shape[:2]
    yy, xx = np.ogrid[0:h, 0:w]
    px = affine[0, 0] * xx + affine[0, 1] * yy + affine[0, 2]
    py = affine[1, 0] * xx + affine[1, 1] * yy + affine[1, 2]
    along = (px / scene.width - 0.5) * math.cos(scene.light_angle) + (py / scene.height - 0.5) * math.sin(
        scene.light_angle)
    gain = (1 + 2 * scene.light_strength * along) * scene.brightness
    a = a * gain[..., None] * np.asarray(scene.cast, np.float32)
    a = (a - 128) * scene.contrast + 128
    if scene.grey:
        a = np.repeat(a @ np.float32([0.299, 0.587, 0.114])[:, None], 3, axis=2)
    a += rng.standard_normal(a.shape, dtype=np.float32) * np.float32(scene.noise)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def render(emotion: str, rng: np.random.Generator, intensity: float | None, original_size: int,
           aligned_size: int) -> tuple[Image.Image, Image.Image]:
    """(original photo, aligned face crop) of one image, everything drawn from ``rng``."""
    face = _sample_face(emotion, rng, intensity)
    scene = _sample_scene(rng, original_size)
    ss = scene.ss
    canvas = _background(scene, scene.width * ss, scene.height * ss)
    fw, cx, cy = scene.face_w * ss, scene.cx * ss, scene.cy * ss
    _draw_body(canvas, scene, face, fw, cx, cy)
    _draw_head(_Pen(canvas, face, fw, cx, cy, scene.roll), face)

    original = _photometric(canvas.reduce(ss), scene, np.float32([[1, 0, 0], [0, 1, 0]]), scene.blur, rng)

    # aligned: the aligner found the head roughly (centre and roll errors), cropped a square
    # around it, undid the roll it measured and resized the crop
    roll, crop_roll = math.radians(scene.roll), math.radians(scene.crop_roll)
    dx, dy = scene.crop_dx * fw, scene.crop_dy * fw
    centre_x = cx + dx * math.cos(roll) + dy * math.sin(roll)
    centre_y = cy - dx * math.sin(roll) + dy * math.cos(roll)
    side = max(8, round(scene.crop_side * fw))
    c, s = math.cos(crop_roll), math.sin(crop_roll)
    crop_to_canvas = np.float32([[c, s, centre_x - side / 2 * (c + s)], [-s, c, centre_y + side / 2 * (s - c)]])
    crop = canvas.transform((side, side), Image.Transform.AFFINE, tuple(crop_to_canvas.ravel()),
                            Image.Resampling.BILINEAR)
    crop = crop.resize((aligned_size, aligned_size), Image.Resampling.BICUBIC)
    zoom = side / aligned_size
    aligned_to_photo = crop_to_canvas @ np.float32([[zoom, 0, 0], [0, zoom, 0], [0, 0, 1]]) / ss
    aligned = _photometric(crop, scene, aligned_to_photo, scene.blur / zoom * ss, rng)
    return original, aligned


def draw_face(emotion: str | int, rng: np.random.Generator, size: int = ALIGNED_SIZE,
              intensity: float | None = None) -> Image.Image:
    """One synthetic face of class ``emotion`` (name, alias or index 0..6) as an aligned RGB crop.

    ``intensity`` (0..1) scales the class's action units; ``None`` draws it from ``rng`` in
    [0.3, 1]. All other variation is drawn from ``rng`` as well, in an order that does not depend
    on the class: the same generator state gives the same person in the same photo, and only the
    expression differs between classes.
    """
    if intensity is not None and not 0 <= intensity <= 1:
        raise ConfigError(f"intensity must be in [0, 1] or None, got {intensity!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ConfigError(f"size must be an integer >= 16, got {size!r}")
    return render(EMOTIONS[index_of(emotion)], rng, intensity, DEFAULT_ORIGINAL_SIZE, size)[1]

"""The canonical 7 expression classes, in RAF-DB order, and mappings from other data sets.

Internally a label is an int 0..6 indexing :data:`EMOTIONS`. RAF-DB's label file uses 1..7 in
the same order; FER2013 uses 0..6 in a *different* order (angry first), mapped by
:data:`FER2013_TO_INDEX`.
"""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
"""English class names, index = internal label, RAF-DB label = index + 1."""

KOREAN: dict[str, str] = {
    "surprise": "놀람",
    "fear": "두려움",
    "disgust": "혐오",
    "happiness": "행복",
    "sadness": "슬픔",
    "anger": "분노",
    "neutral": "중립",
}
EMOTIONS_KO: tuple[str, ...] = tuple(KOREAN[e] for e in EMOTIONS)
NUM_CLASSES = len(EMOTIONS)

FER2013_ORDER: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
"""FER2013 classes 0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral) in our names."""
FER2013_TO_INDEX: tuple[int, ...] = tuple(EMOTIONS.index(n) for n in FER2013_ORDER)

ORIGINAL_WEB_APP_LABELS_KO: tuple[str, ...] = ("행복", "슬픔", "분노", "놀람", "혐오", "중립", "불안")
"""The label list of the original study's web app (flaw 7): not the model's class order."""

_ALIASES = {
    "happy": "happiness", "sad": "sadness", "angry": "anger", "surprised": "surprise",
    "fearful": "fear", "disgusted": "disgust", "neutrality": "neutral",
}


def rafdb_to_index(label: int) -> int:
    """RAF-DB label 1..7 -> internal 0..6. Raises ValueError outside 1..7."""
    if isinstance(label, bool) or int(label) != label or not 1 <= int(label) <= NUM_CLASSES:
        raise ValueError(f"RAF-DB label must be an integer 1..{NUM_CLASSES}, got {label!r}")
    return int(label) - 1


def index_to_rafdb(index: int) -> int:
    return index_of(index) + 1


def fer2013_to_index(label: int) -> int:
    """FER2013 label 0..6 (Angry first) -> internal index."""
    if isinstance(label, bool) or int(label) != label or not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"FER2013 label must be an integer 0..{NUM_CLASSES - 1}, got {label!r}")
    return FER2013_TO_INDEX[int(label)]


def index_of(name_or_index: str | int) -> int:
    """Internal index of a class given its English/Korean name, a common alias, or an index."""
    if isinstance(name_or_index, (int,)) and not isinstance(name_or_index, bool):
        if not 0 <= name_or_index < NUM_CLASSES:
            raise ValueError(f"class index must be 0..{NUM_CLASSES - 1}, got {name_or_index}")
        return int(name_or_index)
    key = str(name_or_index).strip().lower()
    key = _ALIASES.get(key, key)
    if key in EMOTIONS:
        return EMOTIONS.index(key)
    if name_or_index in EMOTIONS_KO:
        return EMOTIONS_KO.index(name_or_index)
    raise ValueError(f"unknown class {name_or_index!r}; expected one of {', '.join(EMOTIONS)}")

"""The two captioners that run no model: captions read from a file, and simulated captions. Torch-free.

:class:`PrecomputedCaptioner` reads captions made elsewhere (another machine, another model, a
hand-written set) from a CSV or JSON-lines file, so the rest of the pipeline (text features,
fusion, reports) can run on them. The file must cover the data exactly: a missing id or, by
default, an extra one is an error, because either means the file was made for other data.

:class:`SimulatedCaptioner` is an **experimental control, not a model**: it writes a sentence
naming the image's *true* label with a chosen probability, and another class otherwise. Fusing
such captions with a CNN shows how much a caption of known accuracy can add, which brackets
what a real captioner's text could contribute (and exposes a pipeline that leaks labels: at
accuracy 1.0 the text alone is a perfect classifier).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS, NUM_CLASSES
from fer_utils.vlm.base import Captioner, FaceImage, GenerationSettings

CSV_SUFFIXES: tuple[str, ...] = (".csv",)
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")
_SHOWN = 5  # ids listed in an error message; the rest are counted


def _some(ids: Sequence[str]) -> str:
    """Up to :data:`_SHOWN` ids, quoted, and how many more there are."""
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


class PrecomputedCaptioner(Captioner):
    """Captions looked up by image id in a CSV or JSON-lines file.

    * ``.csv``: a header row naming (at least) the columns ``id`` and ``caption``; other columns
      are ignored. Read as UTF-8 (a byte-order mark is allowed).
    * ``.jsonl`` / ``.ndjson``: one JSON object per line with the keys ``id`` (text or integer)
      and ``caption`` (text); other keys are ignored, blank lines skipped.

    An empty caption is allowed (a model can write nothing); a missing one (no field, JSON
    ``null``) is not. Ids are compared as text with surrounding whitespace removed. The whole
    file is read and checked when the captioner is made: a missing file, a missing column or
    key, a malformed JSON line, an empty id or a duplicate id raise :class:`DataError` naming
    the file and line.

    :meth:`caption` returns the captions of the images' ids, in order; an image id the file
    lacks is an error. :meth:`prepare`, which the pipeline calls once with the whole data set
    before captioning it batch by batch, also refuses a file id that none of the images has (the
    file was made for other data, or for a larger set), unless ``allow_extra=True`` (set by
    ``fer caption --shard``: a shard is part of the data the file was made for).

    The prompt and generation settings are ignored: the captions were made with whatever
    prompt the file's author used. That enters the :attr:`identity` only through the file's
    hash, so record the prompt next to the file.
    """

    name = "precomputed"
    cached = False
    """The pipeline keeps no cache entries for it: a look-up is as cheap as a cache hit."""

    def __init__(self, path: str | os.PathLike, *, allow_extra: bool = False):
        self.path = Path(path)
        self.allow_extra = bool(allow_extra)
        suffix = self.path.suffix.lower()
        if suffix not in CSV_SUFFIXES + JSONL_SUFFIXES:
            raise DataError(f"{self.path}: unsupported caption file type {suffix or '(no extension)'!r}; "
                            f"expected {', '.join(CSV_SUFFIXES + JSONL_SUFFIXES)}")
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{self.path}: caption file not found") from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read caption file ({exc.strerror or exc})") from None
        self._sha256 = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        rows = self._read_csv(text) if suffix in CSV_SUFFIXES else self._read_jsonl(text)
        self.captions: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for line, id_, caption in rows:
            if not id_:
                raise DataError(f"{self.path}, line {line}: empty id")
            if id_ in first_line:
                raise DataError(f"{self.path}, line {line}: duplicate id {id_!r} (first on line {first_line[id_]})")
            first_line[id_] = line
            self.captions[id_] = caption
        if not self.captions:
            raise DataError(f"{self.path}: no captions in the file")

    def _read_csv(self, text: str) -> Iterable[tuple[int, str, str]]:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{self.path}: empty file; expected a header row with columns id and caption")
            names = [h.strip() for h in header]
            missing = [c for c in ("id", "caption") if c not in names]
            if missing:
                raise DataError(f"{self.path}, line 1: header has no column {' or '.join(missing)} "
                                f"(columns: {', '.join(map(repr, names))}); expected columns id and caption")
            i_id, i_caption = names.index("id"), names.index("caption")
            rows = []
            for record in reader:
                if not record:
                    continue
                if len(record) != len(names):
                    raise DataError(f"{self.path}, line {reader.line_num}: {len(record)} fields, "
                                    f"the header has {len(names)}")
                rows.append((reader.line_num, record[i_id].strip(), record[i_caption]))
        except csv.Error as exc:
            raise DataError(f"{self.path}, line {reader.line_num}: malformed CSV ({exc})") from None
        return rows

    def _read_jsonl(self, text: str) -> Iterable[tuple[int, str, str]]:
        rows = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}, line {line}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{self.path}, line {line}: expected a JSON object with keys id and caption, "
                                f"got {type(obj).__name__}")
            for key in ("id", "caption"):
                if key not in obj:
                    raise DataError(f"{self.path}, line {line}: no key {key!r} (keys: {', '.join(map(repr, obj))})")
            id_, caption = obj["id"], obj["caption"]
            if isinstance(id_, bool) or not isinstance(id_, (str, int)):
                raise DataError(f"{self.path}, line {line}: id must be text or an integer, got {id_!r}")
            if not isinstance(caption, str):
                raise DataError(f"{self.path}, line {line}: caption must be text, got {caption!r}")
            rows.append((line, str(id_).strip(), caption))
        return rows

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "precomputed", "file_sha256": self._sha256}

    def check_ids(self, ids: Iterable[str], strict: bool = True) -> list[str]:
        """The file's ids that are not among ``ids`` (sorted): an error when ``strict``.

        An id among ``ids`` that the file lacks is always an error (:class:`DataError` listing up
        to 5 ids and the count).
        """
        wanted = [str(i) for i in ids]
        wanted_set = set(wanted)
        missing = list(dict.fromkeys(i for i in wanted if i not in self.captions))
        if missing:
            raise DataError(f"{self.path}: no caption for {len(missing)} of the {len(wanted_set)} image id(s): "
                            f"{_some(missing)}")
        extra = sorted(i for i in self.captions if i not in wanted_set)
        if extra and strict:
            raise DataError(f"{self.path}: captions for {len(extra)} id(s) not in the data: {_some(extra)} "
                            "(the file was made for other data; to caption part of a data set, as "
                            "'fer caption --shard' does, allow extra ids)")
        return extra

    def prepare(self, images: Sequence[FaceImage]) -> None:
        """Check the file against the whole data set: every image has a caption and, unless
        ``allow_extra``, every caption has an image."""
        self.check_ids([image.id for image in images], strict=not self.allow_extra)

    def caption(self, images: Sequence[FaceImage], prompt: str, settings: GenerationSettings) -> list[str]:
        """The file's caption of each image, in order (``prompt`` and ``settings`` ignored)."""
        ids = [image.id for image in images]
        self.check_ids(ids, strict=False)
        return [self.captions[i] for i in ids]


# --- simulated captions ----------------------------------------------------------------------

ADJECTIVES: dict[str, tuple[str, ...]] = {
    "surprise": ("surprised", "shocked", "astonished", "amazed"),
    "fear": ("scared", "afraid", "frightened", "terrified", "fearful"),
    "disgust": ("disgusted", "repulsed", "grossed out"),
    "happiness": ("happy", "joyful", "cheerful", "glad"),
    "sadness": ("sad", "unhappy", "upset", "sorrowful"),
    "anger": ("angry", "furious", "annoyed", "mad"),
    "neutral": ("neutral", "calm", "expressionless", "blank"),
}
"""Class name -> adjectives the simulated captions use (each a :data:`postprocess.SYNONYMS` word)."""
NOUNS: dict[str, tuple[str, ...]] = {
    "surprise": ("surprise", "shock", "astonishment"),
    "fear": ("fear", "terror"),
    "disgust": ("disgust", "revulsion"),
    "happiness": ("happiness", "joy"),
    "sadness": ("sadness", "sorrow"),
    "anger": ("anger", "rage", "fury"),
    "neutral": ("neutrality", "calm"),
}
"""Class name -> nouns the simulated captions use."""
TEMPLATES: tuple[str, ...] = (
    "The person looks {adj}.",
    "They seem rather {adj}.",
    "This person appears {adj}.",
    "The face in the picture is {adj}.",
    "Someone who is clearly {adj}.",
    "{Adj}.",
    "A face showing {noun}.",
    "The expression suggests {noun}.",
    "The emotion shown is {noun}.",
)
"""Sentence templates: ``{adj}``/``{Adj}`` take an adjective, ``{noun}`` a noun."""
SIMULATION_VERSION = 1
"""Bump when the draw, the templates or the word lists change (it is part of the identity)."""


def _fill(template: str, word: str) -> str:
    return template.format(adj=word, Adj=word[:1].upper() + word[1:], noun=word)


def _words_for(template: str, emotion: str) -> tuple[str, ...]:
    return NOUNS[emotion] if "{noun}" in template else ADJECTIVES[emotion]


def simulated_sentences(label: int) -> list[str]:
    """Every sentence the simulated captioner can write for class ``label`` (template x word)."""
    emotion = EMOTIONS[label]
    return [_fill(t, w) for t in TEMPLATES for w in _words_for(t, emotion)]


class SimulatedCaptioner(Captioner):
    """Captions that name the true label with probability ``accuracy``: a control, not a model.

    For each image a generator seeded from the SHA-256 of ``(version, seed, image id)`` draws
    whether the caption is right (probability ``accuracy``), which of the 6 *other* classes it
    names when it is not (uniformly), a template of :data:`TEMPLATES` and a word of
    :data:`ADJECTIVES`/:data:`NOUNS` (uniformly). So an image always gets the same caption for
    a seed, whatever the batch or order, and the template and word draws do not depend on
    ``accuracy``. Every sentence names its class through :func:`postprocess.emotion_vote`.

    The prompt and settings are ignored. Images need a label (:class:`DataError` otherwise);
    the label is not in the :attr:`identity`, so the same image id with another label gets a
    caption naming that label.
    """

    name = "simulated"
    meaningful = True
    simulated = True
    """Marks a control whose captions are made from the labels (pages say so)."""
    cached = False
    """The pipeline keeps no cache entries for it: its captions depend on the id and label, not
    the pixels that cache keys hash, and cost nothing to remake."""

    def __init__(self, accuracy: float, seed: int = 0):
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) \
                or not math.isfinite(accuracy) or not 0 <= accuracy <= 1:
            raise ConfigError(f"parameter 'accuracy' of the simulated captioner must be a number in [0, 1], "
                              f"got {accuracy!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"parameter 'seed' of the simulated captioner must be an integer, got {seed!r}")
        self.accuracy = float(accuracy)
        self.seed = int(seed)

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "simulated", "accuracy": self.accuracy, "seed": self.seed,
                "version": SIMULATION_VERSION}

    def _draw(self, image_id: str) -> np.ndarray:
        """Four uniform numbers in [0, 1) fixed by (version, seed, image id)."""
        digest = hashlib.sha256(f"simulated-captions/{SIMULATION_VERSION}/{self.seed}/{image_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest, "big")).random(4)

    def sentence(self, image: FaceImage) -> tuple[int, str]:
        """``(class named, caption)`` of one image."""
        label = image.label
        if label is None:
            raise DataError(f"image {image.id!r} has no label: the simulated captioner writes captions "
                            "from the true labels and needs labelled images")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < NUM_CLASSES:
            raise DataError(f"image {image.id!r}: label must be a class index 0..{NUM_CLASSES - 1}, got {label!r}")
        right, other, template_u, word_u = self._draw(image.id)
        if right < self.accuracy:
            named = int(label)
        else:
            others = [c for c in range(NUM_CLASSES) if c != label]
            named = others[int(other * len(others))]
        template = TEMPLATES[int(template_u * len(TEMPLATES))]
        words = _words_for(template, EMOTIONS[named])
        return named, _fill(template, words[int(word_u * len(words))])

    def caption(self, images: Sequence[FaceImage], prompt: str, settings: GenerationSettings) -> list[str]:
        """One simulated sentence per image, in order (``prompt`` and ``settings`` ignored)."""
        return [self.sentence(image)[1] for image in images]


__all__ = ["ADJECTIVES", "CSV_SUFFIXES", "JSONL_SUFFIXES", "NOUNS", "PrecomputedCaptioner", "SIMULATION_VERSION",
           "SimulatedCaptioner", "TEMPLATES", "simulated_sentences"]

"""Caption post-processing: tidy a captioner's raw text, and read the emotion a caption names. Torch-free.

Greedy decoding with small models often echoes the prompt (``Answer: happy``) and loops
(``a happy face, a happy face, a happy face, a happy``). Such text reaches the text encoder
as it is unless it is post-processed, and the study records both forms (:func:`caption_table`):

* :func:`normalize` strips the echo, surrounding quotes and extra whitespace (case is kept: the
  text encoders are case-sensitive or lower-case themselves, and the raw text stays inspectable);
* :func:`drop_repeats` removes immediately repeated words and phrases, and a truncated copy of
  the phrase at the very end (where generation ran out of tokens);
* :func:`emotion_vote` reads which of the seven classes a caption names, through a synonym
  table (:data:`SYNONYMS`) with simple negation handling, so that a captioner can be scored as
  a zero-shot classifier (:func:`vote_scores`): how often does its caption alone name the label?
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fer_utils.labels import EMOTIONS, NUM_CLASSES

MAX_NGRAM = 8
"""The longest phrase (in words) :func:`drop_repeats` looks for repeats of."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    "surprise": ("surprise", "surprised", "shock", "shocked", "astonished", "astonishment", "amazed",
                 "amazement", "startled", "stunned"),
    "fear": ("fear", "fearful", "scared", "afraid", "frightened", "terrified", "terror", "horrified",
             "anxious", "worried", "nervous", "panic", "panicked"),
    "disgust": ("disgust", "disgusted", "grossed out", "repulsed", "revulsion", "revolted"),
    "happiness": ("happiness", "happy", "joy", "joyful", "joyous", "smile", "smiles", "smiling", "grin",
                  "grinning", "laughing", "glad", "cheerful", "delighted", "pleased"),
    "sadness": ("sadness", "sad", "unhappy", "upset", "crying", "cries", "tears", "tearful", "sorrow",
                "sorrowful", "depressed", "miserable", "gloomy", "grief", "grieving", "heartbroken"),
    "anger": ("anger", "angry", "mad", "furious", "fury", "rage", "enraged", "annoyed", "irritated", "irate",
              "frustrated"),
    "neutral": ("neutral", "neutrality", "calm", "expressionless", "blank", "no expression", "no emotion",
                "straight face", "poker face", "indifferent"),
}
"""Class name -> the words and phrases that vote for it (matched whole-word, case-insensitive;
a space in a phrase also matches a hyphen or several spaces)."""

NEGATIONS: frozenset[str] = frozenset({
    "not", "no", "never", "without", "neither", "nor", "hardly", "barely", "nothing", "none",
    "dont", "doesnt", "isnt", "arent", "wasnt", "werent", "cant", "cannot", "wont", "didnt", "aint",
})
"""Words that negate an emotion word a few words after them (any word ending in ``n't`` too)."""
NEGATION_WINDOW = 4
"""How many words before an emotion word are searched for a negation."""

_WORD_TO_CLASS: dict[str, int] = {}
for _name, _words in SYNONYMS.items():
    for _word in _words:
        if _WORD_TO_CLASS.setdefault(_word, EMOTIONS.index(_name)) != EMOTIONS.index(_name):
            raise AssertionError(f"synonym {_word!r} is listed under two classes")
_MENTION = re.compile(
    r"\b(?:" + "|".join(r"[\s\-]+".join(map(re.escape, w.split()))
                        for w in sorted(_WORD_TO_CLASS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]\"]|\b(?:but|though|although|however|yet|instead|whereas|while|and)\b",
                           re.IGNORECASE)
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
_ECHO = re.compile(r"(?:question\s*:.*?)?answer\s*:\s*", re.IGNORECASE | re.DOTALL)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`", "\u00ab": "\u00bb"}
_TRAIL = re.compile(r"\W*$")
_EDGE_PUNCT = re.compile(r"^\W+|\W+$")


def _check_text(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{where} takes a caption string, got {type(text).__name__} {text!r}")
    return text


def normalize(text: str) -> str:
    """The caption with the prompt's echo, surrounding quotes and extra whitespace removed.

    Whitespace runs (newlines included) become one space and the ends are stripped. A leading
    ``Answer:`` (any case, spaces allowed before the colon), or a whole echoed
    ``Question: ... Answer:``, is dropped, as is one pair of matching quotes around the whole
    text; these repeat until nothing changes (``"Answer: 'sad'"`` -> ``sad``). Case, inner
    punctuation and a final full stop are kept: they are the model's text, not an echo.
    """
    text = " ".join(_check_text(text, "normalize").split())
    while True:
        before = text
        echo = _ECHO.match(text)
        if echo:
            text = text[echo.end():].strip()
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        if text == before:
            return text


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(surface, key)`` per word: the key lower-case without edge punctuation, so that
    ``Face,`` and ``face`` repeat each other. A word of punctuation only joins the word before."""
    out: list[tuple[str, str]] = []
    for word in text.split():
        key = _EDGE_PUNCT.sub("", word.casefold())
        if not key and out:
            out[-1] = (f"{out[-1][0]} {word}", out[-1][1])
        else:
            out.append((word, key or word))
    return out


def _trail(surface: str) -> str:
    return _TRAIL.search(surface).group()


def _repeat_at(keys: list[str], i: int) -> tuple[int, int]:
    """``(n, copies)`` of the shortest phrase starting at ``i`` that repeats right away, or ``(0, 1)``."""
    for n in range(1, MAX_NGRAM + 1):
        if i + 2 * n > len(keys):
            break
        phrase = keys[i:i + n]
        copies = 1
        while keys[i + copies * n:i + (copies + 1) * n] == phrase:
            copies += 1
        if copies >= 2:
            return n, copies
    return 0, 1


def _collapse(tokens: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """One left-to-right pass: each run of 2+ consecutive copies of a phrase becomes one copy."""
    keys = [key for _, key in tokens]
    out: list[tuple[str, str]] = []
    changed = False
    i = 0
    while i < len(tokens):
        n, copies = _repeat_at(keys, i)
        if not n:
            out.append(tokens[i])
            i += 1
            continue
        changed = True
        end = i + copies * n
        phrase = keys[i:i + n]
        first_last = tokens[i + n - 1][0]
        # the first copy's words, ending in the punctuation of the last copy ("face," -> "face")
        last = first_last[:len(first_last) - len(_trail(first_last))] + _trail(tokens[end - 1][0])
        tail = keys[end:]
        if 0 < len(tail) < n and tail == phrase[:len(tail)]:  # a copy cut short by the end of the text
            end = len(tokens)
            last = last.rstrip(" ,;:-\u2013\u2014")
        out.extend(tokens[i:i + n - 1])
        out.append((last, phrase[-1]))
        i = end
    return out, changed


def drop_repeats(text: str) -> str:
    """The text with immediately repeated words and phrases kept once.

    A phrase of 1 to :data:`MAX_NGRAM` words repeated two or more times in a row is kept once
    (``sad sad sad`` -> ``sad``; ``a happy face, a happy face, a happy face`` -> ``a happy
    face``). Words compare case-insensitively and without their edge punctuation; the kept copy
    has the first copy's words and the last copy's final punctuation. A run that ends the text
    in a copy cut short (``a happy face, a happy face, a happy``: generation ran out of tokens)
    loses that partial copy too. Passes repeat until nothing changes, so nested loops unwind
    (``very very happy very very happy`` -> ``very happy``). Every immediate repeat goes,
    emphatic ones (``very very``) included. Text with nothing to drop is returned unchanged;
    otherwise words are joined by single spaces.
    """
    _check_text(text, "drop_repeats")
    tokens = _tokens(text)
    any_change = False
    changed = True
    while changed:
        tokens, changed = _collapse(tokens)
        any_change |= changed
    return " ".join(surface for surface, _ in tokens) if any_change else text


def has_repetition(text: str) -> bool:
    """Whether :func:`drop_repeats` would change the text (it has an immediate repeat)."""
    return drop_repeats(text) != text


def _negated(text: str, start: int) -> bool:
    """Whether a negation word is among the :data:`NEGATION_WINDOW` words before ``start``,
    within the same clause (punctuation and ``but``, ``and``, ``though``... end a clause)."""
    before = text[:start].lower().replace("\u2019", "'")
    breaks = list(_CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end():]
    words = _WORDS.findall(before)[-NEGATION_WINDOW:]
    return any(w in NEGATIONS or w.endswith("n't") for w in words)


def emotion_mention(text: str) -> tuple[int, str] | None:
    """``(class index, word as written)`` of the first non-negated emotion word, or None.

    Words come from :data:`SYNONYMS` (``joyful`` -> happiness, ``grossed out`` -> disgust),
    matched as whole words in any case (``unhappy`` does not contain a ``happy`` mention).
    Negation is simple: a mention with ``not``, ``no``, ``never``, ``without``, ``nor``, a
    ``...n't`` word (and the others of :data:`NEGATIONS`) among the few words before it, in the
    same clause, does not count (``not happy``, ``doesn't look happy``, ``not sad, but happy``
    -> happiness). With several emotions the **first** non-negated mention wins: a captioner's
    first word is its answer, later ones mostly elaboration (``tears of joy`` is sadness).
    """
    _check_text(text, "emotion_mention")
    for match in _MENTION.finditer(text):
        if not _negated(text, match.start()):
            word = match.group()
            return _WORD_TO_CLASS[" ".join(re.split(r"[\s\-]+", word.lower()))], word
    return None


def emotion_vote(text: str) -> int | None:
    """The class index (0..6, :data:`~fer_utils.labels.EMOTIONS` order) a caption names, or
    None when it names none (or only negated ones); see :func:`emotion_mention` for the rules."""
    mention = emotion_mention(text)
    return None if mention is None else mention[0]


def _process(text: str, normalise: bool, dedupe: bool) -> str:
    if normalise:
        text = normalize(text)
    if dedupe:
        text = drop_repeats(text)
    return _check_text(text, "postprocess")


def postprocess(text: str, *, normalise: bool = True, dedupe: bool = True) -> str:
    """:func:`normalize` (if ``normalise``) and then :func:`drop_repeats` (if ``dedupe``)."""
    return _process(text, normalise, dedupe)


def caption_table(ids: Sequence[Any], raw_captions: Sequence[str], *, postprocess: bool) -> pd.DataFrame:
    """One row per caption: ``id, raw, caption, vote, vote_label, emotion_word, repetition``.

    ``caption`` is the post-processed text when ``postprocess`` is true, else the raw text, and
    ``vote`` (nullable ``Int64``), ``vote_label`` (English class name, ``""`` without a vote) and
    ``emotion_word`` (the word that voted, as written, or ``""``) are read from ``caption``.
    ``repetition`` says whether the raw text has an immediate repeat (:func:`has_repetition`).
    """
    ids = [str(i) for i in ids]
    raw_captions = list(raw_captions)
    if len(ids) != len(raw_captions):
        raise ValueError(f"caption_table: {len(ids)} ids but {len(raw_captions)} captions")
    for id_, raw in zip(ids, raw_captions):
        if not isinstance(raw, str):
            raise ValueError(f"caption_table: the caption of id {id_!r} is not text: {type(raw).__name__} {raw!r}")
    captions = [_process(raw, True, True) if postprocess else raw for raw in raw_captions]
    mentions = [emotion_mention(c) for c in captions]
    return pd.DataFrame({
        "id": pd.Series(ids, dtype=object),
        "raw": pd.Series(raw_captions, dtype=object),
        "caption": pd.Series(captions, dtype=object),
        "vote": pd.array([None if m is None else m[0] for m in mentions], dtype="Int64"),
        "vote_label": pd.Series(["" if m is None else EMOTIONS[m[0]] for m in mentions], dtype=object),
        "emotion_word": pd.Series(["" if m is None else m[1] for m in mentions], dtype=object),
        "repetition": pd.Series([has_repetition(raw) for raw in raw_captions], dtype=bool),
    })


def vote_scores(votes: Sequence[int | None], labels: Sequence[int]) -> dict[str, float | int]:
    """How well captions' votes (:func:`emotion_vote`) predict the labels, as a zero-shot classifier.

    ``coverage``: share of captions with a vote. ``accuracy``: share whose vote is the label (a
    missing vote counts as wrong). ``macro_f1``: F1 averaged over all 7 classes with a missing
    vote counting as wrong (``sklearn.metrics.f1_score(labels=range(7), zero_division=0)`` after
    mapping a missing vote to -1, so it lowers its true class's recall without adding a false
    positive to any class). ``n``: the number of captions. Votes may be ints, None or pandas NA.
    """
    from sklearn.metrics import f1_score

    votes = list(votes)
    labels = list(labels)
    if len(votes) != len(labels):
        raise ValueError(f"vote_scores: {len(votes)} votes but {len(labels)} labels")
    if not votes:
        raise ValueError("vote_scores: no votes to score")
    y_pred = np.array([-1 if v is None or pd.isna(v) else int(v) for v in votes], dtype=np.int64)
    y_true = np.array([int(y) for y in labels], dtype=np.int64)
    for name, values, low in (("vote", y_pred, -1), ("label", y_true, 0)):
        bad = values[(values < low) | (values >= NUM_CLASSES)]
        if len(bad):
            raise ValueError(f"vote_scores: a {name} must be a class index 0..{NUM_CLASSES - 1}, got {bad[0]}")
    return {
        "n": len(votes),
        "coverage": float((y_pred >= 0).mean()),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(NUM_CLASSES)), average="macro",
                                   zero_division=0)),
    }


__all__ = ["MAX_NGRAM", "NEGATIONS", "NEGATION_WINDOW", "SYNONYMS", "caption_table", "drop_repeats",
           "emotion_mention", "emotion_vote", "has_repetition", "normalize", "postprocess", "vote_scores"]

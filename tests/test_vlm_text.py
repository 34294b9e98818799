"""Prompts, caption post-processing and the two model-free captioners (fer_utils.vlm.prompts,
.postprocess, .simple): torch-free."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fer_utils.cache import file_sha256
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS
from fer_utils.vlm.base import FaceImage, GenerationSettings
from fer_utils.vlm.postprocess import (SYNONYMS, caption_table, drop_repeats, emotion_mention, emotion_vote,
                                       has_repetition, normalize, postprocess, vote_scores)
from fer_utils.vlm.prompts import PROMPTS, resolve_prompt
from fer_utils.vlm.simple import (ADJECTIVES, NOUNS, TEMPLATES, PrecomputedCaptioner, SimulatedCaptioner,
                                  simulated_sentences)

SETTINGS = GenerationSettings()
HAPPY, SAD, ANGER, NEUTRAL, SURPRISE, FEAR, DISGUST = (EMOTIONS.index(n) for n in (
    "happiness", "sadness", "anger", "neutral", "surprise", "fear", "disgust"))


def test_modules_import_neither_torch_nor_transformers():
    code = ("import sys, fer_utils.vlm.prompts, fer_utils.vlm.postprocess, fer_utils.vlm.simple; "
            "bad = {'torch', 'transformers', 'sklearn'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- prompts ---------------------------------------------------------------------------------

def test_named_prompts():
    assert PROMPTS["original"] == "Question: What emotion is the person showing in the image? Answer:"
    assert resolve_prompt("original") == ("original", PROMPTS["original"])
    assert resolve_prompt(" one_word ") == ("one_word", PROMPTS["one_word"])
    text = PROMPTS["emotions"]
    assert text.startswith("Question: ") and text.endswith(" Answer:")
    assert all(word in text for word in EMOTIONS)
    assert all(part in PROMPTS["describe"] for part in ("eyebrows", "eyes", "mouth"))
    assert "one word" in PROMPTS["one_word"].lower()


def test_literal_prompt_and_errors():
    assert resolve_prompt("Question: How does this face feel? Answer:") == (
        "custom", "Question: How does this face feel? Answer:")
    for bad in ("", "   ", "orignal"):
        with pytest.raises(ConfigError, match="'prompt'") as info:
            resolve_prompt(bad)
        assert all(name in str(info.value) for name in PROMPTS)
    with pytest.raises(ConfigError, match="'prompt'"):
        resolve_prompt(None)


# --- normalize / drop_repeats ------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("  a  happy\n face ", "a happy face"),
    ("Answer: happy", "happy"),
    ("answer : Happy face.", "Happy face."),
    ("ANSWER:ANSWER: sad", "sad"),
    ('"Answer: \'sad\'"', "sad"),
    ("\u201chappy\u201d", "happy"),
    ("Question: What emotion is the person showing in the image? Answer: joy", "joy"),
    ('"happy', '"happy'),             # unmatched quote kept
    ("The answer: happy", "The answer: happy"),  # not leading: not an echo
    ("", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("sad sad sad", "sad"),
    ("sad", "sad"),
    ("a happy face, a happy face, a happy face", "a happy face"),
    ("a happy face, a happy face, a happy", "a happy face"),          # cut-short last copy
    ("The man is Sad sad sad.", "The man is Sad."),
    ("happy - happy - happy", "happy"),
    ("very very happy very very happy", "very happy"),
    ("a man with a beard a man with a beard and glasses", "a man with a beard and glasses"),
    ("one two three four five six seven eight one two three four five six seven eight",
     "one two three four five six seven eight"),
    ("a happy man and a happy woman", "a happy man and a happy woman"),
    ("", ""),
])
def test_drop_repeats(raw, expected):
    assert drop_repeats(raw) == expected
    assert has_repetition(raw) == (raw != expected)


def test_drop_repeats_leaves_text_without_repeats_untouched():
    text = "  odd   spacing, kept  "
    assert drop_repeats(text) == text and not has_repetition(text)
    nine = " ".join(f"w{i}" for i in range(9))
    assert drop_repeats(f"{nine} {nine}") == f"{nine} {nine}"  # longer than 8 words: not looked for


def test_postprocess_combines():
    raw = "Answer:  sad sad sad "
    assert postprocess(raw) == "sad"
    assert postprocess(raw, dedupe=False) == "sad sad sad"
    assert postprocess(raw, normalise=False) == "Answer: sad"
    assert postprocess(raw, normalise=False, dedupe=False) == raw


# --- emotion votes -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The person looks joyful.", HAPPY),
    ("SMILING!", HAPPY),
    ("a glad, cheerful face", HAPPY),
    ("she is scared", FEAR), ("Afraid", FEAR), ("frightened", FEAR), ("terrified", FEAR), ("fearful", FEAR),
    ("mad", ANGER), ("Furious.", ANGER), ("annoyed", ANGER), ("angry", ANGER),
    ("unhappy", SAD), ("upset", SAD), ("crying", SAD), ("full of sorrow", SAD), ("Sad.", SAD),
    ("shocked", SURPRISE), ("astonished", SURPRISE), ("amazed", SURPRISE), ("surprised", SURPRISE),
    ("disgusted", DISGUST), ("grossed out", DISGUST), ("Grossed-out", DISGUST), ("repulsed", DISGUST),
    ("neutral", NEUTRAL), ("calm", NEUTRAL), ("expressionless", NEUTRAL), ("a blank stare", NEUTRAL),
    ("he shows no emotion", NEUTRAL),
    # negation
    ("not happy", None), ("The woman does not look happy", None), ("She isn't sad", None),
    ("She isn\u2019t sad", None), ("neither happy nor sad", None), ("no sign of fear", None),
    ("not happy, but sad", SAD), ("He is not angry; he is shocked", SURPRISE),
    # several emotions: the first wins
    ("happy and surprised", HAPPY), ("surprised and happy", SURPRISE), ("tears of joy", SAD),
    # none, and words that merely contain an emotion word
    ("a man with a beard", None), ("", None), ("madeleine ate a fearless cake", None),
    ("Question: What emotion is the person showing?", None),
])
def test_emotion_vote(text, expected):
    assert emotion_vote(text) == expected


def test_emotion_mention_gives_the_word_as_written():
    assert emotion_mention("Clearly JOYFUL, maybe surprised") == (HAPPY, "JOYFUL")
    assert emotion_mention("not sad at all") is None


def test_synonym_table_covers_every_class():
    assert set(SYNONYMS) == set(EMOTIONS)
    for name in EMOTIONS:
        assert emotion_vote(name) == EMOTIONS.index(name)
        for word in SYNONYMS[name]:
            assert emotion_vote(f"The face: {word}!") == EMOTIONS.index(name), word


def test_caption_table():
    table = caption_table([1, "b", "c"], ["Answer: happy happy", "a man", "not sad, but furious"], postprocess=True)
    assert list(table.columns) == ["id", "raw", "caption", "vote", "vote_label", "emotion_word", "repetition"]
    assert table["id"].tolist() == ["1", "b", "c"]
    assert table["caption"].tolist() == ["happy", "a man", "not sad, but furious"]
    assert str(table["vote"].dtype) == "Int64"
    assert table["vote"].tolist()[0] == HAPPY and pd.isna(table["vote"].iloc[1]) and table["vote"].iloc[2] == ANGER
    assert table["vote_label"].tolist() == ["happiness", "", "anger"]
    assert table["emotion_word"].tolist() == ["happy", "", "furious"]
    assert table["repetition"].tolist() == [True, False, False]
    raw = caption_table(["x"], ["Answer: sad sad"], postprocess=False)
    assert raw["caption"].tolist() == ["Answer: sad sad"] and raw["repetition"].tolist() == [True]
    with pytest.raises(ValueError, match="2 ids but 1"):
        caption_table(["a", "b"], ["x"], postprocess=True)
    with pytest.raises(ValueError, match="'b'"):
        caption_table(["a", "b"], ["x", None], postprocess=True)


def test_vote_scores_by_hand():
    labels = [HAPPY, HAPPY, SAD, SAD]
    votes = [HAPPY, None, SAD, HAPPY]
    scores = vote_scores(votes, labels)
    assert scores["n"] == 4
    assert scores["coverage"] == 0.75
    assert scores["accuracy"] == 0.5
    # happiness: tp 1, fp 1, fn 1 -> F1 1/2; sadness: tp 1, fp 0, fn 1 -> 2/3; five other classes 0
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 7)
    na = vote_scores(pd.array([HAPPY, None, SAD, HAPPY], dtype="Int64"), np.array(labels))
    assert na == scores
    assert vote_scores([None, None], [0, 1]) == {"n": 2, "coverage": 0.0, "accuracy": 0.0, "macro_f1": 0.0}
    with pytest.raises(ValueError, match="3 votes but 2"):
        vote_scores([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="0..6"):
        vote_scores([7], [0])


# --- the precomputed captioner ----------------------------------------------------------------

def _images(*ids, label=None):
    return [FaceImage(id=str(i), label=label) for i in ids]


def _write_csv(tmp_path, text, name="captions.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_precomputed_csv(tmp_path):
    path = _write_csv(tmp_path, 'id,caption,note\na,"a happy face, smiling",x\nb,,y\n 3 ,sad,z\n')
    cap = PrecomputedCaptioner(path)
    assert cap.name == "precomputed" and cap.cached is False
    assert cap.identity == {"backend": "precomputed", "file_sha256": file_sha256(path)}
    assert cap.caption(_images("3", "a", "b"), "any prompt", SETTINGS) == ["sad", "a happy face, smiling", ""]
    assert cap.check_ids(["a", "b", "3"]) == []


def test_precomputed_jsonl(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"id": "a", "caption": "joyful"}\n\n{"id": 7, "caption": "", "extra": 1}\n', encoding="utf-8")
    cap = PrecomputedCaptioner(path)
    assert cap.caption(_images(7, "a"), PROMPTS["original"], SETTINGS) == ["", "joyful"]
    assert cap.identity["file_sha256"] == file_sha256(path)


def test_precomputed_missing_and_extra_ids(tmp_path):
    path = _write_csv(tmp_path, "id,caption\n" + "".join(f"{i},cap {i}\n" for i in range(10)))
    cap = PrecomputedCaptioner(path)
    with pytest.raises(DataError, match=r"captions\.csv: no caption for 7 of the 9 .*'x0'.*'x4' and 2 more"):
        cap.caption(_images(0, 1, *(f"x{i}" for i in range(7))), "p", SETTINGS)
    with pytest.raises(DataError, match=r"captions\.csv: captions for 8 id\(s\) not in the data: '2', .* and 3 more"):
        cap.prepare(_images(0, 1))           # the whole data set, checked once before batches
    assert cap.caption(_images(1), "p", SETTINGS) == ["cap 1"]   # a batch: only missing ids are errors
    assert cap.check_ids(["0", "1"], strict=False) == [str(i) for i in range(2, 10)]
    shard = PrecomputedCaptioner(path, allow_extra=True)
    shard.prepare(_images(1, 0))
    assert shard.caption(_images(1, 0), "p", SETTINGS) == ["cap 1", "cap 0"]
    with pytest.raises(DataError, match="no caption for 1 of the 2"):
        shard.caption(_images(1, "nope"), "p", SETTINGS)


@pytest.mark.parametrize("name, text, message", [
    ("c.csv", "id,caption\na,x\nb,y\na,z\n", r"c\.csv, line 4: duplicate id 'a' \(first on line 2\)"),
    ("c.csv", "id,text\na,x\n", r"c\.csv, line 1: header has no column caption"),
    ("c.csv", "name,text\na,x\n", r"c\.csv, line 1: header has no column id or caption"),
    ("c.csv", "id,caption\na,x\nb\n", r"c\.csv, line 3: 1 fields, the header has 2"),
    ("c.csv", "id,caption\n,x\n", r"c\.csv, line 2: empty id"),
    ("c.csv", "", r"c\.csv: empty file"),
    ("c.csv", "id,caption\n", r"c\.csv: no captions"),
    ("c.jsonl", '{"id": "a", "caption": "x"}\n{"id": "b", "caption": "y"\n', r"c\.jsonl, line 2: not valid JSON"),
    ("c.jsonl", '{"id": "a", "caption": "x"}\n\n{"id": "a", "caption": "y"}\n',
     r"c\.jsonl, line 3: duplicate id 'a' \(first on line 1\)"),
    ("c.jsonl", '{"id": "a"}\n', r"c\.jsonl, line 1: no key 'caption'"),
    ("c.jsonl", '{"caption": "x"}\n', r"c\.jsonl, line 1: no key 'id'"),
    ("c.jsonl", '{"id": "a", "caption": null}\n', r"c\.jsonl, line 1: caption must be text"),
    ("c.jsonl", '["a", "x"]\n', r"c\.jsonl, line 1: expected a JSON object"),
    ("c.txt", "a,x\n", r"c\.txt: unsupported caption file type '\.txt'"),
])
def test_precomputed_file_errors(tmp_path, name, text, message):
    path = _write_csv(tmp_path, text, name)
    with pytest.raises(DataError, match=message):
        PrecomputedCaptioner(path)


def test_precomputed_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv: caption file not found"):
        PrecomputedCaptioner(tmp_path / "nothing.csv")


# --- the simulated captioner -------------------------------------------------------------------

FAKE = [FaceImage(id=str(i), label=i % 7) for i in range(3000)]


def test_simulated_identity_and_checks():
    cap = SimulatedCaptioner(0.5, seed=3)
    assert cap.identity == {"backend": "simulated", "accuracy": 0.5, "seed": 3, "version": 1}
    assert cap.meaningful and cap.simulated and cap.name == "simulated" and cap.cached is False
    json.dumps(cap.identity)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="'accuracy'"):
            SimulatedCaptioner(bad)
    with pytest.raises(DataError, match="'x7' has no label"):
        cap.caption([FaceImage(id="a", label=0), FaceImage(id="x7")], "p", SETTINGS)


def test_simulated_is_deterministic_per_id():
    cap = SimulatedCaptioner(0.5, seed=1)
    images = FAKE[:200]
    first = cap.caption(images, "p", SETTINGS)
    assert SimulatedCaptioner(0.5, seed=1).caption(images, "other prompt", SETTINGS) == first
    order = np.random.default_rng(0).permutation(len(images))
    shuffled = cap.caption([images[i] for i in order], "p", SETTINGS)
    assert shuffled == [first[i] for i in order]
    assert [cap.caption([im], "p", SETTINGS)[0] for im in images[:20]] == first[:20]
    assert SimulatedCaptioner(0.5, seed=2).caption(images, "p", SETTINGS) != first
    assert len(set(first)) > 50  # varied sentences


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 1.0])
def test_simulated_accuracy(p):
    captions = SimulatedCaptioner(p, seed=0).caption(FAKE, "p", SETTINGS)
    votes = [emotion_vote(c) for c in captions]
    assert None not in votes
    labels = [im.label for im in FAKE]
    accuracy = np.mean([v == y for v, y in zip(votes, labels)])
    assert abs(accuracy - p) <= 0.03
    if p < 1:  # wrong captions spread evenly over the 6 other classes
        wrong = [(y, v) for v, y in zip(votes, labels) if v != y]
        offsets = Counter((v - y) % 7 for y, v in wrong)
        assert set(offsets) == {1, 2, 3, 4, 5, 6} and min(offsets.values()) > 0.7 * len(wrong) / 6
        if p <= 0.5:  # enough wrong captions to see every (label, named class) pair
            pairs = Counter(wrong)
            for y in range(7):
                counts = [pairs[(y, c)] for c in range(7) if c != y]
                assert min(counts) > 0.5 * sum(counts) / 6


def test_every_simulated_sentence_round_trips():
    assert len(TEMPLATES) >= 6
    for label, name in enumerate(EMOTIONS):
        sentences = simulated_sentences(label)
        expected = sum(len(NOUNS[name] if "{noun}" in t else ADJECTIVES[name]) for t in TEMPLATES)
        assert len(sentences) == len(set(sentences)) == expected
        for sentence in sentences:
            assert emotion_vote(sentence) == label, sentence
            assert postprocess(sentence) == sentence

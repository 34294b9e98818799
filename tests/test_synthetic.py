"""The synthetic RAF-DB stand-in: layout, determinism, class proportions, visible expressions."""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datafixtures import make_rafdb, rafdb_lines
from PIL import Image

from fer_utils.data import rafdb, synthetic
from fer_utils.data.index import Problem
from fer_utils.data.synthetic import (
    RAFDB_TEST_COUNTS,
    RAFDB_TRAIN_COUNTS,
    class_counts,
    draw_face,
    generate,
    is_synthetic,
)
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS

SCALE = 0.005  # 95 images with at least 4 per class
DEFAULT_IMAGES = 1254  # README: the default synthetic set
LINE = re.compile(r"^(train_\d{5}|test_\d{4})\.jpg [1-7]$")  # RAF-DB: train_00001, test_0001


def read_labels(root: Path) -> list[tuple[str, int]]:
    text = (root / "basic" / "EmoLabel" / "list_patition_label.txt").read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.splitlines()
    bad = [line for line in lines if not LINE.match(line)]
    assert not bad, f"malformed label lines: {bad[:3]}"
    return [(name, int(label)) for name, label in (line.split(" ") for line in lines)]


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "rafdb"
    assert generate(out, seed=3, scale=SCALE, min_per_class=4) == out
    return out


# --------------------------------------------------------------------------- layout

def test_label_file_lists_train_then_test_numbered_from_one(dataset):
    names = [name for name, _ in read_labels(dataset)]
    counts = class_counts(SCALE, min_per_class=4)
    n_train, n_test = sum(counts["train"].values()), sum(counts["test"].values())
    assert names == ([f"train_{i:05d}.jpg" for i in range(1, n_train + 1)]
                     + [f"test_{i:04d}.jpg" for i in range(1, n_test + 1)])


def test_every_listed_image_exists_in_both_variants_and_nothing_else(dataset):
    names = [name for name, _ in read_labels(dataset)]
    images = dataset / "basic" / "Image"
    aligned = {f"{name[:-4]}_aligned.jpg" for name in names}
    assert {p.name for p in (images / "aligned").iterdir()} == aligned
    assert {p.name for p in (images / "original").iterdir()} == set(names)


def test_layout_is_the_one_the_rafdb_loader_defines_and_reads(dataset):
    """Written through fer_utils.data.rafdb: every variant scans without a single problem or
    warning (no unlisted image), and loads with every listed image, label and split."""
    labels = read_labels(dataset)
    counts = class_counts(SCALE, min_per_class=4)
    n_train = sum(counts["train"].values())
    assert [name for name, _ in labels] == (
        [rafdb.image_name("train", i, n_train) for i in range(1, n_train + 1)]
        + [rafdb.image_name("test", i) for i in range(1, len(labels) - n_train + 1)])
    for variant in rafdb.VARIANTS:
        layout = rafdb.rafdb_layout(dataset, variant)
        assert layout == rafdb.RafdbLayout.for_writing(dataset.resolve(), variant)
        assert [item for item in rafdb.scan_rafdb(dataset, variant) if isinstance(item, Problem)] == []
        index = rafdb.load_rafdb(dataset, variant)
        assert index["path"].tolist() == [str(layout.image_path(name)) for name, _ in labels]
        assert index["label"].tolist() == [label - 1 for _, label in labels]
        assert index["split"].value_counts().to_dict() == {s: sum(c.values()) for s, c in counts.items()}


def test_synthetic_source_has_no_rafdb_naming_of_its_own():
    """Paths and names come from fer_utils.data.rafdb only, so writer and loader cannot drift."""
    sources = sorted(Path(synthetic.__file__).parent.glob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "faces.py", "writer.py"}
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for literal in ("list_patition_label", "_aligned", "EmoLabel"):
            assert literal not in text, (source.name, literal)


def test_rafdb_writing_helpers_round_trip(tmp_path):
    assert rafdb.image_name("train", 1) == "train_00001.jpg"
    assert rafdb.image_name("test", 7) == "test_0007.jpg"
    assert rafdb.image_name("test", 12, total=12345) == "test_00012.jpg"  # widened to fit the split
    layout = rafdb.RafdbLayout.for_writing(tmp_path, "aligned")
    assert layout.basic == tmp_path / "basic"
    for variant in rafdb.VARIANTS:
        other = rafdb.RafdbLayout.for_writing(tmp_path, variant)
        assert other.label_name(other.image_path("test_0007.jpg").name) == "test_0007.jpg"
    assert layout.label_name("test_0007.jpg") is None and layout.label_name("notes_aligned.jpg") is None
    layout.label_file.parent.mkdir(parents=True)
    layout.label_file.write_text(rafdb.label_line("train_00001.jpg", 4) + rafdb.label_line("test_0001.jpg", 0))
    assert [item[1:] for item in rafdb.parse_label_file(layout.label_file)] == [
        ("train_00001.jpg", 4, "train"), ("test_0001.jpg", 0, "test")]
    for bad in [("val_00001.jpg", 0), ("train_1 x.jpg", 0), ("train_00001.jpg", 7)]:
        with pytest.raises(ValueError):
            rafdb.label_line(*bad)


def test_images_are_rgb_jpegs_of_the_expected_sizes(dataset):
    images = dataset / "basic" / "Image"
    for name, _ in read_labels(dataset)[::7]:
        with Image.open(images / "aligned" / f"{name[:-4]}_aligned.jpg") as aligned:
            assert (aligned.format, aligned.mode, aligned.size) == ("JPEG", "RGB", (100, 100))
        with Image.open(images / "original" / name) as original:
            assert (original.format, original.mode) == ("JPEG", "RGB")
            assert max(original.size) == 160 and min(original.size) >= 120


def test_aligned_crop_shows_the_face_of_its_original(dataset):
    """The aligned image is cut from the original: it must match some region of the original far
    better than a different image's original does."""
    images = dataset / "basic" / "Image"

    def best_match(aligned: np.ndarray, original: Image.Image) -> float:
        errors = []
        for side in range(44, 76, 4):  # face crops are 1.3-1.5 face widths of 0.3-0.4 x short side
            small = np.asarray(Image.fromarray(aligned).resize((side, side), Image.Resampling.BILINEAR), float)
            big = np.asarray(original, float)
            for y in range(0, big.shape[0] - side + 1, 4):
                for x in range(0, big.shape[1] - side + 1, 4):
                    errors.append(np.abs(big[y:y + side, x:x + side] - small).mean())
        return min(errors)

    aligned = np.asarray(Image.open(images / "aligned" / "train_00001_aligned.jpg"))
    own = best_match(aligned, Image.open(images / "original" / "train_00001.jpg"))
    other = best_match(aligned, Image.open(images / "original" / "train_00002.jpg"))
    assert own < 0.5 * other


def test_synthetic_set_says_what_it_is(dataset):
    assert is_synthetic(dataset) and is_synthetic(dataset / "basic")
    assert not is_synthetic(dataset / "basic" / "Image")
    readme = (dataset / "SYNTHETIC.md").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower() and "not real faces" in readme
    meta = json.loads((dataset / "synthetic.json").read_text(encoding="utf-8"))
    assert meta["synthetic"] is True
    assert (meta["seed"], meta["scale"]) == (3, SCALE)
    assert meta["counts"] == class_counts(SCALE, min_per_class=4)
    assert isinstance(meta["generator_version"], int)


# --------------------------------------------------------------------------- proportions

def test_generated_classes_follow_class_counts(dataset):
    labels = read_labels(dataset)
    for split in ("train", "test"):
        found = Counter(EMOTIONS[label - 1] for name, label in labels if name.startswith(split))
        assert dict(found) == class_counts(SCALE, min_per_class=4)[split]


def test_labels_are_shuffled_not_grouped_by_number(dataset):
    train = [label for name, label in read_labels(dataset) if name.startswith("train_")]
    runs = 1 + sum(a != b for a, b in zip(train, train[1:]))
    assert runs > 3 * len(EMOTIONS)


def test_rafdb_counts_are_the_official_ones():
    assert list(RAFDB_TRAIN_COUNTS) == list(RAFDB_TEST_COUNTS) == list(EMOTIONS)
    assert sum(RAFDB_TRAIN_COUNTS.values()) == 12271 and sum(RAFDB_TEST_COUNTS.values()) == 3068
    assert class_counts(1.0) == {"train": RAFDB_TRAIN_COUNTS, "test": RAFDB_TEST_COUNTS}


@pytest.mark.parametrize("scale", [0.1, 0.02, 0.37])
def test_class_counts_scale_rafdb_within_rounding(scale):
    counts = class_counts(scale, min_per_class=4)
    for split, real in (("train", RAFDB_TRAIN_COUNTS), ("test", RAFDB_TEST_COUNTS)):
        for emotion, n in real.items():
            assert counts[split][emotion] >= 4
            if n * scale >= 4:
                assert abs(counts[split][emotion] - n * scale) <= 0.5
        assert max(counts[split], key=counts[split].get) == "happiness"
    train = counts["train"]
    assert min(train, key=train.get) == "fear"


def test_class_counts_of_the_default_set_give_every_class_20_test_images():
    from fer_utils.data.synthetic import DEFAULT_MIN_PER_CLASS, DEFAULT_SCALE

    counts = class_counts(DEFAULT_SCALE)
    assert DEFAULT_MIN_PER_CLASS == 20 and min(counts["test"].values()) == 20  # fear, disgust, anger
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == DEFAULT_IMAGES
    assert class_counts(0.1, min_per_class=4)["train"]["anger"] == 71  # 70.5 rounds half up


def test_class_counts_keeps_every_class_at_tiny_scales():
    assert all(n == 20 for split in class_counts(1e-6).values() for n in split.values())
    assert all(n == 1 for split in class_counts(1e-6, min_per_class=1).values() for n in split.values())


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), "0.1", True])
def test_class_counts_rejects_bad_scales(bad):
    with pytest.raises(ConfigError):
        class_counts(bad)


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path, synthetic_rafdb):
    """conftest's session set is generated in this process (seed 7, scale 0.01, workers=1, at least 4 per class)."""
    parallel = generate(tmp_path / "rafdb", seed=7, scale=0.01, workers=2, min_per_class=4)
    assert len(digests(synthetic_rafdb)) == len(digests(parallel)) > 300
    assert digests(synthetic_rafdb) == digests(parallel)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(ConfigError, match="workers"):
        generate(tmp_path / "rafdb", scale=0.001, workers=bad)
    assert not (tmp_path / "rafdb").exists()


def test_different_seed_gives_different_images_and_order(tmp_path):
    a = generate(tmp_path / "a", seed=1, scale=0.001, min_per_class=2)
    b = generate(tmp_path / "b", seed=2, scale=0.001, min_per_class=2)
    assert read_labels(a) != read_labels(b)
    da, db = digests(a), digests(b)
    images = [k for k in da if k.endswith(".jpg")]
    assert all(da[k] != db[k] for k in images)


def test_regenerating_replaces_an_earlier_synthetic_set(tmp_path):
    out = generate(tmp_path / "s", seed=0, scale=0.001, min_per_class=2)
    generate(out, seed=0, scale=0.001, min_per_class=1)
    names = {name for name, _ in read_labels(out)}
    assert {p.name for p in (out / "basic" / "Image" / "original").iterdir()} == names


def test_refuses_to_write_into_a_real_data_set(tmp_path):
    label_file = tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt"
    label_file.parent.mkdir(parents=True)
    label_file.write_text("train_00001.jpg 4\n")
    with pytest.raises(DataError, match="synthetic.json"):
        generate(tmp_path, scale=0.001)
    assert label_file.read_text() == "train_00001.jpg 4\n"


@pytest.mark.parametrize("target", ["rafdb/basic", "notes", "synthetic/basic"])
def test_refuses_any_non_empty_folder_but_an_earlier_synthetic_set(tmp_path, target):
    """A real RAF-DB's basic/ (which has no basic/ inside), any folder with files, and the basic/
    folder of a synthetic set are all left exactly as they were."""
    make_rafdb(tmp_path / "rafdb", rafdb_lines(1, 1))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    generate(tmp_path / "synthetic", scale=0.001, min_per_class=1)
    before = digests(tmp_path)
    with pytest.raises(DataError, match=f"{tmp_path / target} is not empty and has no synthetic.json"):
        generate(tmp_path / target, scale=0.001, min_per_class=1)
    assert digests(tmp_path) == before


def test_refuses_a_file_and_accepts_an_empty_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        generate(tmp_path / "file", scale=0.001, min_per_class=1)
    (tmp_path / "empty").mkdir()
    assert is_synthetic(generate(tmp_path / "empty", scale=0.001, min_per_class=1))


def test_interrupted_regeneration_never_looks_complete(tmp_path, monkeypatch):
    """The old label file goes before any image is rewritten: a set cut off half-way has none,
    so the loader refuses it instead of reading old labels beside new images."""
    out = generate(tmp_path / "s", seed=0, scale=0.001, min_per_class=1)
    label_file = out / "basic" / "EmoLabel" / "list_patition_label.txt"
    drawn = []

    def write_some(job):
        if len(drawn) == 3:
            raise KeyboardInterrupt
        drawn.append(job.name)
        write_image(job)

    write_image = synthetic.writer._write_image
    monkeypatch.setattr(synthetic.writer, "_write_image", write_some)
    with pytest.raises(KeyboardInterrupt):
        generate(out, seed=1, scale=0.001, min_per_class=1)
    assert len(drawn) == 3 and not label_file.exists()
    with pytest.raises(DataError, match="label file not found"):
        rafdb.load_rafdb(out)
    monkeypatch.undo()
    assert generate(out, seed=1, scale=0.001, min_per_class=1) == out and label_file.is_file()
    assert not [p for p in label_file.parent.iterdir() if p != label_file]  # no temporary file left


# --------------------------------------------------------------------------- draw_face

def faces(emotion, seeds, intensity) -> list[np.ndarray]:
    return [np.asarray(draw_face(emotion, np.random.default_rng(s), intensity=intensity), float) for s in seeds]


def mean_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b)]))


def test_draw_face_returns_an_rgb_image_of_the_requested_size():
    image = draw_face("happy", np.random.default_rng(0), size=64)
    assert (image.mode, image.size) == ("RGB", (64, 64))
    assert np.array_equal(np.asarray(draw_face(3, np.random.default_rng(5))),
                          np.asarray(draw_face("happiness", np.random.default_rng(5))))


@pytest.mark.parametrize("kwargs", [{"intensity": 1.5}, {"intensity": -0.1}, {"size": 8}])
def test_draw_face_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        draw_face("anger", np.random.default_rng(0), **kwargs)


def test_classes_differ_only_by_expression():
    """Same generator state: same person and photo. At intensity 0 every class is the neutral
    face; at intensity 1 every pair of classes differs visibly."""
    seeds = range(4)
    neutral = faces("neutral", seeds, 0.0)
    for emotion in EMOTIONS:
        assert mean_difference(faces(emotion, seeds, 0.0), neutral) == 0.0
    full = {emotion: faces(emotion, seeds, 1.0) for emotion in EMOTIONS}
    for a, b in itertools.combinations(EMOTIONS, 2):
        assert mean_difference(full[a], full[b]) > 0.6, (a, b)


def test_expression_strength_grows_with_intensity():
    seeds = range(4)
    neutral = faces("neutral", seeds, 0.5)
    weak, strong = (mean_difference(faces("happiness", seeds, i), neutral) for i in (0.3, 1.0))
    assert 0 < weak < 0.6 * strong


def test_fear_and_surprise_anger_and_disgust_are_the_confusable_pairs():
    seeds = range(5)
    full = {emotion: faces(emotion, seeds, 1.0) for emotion in EMOTIONS}

    def closest(emotion, among):
        return min((e for e in among if e != emotion), key=lambda e: mean_difference(full[emotion], full[e]))

    assert closest("fear", EMOTIONS) == "surprise" and closest("surprise", EMOTIONS) == "fear"
    expressive = [e for e in EMOTIONS if e != "neutral"]
    assert closest("anger", expressive) == "disgust" and closest("disgust", expressive) == "anger"


def test_a_set_of_another_generator_version_is_recognised(tmp_path, dataset):
    """`fer study run` writes the default set again over one an older generator made, so an old
    data/synthetic never silently stands in for the calibrated one; current sets are kept."""
    from fer_utils.data.synthetic import GENERATOR_VERSION, made_by_another_version

    assert not made_by_another_version(dataset)                 # current, whatever its settings
    meta = json.loads((dataset / "synthetic.json").read_text())
    (tmp_path / "synthetic.json").write_text(json.dumps({**meta, "generator_version": GENERATOR_VERSION - 1}))
    assert made_by_another_version(tmp_path)
    (tmp_path / "synthetic.json").write_text("{not json")
    assert not made_by_another_version(tmp_path)
    assert not made_by_another_version(tmp_path / "missing")


def test_the_data_page_names_the_classes_raised_to_the_minimum(dataset):
    from fer_utils.data.synthetic import raised_classes_note

    note = raised_classes_note(dataset)            # scale 0.005, at least 4 per class
    assert note.startswith("**Class proportions differ from RAF-DB's.**") and "at least 4 images" in note
    assert "- test: " in note and "fear 4 images" in note and "RAF-DB 2.4%" in note
    assert raised_classes_note(dataset / "basic") == ""     # not the set's folder: no metadata, no note

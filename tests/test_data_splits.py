"""Validation splits, subsets and per-class counts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datafixtures import RAFDB_TEST_COUNTS, RAFDB_TRAIN_COUNTS, per_class, rafdb_sized_index

from fer_utils.data import INDEX_COLUMNS, make_splits, split_counts
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS


@pytest.fixture(scope="module")
def rafdb_index():
    return rafdb_sized_index()


def test_rafdb_sizes_and_stratification(rafdb_index):
    splits = make_splits(rafdb_index, val_fraction=0.2, seed=42)
    assert splits["split"].value_counts().to_dict() == {"train": 9816, "val": 2455, "test": 3068}
    val_fraction = per_class(splits, "val") / np.array(RAFDB_TRAIN_COUNTS)
    assert np.allclose(val_fraction, 0.2, atol=0.005)
    assert per_class(splits, "test").tolist() == list(RAFDB_TEST_COUNTS)
    test_ids = rafdb_index.loc[rafdb_index["split"] == "test", "id"]
    assert splits.loc[splits["split"] == "test", "id"].tolist() == test_ids.tolist()
    assert splits["id"].tolist() == rafdb_index["id"].tolist()  # row order kept
    assert (rafdb_index["split"] != "val").all()  # input not modified


def test_seed_determinism(rafdb_index):
    def val_ids(seed):
        splits = make_splits(rafdb_index, seed=seed)
        return set(splits.loc[splits["split"] == "val", "id"])
    assert val_ids(42) == val_ids(42)
    assert val_ids(42) != val_ids(7)


def test_no_validation_split(rafdb_index):
    splits = make_splits(rafdb_index, val_fraction=0)
    assert splits["split"].value_counts().to_dict() == {"train": 12271, "test": 3068}
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        make_splits(rafdb_index, val_fraction=1.0)
    with pytest.raises(ConfigError, match="has none"):
        make_splits(rafdb_index, val_fraction=None)


def test_half_subset_keeps_class_fractions(rafdb_index):
    half = make_splits(rafdb_index, val_fraction=0, subset=0.5)
    assert half["split"].value_counts().to_dict() == {"train": 6135, "test": 1534}
    for split, counts in (("train", RAFDB_TRAIN_COUNTS), ("test", RAFDB_TEST_COUNTS)):
        assert np.all(np.abs(per_class(half, split) - np.array(counts) / 2) <= 1)
    with_val = make_splits(rafdb_index, val_fraction=0.2, subset=0.5)
    assert with_val["split"].value_counts().to_dict() == {"train": 4908, "val": 1227, "test": 1534}
    assert len(make_splits(rafdb_index, subset=1.0)) == len(rafdb_index)
    with pytest.raises(ConfigError, match="subset"):
        make_splits(rafdb_index, subset=0)


def test_existing_validation_split_is_kept_only_on_request():
    rows = [(f"fer2013_{i:05d}", None, None, i % 7, split, "fer2013")
            for i, split in enumerate(["train"] * 28 + ["val"] * 14 + ["test"] * 14)]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    assert make_splits(index, val_fraction=None)["split"].tolist() == index["split"].tolist()
    with pytest.raises(ConfigError, match="val_fraction=None"):
        make_splits(index)
    halves = make_splits(index, val_fraction=None, subset=0.5)
    assert halves["split"].value_counts().to_dict() == {"train": 14, "val": 7, "test": 7}


def test_too_small_class_gives_readable_error():
    rows = [(f"s{i}", None, None, label, "train", "rafdb") for i, label in enumerate([0, 0, 0, 1])]
    with pytest.raises(DataError, match="cannot make the stratified validation split from 4 images .*fear 1"):
        make_splits(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), val_fraction=0.5)


def test_split_counts(rafdb_index):
    table = split_counts(make_splits(rafdb_index))
    assert table.index.tolist() == list(EMOTIONS)
    assert table.columns.tolist() == ["train", "val", "test", "total"]
    assert table["total"].tolist() == [a + b for a, b in zip(RAFDB_TRAIN_COUNTS, RAFDB_TEST_COUNTS)]
    assert table[["train", "val", "test"]].sum().tolist() == [9816, 2455, 3068]
    assert split_counts(rafdb_index).columns.tolist() == ["train", "test", "total"]


def test_bad_index_is_rejected():
    with pytest.raises(DataError, match="columns pixels, source missing"):
        make_splits(pd.DataFrame({"id": ["a"], "path": [None], "label": [0], "split": ["train"]}))
    rows = [("a", None, None, 0, "holdout", "rafdb")]
    with pytest.raises(DataError, match="unknown split name"):
        split_counts(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)))


def test_a_test_subset_does_not_change_with_the_seed(rafdb_index):
    """Runs of several seeds on a half data set are tested on the same images; their training
    halves differ."""
    a = make_splits(rafdb_index, val_fraction=0.2, subset=0.5, seed=1)
    b = make_splits(rafdb_index, val_fraction=0.2, subset=0.5, seed=2)
    assert set(a.loc[a["split"] == "test", "id"]) == set(b.loc[b["split"] == "test", "id"])
    assert set(a.loc[a["split"] != "test", "id"]) != set(b.loc[b["split"] != "test", "id"])

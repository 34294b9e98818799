"""Train / validation / test splits and per-class counts.

The official test split is never touched: model selection uses a validation split carved,
stratified by class and seeded, from the official training split. On RAF-DB (12,271 train /
3,068 test) ``val_fraction=0.2`` gives 9,816 train / 2,455 val / 3,068 test, the sizes in the
original write-up.

``subset`` reproduces the original code's *half* data set: before the validation split, a
stratified, seeded fraction of every official split is kept (same per-class fractions); the
test split's fraction does not depend on the run's seed (:data:`TEST_SUBSET_SEED`). The
original notebooks had 4,906 train / 1,533 test images; ``subset=0.5`` on RAF-DB keeps 6,135
train / 1,534 test, and with ``val_fraction=0.2`` gives 4,908 train / 1,227 val / 1,534 test —
the same scale, not the identical images (their selection is not published).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fer_utils.data.index import SPLITS, check_index
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS


def _stratified_split(rows: pd.DataFrame, seed: int, what: str, **size: float) -> tuple[pd.Index, pd.Index]:
    """sklearn's stratified ``train_test_split`` of the rows' index labels, with a readable error."""
    try:
        return train_test_split(rows.index, stratify=rows["label"].to_numpy(), random_state=seed, **size)
    except ValueError as exc:
        counts = rows["label"].value_counts().sort_index()
        per_class = ", ".join(f"{EMOTIONS[c]} {n}" for c, n in counts.items())
        raise DataError(f"cannot make the stratified {what} from {len(rows)} images ({per_class}): {exc}") from None


TEST_SUBSET_SEED = 0
"""The seed of the test split's subset, the same for every run: runs with other seeds are then
tested on the same images, so they can be averaged and compared pairwise."""


def _subset(index: pd.DataFrame, subset: float, seed: int) -> pd.DataFrame:
    if not 0 < subset <= 1:
        raise ConfigError(f"subset must be a fraction in (0, 1], got {subset!r}")
    if subset == 1:
        return index
    keep = []
    for split in SPLITS:
        rows = index[index["split"] == split]
        if len(rows):
            keep.extend(_stratified_split(rows, TEST_SUBSET_SEED if split == "test" else seed,
                                          f"{subset:g} subset of the {split} split", train_size=subset)[0])
    return index[index.index.isin(keep)]


def make_splits(
    index: pd.DataFrame,
    val_fraction: float | None = 0.2,
    seed: int = 42,
    subset: float | None = None,
) -> pd.DataFrame:
    """A copy of ``index`` with a validation split carved from the official training split.

    ``val_fraction`` of the training rows (stratified by label, ``random_state=seed``) become
    ``"val"``; ``0`` makes no validation split. ``None`` keeps a validation split the data set
    already has (FER2013's PublicTest) and is an error when it has none; a number is an error
    when the index already has one. ``subset`` (a fraction in (0, 1]) first keeps a stratified,
    seeded fraction of each official split (see the module docstring). Row order is kept.
    """
    check_index(index)
    index = index.reset_index(drop=True)
    if subset is not None:
        index = _subset(index, subset, seed)
    has_val = bool((index["split"] == "val").any())
    if val_fraction is None:
        if not has_val:
            raise ConfigError("val_fraction=None keeps the data set's own validation split, but this index has none; "
                              "pass a fraction such as 0.2")
        return index.reset_index(drop=True)
    if has_val:
        raise ConfigError("the index already has a 'val' split (e.g. FER2013's PublicTest): pass val_fraction=None "
                          "to keep it")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    index = index.copy()
    if val_fraction > 0:
        train = index[index["split"] == "train"]
        val_rows = _stratified_split(train, seed, "validation split", test_size=val_fraction)[1]
        index.loc[val_rows, "split"] = "val"
    return index.reset_index(drop=True)


def split_counts(index: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, :data:`~fer_utils.labels.EMOTIONS` order) and split (columns, in
    train/val/test order, only the splits present) plus a ``total`` column."""
    check_index(index)
    splits = [s for s in SPLITS if (index["split"] == s).any()]
    counts = np.zeros((len(EMOTIONS), len(splits)), dtype=np.int64)
    columns = index["split"].map(splits.index).to_numpy(dtype=np.int64)
    np.add.at(counts, (index["label"].to_numpy(dtype=np.int64), columns), 1)
    table = pd.DataFrame(counts, index=list(EMOTIONS), columns=splits)
    table["total"] = table.sum(axis=1)
    return table

"""A torch ``Dataset`` over a data index."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from fer_utils.data.index import check_index, load_rgb


class FERDataset(Dataset):
    """Samples of an index as ``(transformed image, label)`` pairs.

    ``transform`` is applied to every sample, except when ``augment_labels`` (a set of class
    indices) is given: samples with those labels get ``augment_transform`` instead (the
    "augment minority classes only" preset, see
    :func:`fer_utils.data.transforms.build_dataset_transforms`). Without any transform the
    item is an RGB PIL image.

    Only plain lists and the transforms are stored, so the data set pickles cheaply into
    ``DataLoader`` workers. In-memory ``pixels`` (FER2013) skip file reading; ``draft_size``
    lets JPEG files decode at a reduced scale that is still at least that size.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        transform: Callable | None = None,
        augment_transform: Callable | None = None,
        augment_labels: Iterable[int] | None = None,
        *,
        draft_size: int | None = None,
    ) -> None:
        check_index(index)
        if (augment_labels is None) != (augment_transform is None):
            raise ValueError("augment_transform and augment_labels must be given together")
        self.ids: list[str] = index["id"].tolist()
        self.paths: list[str | None] = index["path"].tolist()
        self.pixels: list[np.ndarray | None] = index["pixels"].tolist()
        self.labels: np.ndarray = index["label"].to_numpy(dtype=np.int64)
        self.transform = transform
        self.augment_transform = augment_transform
        self.augment_labels = frozenset(int(c) for c in augment_labels) if augment_labels is not None else frozenset()
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image = load_rgb(self.paths[i], self.pixels[i], self.draft_size)
        label = int(self.labels[i])
        transform = self.augment_transform if label in self.augment_labels else self.transform
        return (transform(image) if transform is not None else image), label

"""A torch ``Dataset`` over a data index."""
from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fer_utils.data.index import check_index


class FERDataset(Dataset):
    """Samples of an index as ``(uint8 image [H, W, 3], label)`` pairs, plus the batch transform
    that turns a batch of them into model inputs on the model's device.

    The images come from one decoded uint8 array ``[N, H, W, 3]``
    (:func:`fer_utils.data.decoded.decoded_images`: decoded once, memory-mapped from the cache
    when ``cache_dir`` is given, else decoded into memory), or ``images`` (such an array, e.g. a
    whole index decoded once) with ``rows`` (this data set's positions in it). Indexing with a
    list/array of positions returns a whole batch ``(uint8 [B, H, W, 3], int64 [B])`` with one
    fancy index into the array: :func:`fer_utils.models.runtime.make_loader` fetches batches so.
    ``batch_transform`` (a :class:`~fer_utils.data.tensor_transforms.BatchTransform`, None: none)
    is what :func:`fer_utils.training.train.fit` applies to training batches; ``eval_transform`` is its
    evaluation path, used for validation, testing and feature extraction.

    A memory-mapped array pickles as its file name (DataLoader workers reopen it and share its
    pages); in-memory ``pixels`` (FER2013) need no file.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        *,
        batch_transform=None,
        images: np.ndarray | None = None,
        rows: Iterable[int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        store_size: int | None = None,
    ) -> None:
        check_index(index)
        self.ids: list[str] = index["id"].tolist()
        self.labels: np.ndarray = index["label"].to_numpy(dtype=np.int64)
        self.batch_transform = batch_transform
        if images is None:
            from fer_utils.data.decoded import decoded_images
            images = decoded_images(index, cache_dir, store_size)
            rows = None
        self.images = images
        self.rows = np.arange(len(index), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) != len(index) or (len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(images))):
            raise ValueError(f"rows must give one position in images (of {len(images)}) per index row ({len(index)})")

    @property
    def eval_transform(self):
        """The evaluation path of :attr:`batch_transform` (None without one)."""
        return None if self.batch_transform is None else self.batch_transform.for_eval()

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and self.images.filename:
            state["images"] = os.fspath(self.images.filename)  # reopened by the worker, not copied
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("images"), str):
            state["images"] = np.load(state["images"], mmap_mode="r", allow_pickle=False)
        self.__dict__.update(state)

    def __getitem__(self, i):
        if isinstance(i, (list, tuple, np.ndarray, torch.Tensor)):
            positions = np.asarray(i, dtype=np.int64)
            return (torch.from_numpy(np.ascontiguousarray(self.images[self.rows[positions]])),
                    torch.from_numpy(self.labels[positions]))
        return torch.from_numpy(np.array(self.images[self.rows[i]])), int(self.labels[i])

"""Augmentation presets and the per-split torch data sets.

:func:`make_datasets` builds the data sets of the one tensor path: images decoded once
(:mod:`fer_utils.data.decoded`), turned into model inputs batch by batch on the model's device by a
:class:`~fer_utils.data.tensor_transforms.BatchTransform`: the evaluation one for validation and
testing, the training one of the augmentation preset (:func:`build_batch_transforms`) for training.
Augmentation presets (:data:`~fer_utils.options.AUGMENTATIONS`), drawn per sample; see
:mod:`fer_utils.data.tensor_transforms` for how each is done on tensors:

``none``                no augmentation
``hflip``               each image mirrored with probability 0.5
``hflip_always``        every image mirrored, which is what the original study's "flip" variant
                        did (it adds no variety); kept only to reproduce it
``hflip_rotate``        ``hflip`` + a rotation by an angle uniform in ``±rotate_degrees``
``random_resized_crop`` a random crop (area fraction in ``rrc_scale``) resized to the model size
``minority``            ``hflip_rotate`` applied only to the minority classes: those whose
                        training count is below the median class count (for RAF-DB: fear,
                        disgust, anger); the other classes are not augmented
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from fer_utils.data.dataset import FERDataset
from fer_utils.data.decoded import decoded_images
from fer_utils.data.tensor_transforms import BatchTransform, check_augmentation, check_rrc_scale
from fer_utils.data.index import SPLITS, check_index, class_counts
from fer_utils.options import Preprocessing


def minority_classes(labels: Iterable[int]) -> frozenset[int]:
    """Classes whose count in ``labels`` (training labels) is below the median class count."""
    counts = class_counts(labels)
    return frozenset(int(c) for c in np.flatnonzero(counts < np.median(counts)))


def build_batch_transforms(
    labels: Iterable[int],
    augmentation: str,
    preprocessing: Preprocessing,
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> BatchTransform:
    """The training :class:`~fer_utils.data.tensor_transforms.BatchTransform` of ``augmentation``
    (``labels``: the training labels, used by ``"minority"`` to find the minority classes)."""
    check_augmentation(augmentation)
    minority = minority_classes(labels) if augmentation == "minority" else None
    return BatchTransform(preprocessing, augmentation, train=True, rrc_scale=rrc_scale,
                          rotate_degrees=rotate_degrees, augment_labels=minority)


def make_datasets(
    index: pd.DataFrame,
    preprocessing: Preprocessing,
    augmentation: str = "none",
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
    *,
    cache_dir: str | os.PathLike | None = None,
    store_size: int | None = None,
) -> dict[str, FERDataset]:
    """One :class:`FERDataset` per split present in ``index`` (keys in train, val, test order).

    The whole index is decoded once (:func:`~fer_utils.data.decoded.decoded_images`: from and into
    ``cache_dir``'s decoded-image cache when given, else in memory; images of mixed sizes are
    resized once to ``store_size``, by default ``preprocessing.image_size``) and every split indexes
    that one array. Each data set yields uint8 images; its ``batch_transform`` makes the model
    inputs on the model's device: ``train`` gets the training transform of ``augmentation``
    (:func:`build_batch_transforms`), ``val`` and ``test`` the evaluation one.
    """
    check_index(index)
    check_augmentation(augmentation)
    if augmentation == "random_resized_crop":
        check_rrc_scale(rrc_scale)
    images = decoded_images(index, cache_dir, preprocessing.image_size if store_size is None else store_size)
    splits = index["split"].to_numpy()
    datasets = {}
    for split in SPLITS:
        rows = np.flatnonzero(splits == split)
        if not len(rows):
            continue
        part = index.iloc[rows]
        if split == "train":
            transform = build_batch_transforms(part["label"], augmentation, preprocessing, rrc_scale, rotate_degrees)
        else:
            transform = BatchTransform(preprocessing)
        datasets[split] = FERDataset(part, batch_transform=transform, images=images, rows=rows)
    return datasets

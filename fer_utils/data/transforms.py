"""Augmentation presets, the per-split torch data sets, and the legacy per-image PIL transforms.

:func:`make_datasets` builds the data sets of the one tensor path: images decoded once
(:mod:`fer_utils.data.decoded`), turned into model inputs batch by batch on the model's device by a
:class:`~fer_utils.data.tensor_transforms.BatchTransform` (see that module for how each preset is
done on tensors, per sample). :func:`build_transform` and :func:`build_dataset_transforms` are the
per-image PIL pipeline that path replaced; the package no longer feeds models with them (they are
kept for old callers and as the reference the tensor path is compared with).

Every PIL transform follows a :class:`~fer_utils.preprocessing.Preprocessing`: ``Resize((size, size))``
-> [augmentation, training only] -> ``ToImage`` -> ``ToDtype(float32, scale=True)`` ->
``Normalize(mean, std)``. Augmentation presets (:data:`~fer_utils.preprocessing.AUGMENTATIONS`):

``none``                no augmentation
``hflip``               ``RandomHorizontalFlip(p=0.5)``
``hflip_always``        ``RandomHorizontalFlip(p=1.0)``: every image mirrored, which is what the
                        original study's "flip" variant did (it adds no variety); kept only to
                        reproduce it
``hflip_rotate``        ``hflip`` + ``RandomRotation(±rotate_degrees)``
``random_resized_crop`` ``RandomResizedCrop(size, scale=rrc_scale)``
``minority``            ``hflip_rotate`` applied only to the minority classes: those whose
                        training count is below the median class count (for RAF-DB: fear,
                        disgust, anger); the other classes are not augmented
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from fer_utils.data.dataset import FERDataset
from fer_utils.data.decoded import decoded_images
from fer_utils.data.tensor_transforms import BatchTransform, check_augmentation, check_rrc_scale
from fer_utils.data.index import SPLITS, check_index, class_counts
from fer_utils.errors import ConfigError
from fer_utils.preprocessing import MINORITY_AUGMENTATION, Preprocessing


_check_augmentation = check_augmentation


def _augmentation_steps(augmentation: str, image_size: int, rrc_scale: Sequence[float], rotate_degrees: float) -> list:
    if augmentation == "none":
        return []
    if augmentation == "hflip":
        return [v2.RandomHorizontalFlip(p=0.5)]
    if augmentation == "hflip_always":
        return [v2.RandomHorizontalFlip(p=1.0)]
    if augmentation == "hflip_rotate":
        return [v2.RandomHorizontalFlip(p=0.5), v2.RandomRotation(rotate_degrees)]
    if augmentation == "random_resized_crop":
        low, high = check_rrc_scale(rrc_scale)
        return [v2.RandomResizedCrop(image_size, scale=(low, high), antialias=True)]
    raise ConfigError(f"augmentation {augmentation!r} augments only some classes: "
                      "use build_dataset_transforms() or make_datasets()")


def build_transform(
    preprocessing: Preprocessing,
    augmentation: str = "none",
    train: bool = False,
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> v2.Compose:
    """PIL image -> normalised float tensor ``(3, size, size)`` as ``preprocessing`` says.

    The augmentation is used only when ``train`` is true. An unknown augmentation name raises
    :class:`~fer_utils.errors.ConfigError` listing the valid names; ``"minority"`` is valid only
    through :func:`build_dataset_transforms`, because it depends on the labels. The size and
    statistics were checked when the :class:`~fer_utils.preprocessing.Preprocessing` was made.
    """
    _check_augmentation(augmentation)
    if not isinstance(preprocessing, Preprocessing):
        raise ConfigError(f"build_transform needs a Preprocessing, got {type(preprocessing).__name__}")
    size = preprocessing.image_size
    steps = _augmentation_steps(augmentation, size, rrc_scale, rotate_degrees) if train else []
    return v2.Compose([
        v2.Resize((size, size), antialias=True),
        *steps,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
    ])


def minority_classes(labels: Iterable[int]) -> frozenset[int]:
    """Classes whose count in ``labels`` (training labels) is below the median class count."""
    counts = class_counts(labels)
    return frozenset(int(c) for c in np.flatnonzero(counts < np.median(counts)))


def build_dataset_transforms(
    labels: Iterable[int],
    augmentation: str,
    preprocessing: Preprocessing,
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> tuple[v2.Compose, v2.Compose | None, frozenset[int] | None]:
    """``(transform, augment_transform, augment_labels)`` for a *training* :class:`FERDataset`.

    ``labels`` are the training labels (used by ``"minority"`` only). For ``"minority"`` the
    plain transform has no augmentation and the minority classes get ``hflip_rotate``; for any
    other preset the augmentation applies to every sample and the last two items are ``None``.
    """
    _check_augmentation(augmentation)
    common = dict(rrc_scale=rrc_scale, rotate_degrees=rotate_degrees)
    if augmentation != "minority":
        return build_transform(preprocessing, augmentation, train=True, **common), None, None
    return (build_transform(preprocessing, "none", **common),
            build_transform(preprocessing, MINORITY_AUGMENTATION, train=True, **common),
            minority_classes(labels))


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

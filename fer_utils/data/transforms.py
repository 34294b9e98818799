"""Image transforms and augmentation presets, and the per-split torch data sets.

Every transform follows a :class:`~fer_utils.preprocessing.Preprocessing`: ``Resize((size, size))``
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

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from fer_utils.data.dataset import FERDataset
from fer_utils.data.index import SPLITS, check_index, class_counts
from fer_utils.errors import ConfigError
from fer_utils.preprocessing import AUGMENTATIONS, MINORITY_AUGMENTATION, Preprocessing


def _check_augmentation(augmentation: str) -> None:
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}")


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
        low, high = rrc_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"rrc_scale must be (low, high) with 0 < low <= high <= 1, got {tuple(rrc_scale)}")
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


def make_datasets(
    index: pd.DataFrame,
    preprocessing: Preprocessing,
    augmentation: str = "none",
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> dict[str, FERDataset]:
    """One :class:`FERDataset` per split present in ``index`` (keys in train, val, test order).

    Only ``train`` is augmented; ``val`` and ``test`` always get the plain transform.
    """
    check_index(index)
    _check_augmentation(augmentation)
    common = dict(rrc_scale=rrc_scale, rotate_degrees=rotate_degrees)
    datasets = {}
    for split in SPLITS:
        part = index[index["split"] == split]
        if part.empty:
            continue
        if split == "train":
            transform, augment_transform, augment_labels = build_dataset_transforms(
                part["label"], augmentation, preprocessing, **common)
        else:
            transform, augment_transform, augment_labels = build_transform(preprocessing, **common), None, None
        datasets[split] = FERDataset(part, transform, augment_transform, augment_labels,
                                     draft_size=preprocessing.image_size)
    return datasets

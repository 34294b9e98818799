"""Image transforms and augmentation presets, and the per-split torch data sets.

Every transform is ``Resize((size, size))`` -> [augmentation, training only] -> ``ToImage`` ->
``ToDtype(float32, scale=True)`` -> ``Normalize(mean, std)``. Augmentation presets
(:data:`AUGMENTATIONS`):

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

AUGMENTATIONS: tuple[str, ...] = ("none", "hflip", "hflip_always", "hflip_rotate", "random_resized_crop", "minority")
MINORITY_AUGMENTATION = "hflip_rotate"
"""The preset the ``minority`` augmentation applies to minority classes."""

Triple = tuple[float, float, float]


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
    image_size: int = 100,
    mean: Triple = (0.5, 0.5, 0.5),
    std: Triple = (0.5, 0.5, 0.5),
    augmentation: str = "none",
    train: bool = False,
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> v2.Compose:
    """PIL image -> normalised float tensor ``(3, image_size, image_size)``.

    The augmentation is used only when ``train`` is true. An unknown augmentation name raises
    :class:`~fer_utils.errors.ConfigError` listing the valid names; ``"minority"`` is valid only
    through :func:`build_dataset_transforms`, because it depends on the labels.
    """
    _check_augmentation(augmentation)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std must be 3 values each, std > 0; got mean={mean}, std={std}")
    steps = _augmentation_steps(augmentation, image_size, rrc_scale, rotate_degrees) if train else []
    return v2.Compose([
        v2.Resize((image_size, image_size), antialias=True),
        *steps,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def minority_classes(labels: Iterable[int]) -> frozenset[int]:
    """Classes whose count in ``labels`` (training labels) is below the median class count."""
    counts = class_counts(labels)
    return frozenset(int(c) for c in np.flatnonzero(counts < np.median(counts)))


def build_dataset_transforms(
    labels: Iterable[int],
    augmentation: str,
    image_size: int = 100,
    mean: Triple = (0.5, 0.5, 0.5),
    std: Triple = (0.5, 0.5, 0.5),
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> tuple[v2.Compose, v2.Compose | None, frozenset[int] | None]:
    """``(transform, augment_transform, augment_labels)`` for a *training* :class:`FERDataset`.

    ``labels`` are the training labels (used by ``"minority"`` only). For ``"minority"`` the
    plain transform has no augmentation and the minority classes get ``hflip_rotate``; for any
    other preset the augmentation applies to every sample and the last two items are ``None``.
    """
    _check_augmentation(augmentation)
    common = dict(image_size=image_size, mean=mean, std=std, rrc_scale=rrc_scale, rotate_degrees=rotate_degrees)
    if augmentation != "minority":
        return build_transform(augmentation=augmentation, train=True, **common), None, None
    return (build_transform(augmentation="none", **common),
            build_transform(augmentation=MINORITY_AUGMENTATION, train=True, **common),
            minority_classes(labels))


def make_datasets(
    index: pd.DataFrame,
    image_size: int = 100,
    mean: Triple = (0.5, 0.5, 0.5),
    std: Triple = (0.5, 0.5, 0.5),
    augmentation: str = "none",
    rrc_scale: tuple[float, float] = (0.8, 1.0),
    rotate_degrees: float = 15,
) -> dict[str, FERDataset]:
    """One :class:`FERDataset` per split present in ``index`` (keys in train, val, test order).

    Only ``train`` is augmented; ``val`` and ``test`` always get the plain transform.
    """
    check_index(index)
    _check_augmentation(augmentation)
    common = dict(image_size=image_size, mean=mean, std=std, rrc_scale=rrc_scale, rotate_degrees=rotate_degrees)
    datasets = {}
    for split in SPLITS:
        part = index[index["split"] == split]
        if part.empty:
            continue
        if split == "train":
            transform, augment_transform, augment_labels = build_dataset_transforms(part["label"], augmentation, **common)
        else:
            transform, augment_transform, augment_labels = build_transform(**common), None, None
        datasets[split] = FERDataset(part, transform, augment_transform, augment_labels, draft_size=image_size)
    return datasets

"""Transforms, augmentation presets and the per-split data sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import RAFDB_TRAIN_COUNTS, make_rafdb
from PIL import Image
from torchvision.transforms import v2

from fer_utils.data import (
    build_dataset_transforms,
    build_transform,
    load_rafdb,
    make_datasets,
    make_splits,
    minority_classes,
)
from fer_utils.errors import ConfigError
from fer_utils.labels import index_of
from fer_utils.preprocessing import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, Preprocessing

P32 = Preprocessing.preset(32, "half")

LEFT_WHITE = Image.fromarray(np.hstack([np.full((16, 8, 3), 255, np.uint8), np.zeros((16, 8, 3), np.uint8)]))


def is_flipped(tensor: torch.Tensor) -> bool:
    """The left end of the middle row is black: mirrored (a rotation of up to 15 degrees keeps it white)."""
    size = tensor.shape[-1]
    return bool(tensor[:, size // 2, : size // 4].mean() < 0)


def test_output_shape_dtype_and_normalisation():
    out = build_transform(P32)(Image.new("RGB", (10, 10), (255, 0, 255)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(32, 32)) and torch.allclose(out[1], -torch.ones(32, 32))
    imagenet = build_transform(Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD))
    grey = imagenet(Image.new("RGB", (8, 8), (51, 51, 51)))
    assert grey[:, 0, 0].tolist() == pytest.approx([(0.2 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], abs=1e-5)


def test_hflip_flips_about_half_seeded():
    transform = build_transform(P32, augmentation="hflip", train=True)
    torch.manual_seed(0)
    flips = [is_flipped(transform(LEFT_WHITE)) for _ in range(200)]
    assert 80 <= sum(flips) <= 120
    torch.manual_seed(0)
    assert [is_flipped(transform(LEFT_WHITE)) for _ in range(200)] == flips
    always = build_transform(P32, augmentation="hflip_always", train=True)
    assert all(is_flipped(always(LEFT_WHITE)) for _ in range(10))
    evaluation = build_transform(P32, augmentation="hflip_always", train=False)
    assert not any(is_flipped(evaluation(LEFT_WHITE)) for _ in range(10))


WHITE = Image.new("RGB", (16, 16), "white")
_RAMP = np.arange(0, 256, 4, dtype=np.uint8)
GRADIENT = Image.fromarray(np.dstack([np.tile(_RAMP, (64, 1)), np.tile(_RAMP[:, None], (1, 64)),
                                      np.full((64, 64), 128, np.uint8)]))
"""Red grows from left to right, green from top to bottom: a crop shows a narrower range of both."""
EPS = 1e-5


def augmented(augmentation: str, image: Image.Image, n: int = 40, **settings) -> list[torch.Tensor]:
    """``n`` seeded draws of the training transform with ``augmentation``."""
    transform = build_transform(P32, augmentation=augmentation, train=True, **settings)
    torch.manual_seed(0)
    return [transform(image) for _ in range(n)]


def plain(image: Image.Image) -> torch.Tensor:
    return build_transform(P32)(image)


@pytest.mark.parametrize("augmentation", ["none", "hflip", "hflip_always", "hflip_rotate", "random_resized_crop"])
def test_every_preset_keeps_shape(augmentation):
    transform = build_transform(P32, augmentation=augmentation, train=True, rrc_scale=(0.5, 1.0))
    assert transform(LEFT_WHITE).shape == (3, 32, 32)


def test_none_changes_nothing():
    for image in (LEFT_WHITE, WHITE, GRADIENT):
        assert all(torch.equal(out, plain(image)) for out in augmented("none", image))


def test_flips_mirror_the_image_and_do_nothing_else():
    same, mirrored = plain(GRADIENT), plain(GRADIENT).flip(-1)
    outs = augmented("hflip", GRADIENT)
    assert all(torch.equal(out, same) or torch.equal(out, mirrored) for out in outs)
    assert any(torch.equal(out, same) for out in outs) and any(torch.equal(out, mirrored) for out in outs)
    assert all(torch.equal(out, mirrored) for out in augmented("hflip_always", GRADIENT))


def rotated(out: torch.Tensor) -> bool:
    """A white image turned by a visible angle: black (fill) corners, a white centre."""
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    return bool((corners < 0).any() and torch.allclose(out[:, 14:18, 14:18], torch.ones(3, 4, 4)))


def test_hflip_rotate_rotates_and_mirrors():
    assert not rotated(plain(WHITE)) and not any(rotated(out) for out in augmented("hflip", WHITE))
    assert sum(map(rotated, augmented("hflip_rotate", WHITE))) >= 30        # angles of -15..15 degrees
    assert not any(rotated(out) for out in augmented("hflip_rotate", WHITE, rotate_degrees=0))
    flips = [is_flipped(out) for out in augmented("hflip_rotate", LEFT_WHITE)]
    assert 10 <= sum(flips) <= 30


def test_random_resized_crop_shows_a_part_of_the_image_scaled_up():
    full = plain(GRADIENT)
    low, high = full.amin(dim=(1, 2)), full.amax(dim=(1, 2))

    def area(out):  # the fraction of the image shown: red and green ranges relative to the whole
        return float((out[0].amax() - out[0].amin()) / (high[0] - low[0])
                     * (out[1].amax() - out[1].amin()) / (high[1] - low[1]))

    outs = augmented("random_resized_crop", GRADIENT, rrc_scale=(0.5, 1.0))
    for out in outs:     # nothing new (no fill, no overshoot), nothing mirrored or turned
        assert (out.amin(dim=(1, 2)) >= low - EPS).all() and (out.amax(dim=(1, 2)) <= high + EPS).all()
        assert (out[0].diff(dim=1) >= -EPS).all() and (out[1].diff(dim=0) >= -EPS).all()
        assert 0.4 <= area(out) <= 1 + EPS
    assert sum(area(out) < 0.9 for out in outs) >= 20
    assert area(full) == pytest.approx(1)


def test_minority_augments_only_the_minority_classes(tmp_path):
    counts = dict(enumerate([4, 1, 1, 4, 4, 1, 4], 1))        # fear, disgust, anger below the median
    make_rafdb(tmp_path, lines=[(f"train_{label}{i:04d}.jpg", label) for label, n in counts.items() for i in range(n)])
    train = make_datasets(make_splits(load_rafdb(tmp_path), val_fraction=0), P32, augmentation="minority")["train"]
    minority = {index_of("fear"), index_of("disgust"), index_of("anger")}
    assert train.batch_transform.augment_labels == minority
    images, labels = train[np.arange(len(train))]
    plain_batch = train.eval_transform(images)
    changed = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):   # the tensor path, per sample: only minority samples ever change
        out = train.batch_transform(images, labels, generator)
        changed |= {int(labels[i]) for i in range(len(train)) if not torch.equal(out[i], plain_batch[i])}
    assert changed == minority


def test_unknown_or_invalid_settings():
    with pytest.raises(ConfigError) as info:
        build_transform(P32, augmentation="mixup", train=True)
    assert all(name in str(info.value) for name in AUGMENTATIONS)
    with pytest.raises(ConfigError, match="build_dataset_transforms"):
        build_transform(P32, augmentation="minority", train=True)
    with pytest.raises(ConfigError, match="rrc_scale"):
        build_transform(P32, augmentation="random_resized_crop", train=True, rrc_scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="needs a Preprocessing"):
        build_transform(32)
    with pytest.raises(ConfigError, match=r"image_size must be an int >= 32, got 16"):
        Preprocessing.preset(16, "half")   # the one place sizes are checked


def test_minority_classes_of_rafdb():
    labels = np.repeat(np.arange(7), RAFDB_TRAIN_COUNTS)
    assert minority_classes(labels) == {index_of("fear"), index_of("disgust"), index_of("anger")}
    transform, augment, augment_labels = build_dataset_transforms(labels, "minority", P32)
    assert augment_labels == minority_classes(labels)
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in transform.transforms)
    assert any(isinstance(t, v2.RandomRotation) for t in augment.transforms)
    assert build_dataset_transforms(labels, "hflip", P32)[1:] == (None, None)


def test_make_datasets_augments_train_only(tmp_path):
    make_rafdb(tmp_path, lines=[(f"train_{i:05d}.jpg", i % 7 + 1) for i in range(1, 29)]
               + [(f"test_{i:04d}.jpg", i % 7 + 1) for i in range(1, 8)])
    index = make_splits(load_rafdb(tmp_path), val_fraction=0.25, seed=0)
    datasets = make_datasets(index, P32, augmentation="hflip_always")
    assert list(datasets) == ["train", "val", "test"]
    assert [len(d) for d in datasets.values()] == [21, 7, 7]
    image, label = datasets["test"][0]   # decoded uint8 images; the batch transform makes the inputs
    assert image.shape == (8, 8, 3) and image.dtype == torch.uint8 and isinstance(label, int)
    assert datasets["train"].batch_transform.train and datasets["train"].batch_transform.augmentation == "hflip_always"
    assert not datasets["val"].batch_transform.train and not datasets["test"].batch_transform.train
    batch, labels = datasets["test"][[0, 2]]
    assert batch.shape == (2, 8, 8, 3) and labels.tolist() == [datasets["test"][0][1], datasets["test"][2][1]]
    assert datasets["test"].batch_transform(batch).shape == (2, 3, 32, 32)
    minority = make_datasets(index, P32, augmentation="minority")
    assert minority["train"].batch_transform.augment_labels == minority_classes(
        index.loc[index["split"] == "train", "label"])
    assert minority["test"].batch_transform.augment_labels is None
    with pytest.raises(ConfigError, match="unknown augmentation"):
        make_datasets(index, P32, augmentation="flip")

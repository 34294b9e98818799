"""Augmentation presets, normalisation presets and the per-split data sets, on the tensor path
(:class:`BatchTransform`, :func:`build_batch_transforms`, :func:`make_datasets`). The per-sample
mechanics of each preset (rotation fill, random-resized-crop boxes) are in test_tensor_path.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import RAFDB_TRAIN_COUNTS, make_rafdb
from PIL import Image

from fer_utils.data import load_rafdb, make_splits
from fer_utils.data.tensor_transforms import BatchTransform, image_transform
from fer_utils.data.transforms import build_batch_transforms, make_datasets, minority_classes
from fer_utils.errors import ConfigError
from fer_utils.labels import index_of
from fer_utils.options import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, Preprocessing

P32 = Preprocessing.preset(32, "half")

LEFT_WHITE = torch.from_numpy(np.hstack([np.full((16, 8, 3), 255, np.uint8), np.zeros((16, 8, 3), np.uint8)]))
WHITE = torch.full((16, 16, 3), 255, dtype=torch.uint8)
_RAMP = np.arange(0, 256, 4, dtype=np.uint8)
GRADIENT = torch.from_numpy(np.dstack([np.tile(_RAMP, (64, 1)), np.tile(_RAMP[:, None], (1, 64)),
                                       np.full((64, 64), 128, np.uint8)]))
"""Red grows from left to right, green from top to bottom."""


def batch_of(image: torch.Tensor, n: int) -> torch.Tensor:
    return image.unsqueeze(0).expand(n, *image.shape).contiguous()


def is_flipped(tensor: torch.Tensor) -> bool:
    """The left end of the middle row is black: mirrored (a rotation of up to 15 degrees keeps it white)."""
    size = tensor.shape[-1]
    return bool(tensor[:, size // 2, : size // 4].mean() < 0)


def rotated(out: torch.Tensor) -> bool:
    """A white image turned by a visible angle: black (fill) corners, a white centre."""
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    return bool((corners < 0).any() and torch.allclose(out[:, 14:18, 14:18], torch.ones(3, 4, 4)))


def augmented(augmentation: str, image: torch.Tensor, n: int = 40, **settings) -> torch.Tensor:
    """The training transform of ``augmentation`` on a batch of ``n`` copies of ``image``, seeded."""
    transform = BatchTransform(P32, augmentation, train=True, **settings)
    return transform(batch_of(image, n), None, torch.Generator().manual_seed(0))


def plain(image: torch.Tensor) -> torch.Tensor:
    return BatchTransform(P32)(image[None])[0]


def test_output_shape_dtype_and_normalisation():
    magenta = Image.new("RGB", (10, 10), (255, 0, 255))
    out = image_transform(P32)(magenta)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(32, 32)) and torch.allclose(out[1], -torch.ones(32, 32))
    batch = BatchTransform(P32)(batch_of(torch.from_numpy(np.array(magenta)), 3))
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32 and torch.equal(batch[1], out)
    imagenet = image_transform(Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD))
    grey = imagenet(Image.new("RGB", (8, 8), (51, 51, 51)))
    assert grey[:, 0, 0].tolist() == pytest.approx([(0.2 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], abs=1e-5)


def test_hflip_flips_about_half_always_flips_all_and_evaluation_none():
    flips = [is_flipped(out) for out in augmented("hflip", LEFT_WHITE, 200)]
    assert 80 <= sum(flips) <= 120
    assert [is_flipped(out) for out in augmented("hflip", LEFT_WHITE, 200)] == flips    # seeded
    assert all(is_flipped(out) for out in augmented("hflip_always", LEFT_WHITE, 10))
    images = batch_of(LEFT_WHITE, 10)
    for preset in ("hflip", "hflip_always"):
        for evaluation in (BatchTransform(P32, preset, train=False), BatchTransform(P32, preset, train=True).for_eval()):
            assert not any(is_flipped(out) for out in evaluation(images, None, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_every_preset_keeps_shape(augmentation):
    transform = BatchTransform(P32, augmentation, train=True, rrc_scale=(0.5, 1.0),
                               augment_labels={1} if augmentation == "minority" else None)
    tall = GRADIENT[:, :40].contiguous()           # 64 x 40: not square
    for image in (LEFT_WHITE, tall):
        out = transform(batch_of(image, 4), torch.tensor([0, 1, 2, 1]), torch.Generator().manual_seed(0))
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32


def test_none_changes_nothing():
    for image in (LEFT_WHITE, WHITE, GRADIENT):
        assert all(torch.equal(out, plain(image)) for out in augmented("none", image))


def test_flips_mirror_the_image_and_do_nothing_else():
    same, mirrored = plain(GRADIENT), plain(GRADIENT).flip(-1)
    outs = augmented("hflip", GRADIENT)
    assert all(torch.equal(out, same) or torch.equal(out, mirrored) for out in outs)
    assert any(torch.equal(out, same) for out in outs) and any(torch.equal(out, mirrored) for out in outs)
    assert all(torch.equal(out, mirrored) for out in augmented("hflip_always", GRADIENT))


def test_hflip_rotate_rotates_and_mirrors():
    assert not rotated(plain(WHITE)) and not any(rotated(out) for out in augmented("hflip", WHITE))
    assert sum(map(rotated, augmented("hflip_rotate", WHITE))) >= 30        # angles of -15..15 degrees
    assert not any(rotated(out) for out in augmented("hflip_rotate", WHITE, rotate_degrees=0))
    flips = [is_flipped(out) for out in augmented("hflip_rotate", LEFT_WHITE)]
    assert 10 <= sum(flips) <= 30


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
        BatchTransform(P32, "mixup", train=True)
    assert all(name in str(info.value) for name in AUGMENTATIONS)
    with pytest.raises(ConfigError) as info:
        build_batch_transforms([0, 1, 2], "flip", P32)
    assert all(name in str(info.value) for name in AUGMENTATIONS)
    with pytest.raises(ConfigError, match="build_batch_transforms"):
        BatchTransform(P32, "minority", train=True)   # the minority classes come from the labels
    for scale in ((0.9, 0.5), (0.0, 1.0), (0.5, 1.5)):
        with pytest.raises(ConfigError, match="rrc_scale"):
            BatchTransform(P32, "random_resized_crop", train=True, rrc_scale=scale)
        with pytest.raises(ConfigError, match="rrc_scale"):
            build_batch_transforms([0, 1, 2], "random_resized_crop", P32, rrc_scale=scale)
    with pytest.raises(ConfigError, match="needs a Preprocessing"):
        BatchTransform(32)
    with pytest.raises(ConfigError, match="needs a Preprocessing"):
        image_transform(32)
    with pytest.raises(ConfigError, match=r"image_size must be an int >= 32, got 16"):
        Preprocessing.preset(16, "half")   # the one place sizes are checked


def test_minority_classes_of_rafdb():
    labels = np.repeat(np.arange(7), RAFDB_TRAIN_COUNTS)
    minority = minority_classes(labels)
    assert minority == {index_of("fear"), index_of("disgust"), index_of("anger")}
    transform = build_batch_transforms(labels, "minority", P32)
    assert transform.train and transform.augmentation == "minority" and transform.augment_labels == minority
    hflip = build_batch_transforms(labels, "hflip", P32)
    assert hflip.train and hflip.augmentation == "hflip" and hflip.augment_labels is None
    # the minority classes get hflip_rotate (turned), the others nothing at all
    batch_labels = torch.arange(70) % 7
    out = transform(batch_of(WHITE, 70), batch_labels, torch.Generator().manual_seed(0))
    selected = torch.isin(batch_labels, torch.tensor(sorted(minority)))
    assert all(torch.equal(o, plain(WHITE)) for o in out[~selected])
    assert sum(map(rotated, out[selected])) >= 20   # of 30


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
    with pytest.raises(ConfigError, match="rrc_scale"):
        make_datasets(index, P32, augmentation="random_resized_crop", rrc_scale=(0.9, 0.5))

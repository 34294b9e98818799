"""The one tensor data path: the decoded-image cache and the batch transforms (eval and training)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from datafixtures import make_fer2013, make_rafdb, pixel_text
from PIL import Image
from torchvision.transforms import v2

import fer_utils.data.decoded as decoded_module
from fer_utils.data import decoded_images, load_fer2013, load_rafdb, open_image
from fer_utils.data.dataset import FERDataset
from fer_utils.data.tensor_transforms import BatchTransform
from fer_utils.data.tensor_transforms import RRC_RATIO, image_transform, rrc_boxes
from fer_utils.errors import ConfigError
from fer_utils.options import Preprocessing

P32 = Preprocessing(32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


@pytest.fixture
def rafdb(tmp_path):
    make_rafdb(tmp_path / "rafdb")
    return load_rafdb(tmp_path / "rafdb")


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts the images decoded by the decoded-image cache."""
    calls = []
    real = decoded_module.load_rgb

    def counted(path, pixels, draft_size=None):
        calls.append(path)
        return real(path, pixels, draft_size)
    monkeypatch.setattr(decoded_module, "load_rgb", counted)
    return calls


def imagefolder_index(tmp_path, sizes) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        rows.append({"id": str(i), "path": str(path), "pixels": None, "label": i % 7, "split": "train",
                     "source": "imagefolder"})
    return pd.DataFrame(rows)


# --- the decoded-image cache ------------------------------------------------------------------

def test_decoded_cache_decodes_once_and_memory_maps(rafdb, tmp_path, decode_calls):
    cache = tmp_path / "cache"
    first = decoded_images(rafdb, cache)
    assert len(decode_calls) == len(rafdb)
    assert isinstance(first, np.memmap) and first.dtype == np.uint8 and first.shape == (len(rafdb), 8, 8, 3)
    for i in (0, 5, len(rafdb) - 1):
        assert np.array_equal(first[i], np.asarray(open_image(rafdb.iloc[i])))
    files = list((cache / "decoded").rglob("*.npy"))
    assert len(files) == 1 and not list(cache.rglob("*.tmp"))
    second = decoded_images(rafdb, cache)
    assert len(decode_calls) == len(rafdb)                 # a hit decodes nothing
    assert isinstance(second, np.memmap) and np.array_equal(first, second)
    assert not second.flags.writeable


def test_decoded_cache_is_keyed_by_content_and_order(rafdb, tmp_path, decode_calls):
    cache = tmp_path / "cache"
    decoded_images(rafdb, cache)
    decoded_images(rafdb.iloc[::-1], cache)                # another order: another array
    assert len(list((cache / "decoded").rglob("*.npy"))) == 2
    count = len(decode_calls)
    with open(rafdb.iloc[0]["path"], "ab") as handle:     # same pixels, other bytes: a miss
        handle.write(b"\0")
    decoded_images(rafdb, cache)
    assert len(decode_calls) == count + len(rafdb)
    assert len(list((cache / "decoded").rglob("*.npy"))) == 3


def test_decoded_in_memory_without_cache_and_from_pixels(tmp_path):
    index = load_fer2013(make_fer2013(tmp_path / "fer.csv", [("2", "Training", pixel_text(9)),
                                                             ("3", "Training", pixel_text(200))]))
    images = decoded_images(index)
    assert type(images) is np.ndarray and images.shape == (2, 48, 48, 3)
    assert images[0, 0, 0].tolist() == [9, 9, 9]
    assert all(np.array_equal(images[i], np.asarray(open_image(index.iloc[i]))) for i in range(2))
    assert not list(tmp_path.rglob("*.npy"))
    cached = decoded_images(index, tmp_path / "cache")
    assert isinstance(cached, np.memmap) and np.array_equal(cached, images)


def test_mixed_sizes_are_resized_once_with_pil_to_the_store_size(tmp_path):
    index = imagefolder_index(tmp_path, [(40, 30), (20, 50), (64, 64)])
    images = decoded_images(index, tmp_path / "cache", store_size=32)
    assert images.shape == (3, 32, 32, 3)
    expected = np.asarray(open_image(index.iloc[0]).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(images[0], expected)
    with pytest.raises(ConfigError, match="store_size"):
        decoded_images(index)
    (tmp_path / "same").mkdir()
    same = imagefolder_index(tmp_path / "same", [(40, 30)] * 2)
    assert decoded_images(same, store_size=32).shape == (2, 30, 40, 3)   # a common size is kept


def test_dataset_batches_and_pickles_the_memmap_by_name(rafdb, tmp_path):
    dataset = FERDataset(rafdb, batch_transform=BatchTransform(P32), cache_dir=tmp_path / "cache")
    images, labels = dataset[[3, 1, 2]]
    assert images.shape == (3, 8, 8, 3) and images.dtype == torch.uint8
    assert torch.equal(images[0], dataset[3][0]) and labels.tolist() == [dataset[i][1] for i in (3, 1, 2)]
    payload = pickle.dumps(dataset)
    assert len(payload) < dataset.images.nbytes            # the file name, not the pixels
    clone = pickle.loads(payload)
    assert isinstance(clone.images, np.memmap) and torch.equal(clone[[3, 1, 2]][0], images)


# --- the evaluation path -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 100, 100, 3), (2, 3, 48, 48), (3, 20, 28, 3), (2, 32, 32, 3)])
def test_eval_equals_torchvision_v2_on_tensors(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    nchw = images if shape[1] == 3 else images.permute(0, 3, 1, 2)
    reference = v2.Compose([v2.Resize((32, 32), antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(P32.mean), list(P32.std))])
    out = BatchTransform(P32)(images)
    assert out.shape == (shape[0], 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(nchw.contiguous()), atol=1e-5, rtol=0)
    single = image_transform(P32)(Image.fromarray(images[0].numpy()) if shape[3] == 3 else nchw[0].permute(1, 2, 0))
    torch.testing.assert_close(single, out[0], atol=0, rtol=0)


def test_training_transform_evaluates_without_augmentation():
    images = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    for preset in ("hflip", "hflip_rotate", "random_resized_crop"):
        train = BatchTransform(P32, preset, train=True)
        assert torch.equal(train.for_eval()(images), BatchTransform(P32)(images))
        assert torch.equal(BatchTransform(P32, preset, train=False)(images), BatchTransform(P32)(images))


# --- training: every preset, per-sample randomness ------------------------------------------------

LEFT_WHITE = torch.from_numpy(np.hstack([np.full((16, 8, 3), 255, np.uint8), np.zeros((16, 8, 3), np.uint8)]))
_RAMP = np.arange(0, 256, 4, dtype=np.uint8)
GRADIENT = torch.from_numpy(np.dstack([np.tile(_RAMP, (64, 1)), np.tile(_RAMP[:, None], (1, 64)),
                                       np.full((64, 64), 128, np.uint8)]))
"""Red grows from left to right, green from top to bottom."""


def batch_of(image: torch.Tensor, n: int = 64) -> torch.Tensor:
    return image.unsqueeze(0).expand(n, *image.shape).contiguous()


@pytest.mark.parametrize("preset", ["none", "hflip", "hflip_always", "hflip_rotate", "random_resized_crop", "minority"])
def test_every_preset_gives_finite_inputs_and_repeats_for_a_seed(preset):
    transform = BatchTransform(P32, preset, train=True, rrc_scale=(0.5, 1.0),
                               augment_labels={1, 2} if preset == "minority" else None)
    images = torch.randint(0, 256, (16, 40, 40, 3), dtype=torch.uint8)
    labels = torch.arange(16) % 7
    out = transform(images, labels, torch.Generator().manual_seed(5))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.is_contiguous()   # plain NCHW from NHWC images: channels-last only when a caller asks
    assert torch.equal(out, transform(images, labels, torch.Generator().manual_seed(5)))
    if preset != "none":
        assert not torch.equal(out, BatchTransform(P32)(images))


def test_hflip_is_drawn_per_sample():
    images = batch_of(LEFT_WHITE)
    plain = BatchTransform(P32)(images)[0]
    out = BatchTransform(P32, "hflip", train=True)(images, None, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, plain.flip(-1)) for o in out]
    assert all(f or torch.equal(o, plain) for f, o in zip(flipped, out))
    assert 16 <= sum(flipped) <= 48                         # some flipped, some not, in one batch
    always = BatchTransform(P32, "hflip_always", train=True)(images, None, torch.Generator().manual_seed(0))
    assert all(torch.equal(o, plain.flip(-1)) for o in always)


def test_rotation_is_drawn_per_sample_with_black_fill():
    white = batch_of(torch.full((32, 32, 3), 255, dtype=torch.uint8), 40)
    transform = BatchTransform(Preprocessing(32, (0.5,) * 3, (0.5,) * 3), "hflip_rotate", train=True)
    out = transform(white, None, torch.Generator().manual_seed(0))
    corners = out[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    turned = (corners < 0).flatten(1).any(1)               # fill 0 -> -1 after normalising
    assert turned.sum() >= 30 and torch.allclose(out[:, :, 14:18, 14:18], torch.ones(40, 3, 4, 4))
    assert len({round(float((o < 0).float().mean()), 4) for o in out}) > 10   # per-sample angles
    still = BatchTransform(P32, "hflip_rotate", train=True, rotate_degrees=0)(
        batch_of(GRADIENT, 8), None, torch.Generator().manual_seed(0))
    plain = BatchTransform(P32)(GRADIENT[None])[0]
    assert all(torch.equal(o, plain) or torch.equal(o, plain.flip(-1)) for o in still)


def test_rrc_boxes_follow_torchvision_rule_per_sample():
    boxes = rrc_boxes(500, 32, (0.3, 0.9), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert ((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32) & (h > 0) & (w > 0)).all()
    area = h * w / 32 ** 2
    # rounding w and h to whole pixels moves the area and ratio a little past the bounds
    assert area.min() >= 0.3 - 0.06 and area.max() <= 0.9 + 0.06
    ratio = w / h
    assert ratio.min() >= RRC_RATIO[0] - 0.1 and ratio.max() <= RRC_RATIO[1] + 0.1
    assert len({tuple(b.tolist()) for b in boxes}) > 300   # one box per sample
    # no try fits (scale > 1 is impossible for the areas drawn): the whole image
    fallback = rrc_boxes(4, 8, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(3.0, 4.0))
    assert fallback.tolist() == [[0, 0, 8, 8]] * 4


def test_random_resized_crop_shows_a_part_scaled_up_per_sample():
    prep = Preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    full = BatchTransform(prep)(GRADIENT[None])[0]
    low, high = full.amin(dim=(1, 2)), full.amax(dim=(1, 2))

    def area(out):
        return float((out[0].amax() - out[0].amin()) / (high[0] - low[0])
                     * (out[1].amax() - out[1].amin()) / (high[1] - low[1]))
    outs = BatchTransform(prep, "random_resized_crop", train=True, rrc_scale=(0.5, 1.0))(
        batch_of(GRADIENT, 40), None, torch.Generator().manual_seed(0))
    eps = 1e-4
    for out in outs:   # nothing new (no fill, no overshoot), nothing mirrored or turned
        assert (out.amin(dim=(1, 2)) >= low - 0.02).all() and (out.amax(dim=(1, 2)) <= high + 0.02).all()
        assert (out[0].diff(dim=1) >= -eps).all() and (out[1].diff(dim=0) >= -eps).all()
        assert 0.35 <= area(out) <= 1.05
    assert len({round(area(o), 3) for o in outs}) > 20     # per-sample boxes
    assert sum(area(o) < 0.9 for o in outs) >= 15


def test_minority_touches_only_minority_labels():
    images = torch.randint(0, 256, (64, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(64) % 7
    plain = BatchTransform(P32)(images)
    out = BatchTransform(P32, "minority", train=True, augment_labels={1, 5})(images, labels,
                                                                             torch.Generator().manual_seed(0))
    changed = {int(labels[i]) for i in range(64) if not torch.equal(out[i], plain[i])}
    assert changed == {1, 5}
    with pytest.raises(ConfigError, match="augment_labels"):
        BatchTransform(P32, "minority", train=True)
    with pytest.raises(ValueError, match="labels"):
        BatchTransform(P32, "minority", train=True, augment_labels={1})(images)


def test_bad_inputs_and_settings():
    with pytest.raises(TypeError, match="uint8"):
        BatchTransform(P32)(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="unknown augmentation"):
        BatchTransform(P32, "mixup", train=True)
    with pytest.raises(ConfigError, match="rrc_scale"):
        BatchTransform(P32, "random_resized_crop", train=True, rrc_scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="Preprocessing"):
        BatchTransform(32)
    assert math.isclose(BatchTransform(P32, "hflip_rotate", rotate_degrees=10).rotate_degrees, 10)

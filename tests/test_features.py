"""Feature extraction: correct vectors, and a per-image cache that computes only what it lacks."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_utils.data import file_sha256, fingerprint, open_image
from fer_utils.data.dataset import FERDataset
from fer_utils.data.tensor_transforms import eval_transform, image_transform
from fer_utils.data.fingerprint import image_hashes
from fer_utils.errors import DataError
from fer_utils.cache import Cache
from fer_utils.training.features import CACHE_FORMAT, CACHE_NAMESPACE, extract_features, feature_keys
from fer_utils.models import create_model
from fer_utils.options import Preprocessing

PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def index(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        path = tmp_path / "images" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path, quality=90)
        rows.append({"id": f"img{i}", "path": str(path), "pixels": None, "label": i % 7, "split": "test",
                     "source": "imagefolder"})
    grey = rng.integers(0, 256, (48, 48), dtype=np.uint8)  # an in-memory FER2013-style sample
    rows.append({"id": "fer0", "path": None, "pixels": grey, "label": 3, "split": "test", "source": "fer2013"})
    return pd.DataFrame(rows)


@pytest.fixture
def counted_model():
    """A ResNet18 whose feature forward passes and images are counted (a plain forward hook, no mocks)."""
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    model.calls = model.images = 0

    def count(module, inputs, output):
        model.calls += 1
        model.images += len(output)

    model.features.register_forward_hook(count)
    return model


def test_features_are_the_penultimate_vectors(index, counted_model):
    ids, features = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=0, device="cpu")
    assert ids == index["id"].tolist()
    assert features.shape == (11, 512) and features.dtype == np.float32
    assert counted_model.calls == 3  # 11 images in batches of 4
    transform = image_transform(PREPROCESSING)  # the serving path: the same numbers
    x = torch.stack([transform(open_image(row)) for _, row in index.iterrows()])
    with torch.no_grad():
        expected = counted_model.forward_features(x).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_uint8_batches_transformed_per_batch_give_the_per_image_tensors(index):
    """The data set's uint8 batches, resized and normalised per batch (what extract_features feeds the
    model) == the per-image serving transform of each image, bit for bit."""
    preprocessing = Preprocessing(32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    jpegs = index.iloc[:10]   # one size (24 px): one decoded array, no resizing on decoding
    dataset = FERDataset(jpegs, batch_transform=eval_transform(preprocessing))
    images, _ = dataset[np.arange(len(dataset))]
    assert images.dtype == torch.uint8 and images.shape == (10, 24, 24, 3)
    single = image_transform(preprocessing)
    assert torch.equal(dataset.eval_transform(images), torch.stack([single(open_image(row)) for _, row in jpegs.iterrows()]))


def test_worker_processes_give_the_same_features(index, counted_model):
    _, in_process = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=0, device="cpu")
    _, workers = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=1, device="cpu")
    np.testing.assert_array_equal(in_process, workers)


def extract(model, index, cache, preprocessing=PREPROCESSING):
    """``(features, images computed)`` of one cached extraction."""
    before = model.images
    _, features = extract_features(model, index, preprocessing, batch_size=16, num_workers=0, device="cpu",
                                   cache_dir=cache)
    return features, model.images - before


def test_cache_hits_only_when_nothing_changed(index, counted_model, tmp_path):
    cache = tmp_path / "cache"
    first, computed = extract(counted_model, index, cache)
    assert computed == 11 and len(list((cache / CACHE_NAMESPACE).rglob("*.npy"))) == 11  # one entry per image
    second, computed = extract(counted_model, index, cache)
    assert computed == 0
    np.testing.assert_array_equal(first, second)

    # one byte appended to one JPEG (decoders ignore trailing bytes: same pixels, other content hash)
    with open(index.loc[3, "path"], "ab") as handle:
        handle.write(b"\0")
    again, computed = extract(counted_model, index, cache)
    assert computed == 1
    others = index.index != 3
    np.testing.assert_array_equal(again[others], first[others])  # read from the cache
    np.testing.assert_allclose(again[3], first[3], rtol=1e-4, atol=1e-5)  # same pixels, batch of one
    assert extract(counted_model, index, cache)[1] == 0

    with torch.no_grad():
        counted_model.features[0].weight[0, 0, 0, 0] += 1e-3
    assert extract(counted_model, index, cache)[1] == 11
    assert extract(counted_model, index, cache, Preprocessing(32, (0.4, 0.5, 0.5), (0.5, 0.5, 0.5)))[1] == 11
    assert len(list((cache / CACHE_NAMESPACE).rglob("*.npy"))) == 11 + 1 + 11 + 11  # one entry per key, none overwritten
    assert not list(cache.rglob("*.tmp"))


def test_a_larger_index_computes_only_the_rows_it_lacks(index, counted_model, tmp_path):
    cache = tmp_path / "cache"
    _, uncached = extract_features(counted_model, index, PREPROCESSING, num_workers=0, device="cpu")
    _, computed = extract(counted_model, index.iloc[2:7], cache)  # a subset (a shard, a split) first
    assert computed == 5
    shuffled = index.sample(frac=1, random_state=1)
    shuffled = pd.concat([shuffled, shuffled.iloc[:2]])  # two images twice: computed once
    before = counted_model.images
    ids, features = extract_features(counted_model, shuffled, PREPROCESSING, batch_size=16, num_workers=0,
                                     device="cpu", cache_dir=cache)
    assert counted_model.images - before == 6 and ids == shuffled["id"].tolist()
    order = [index["id"].tolist().index(i) for i in ids]
    np.testing.assert_allclose(features, uncached[order], rtol=1e-5, atol=1e-6)


def test_keys_follow_content_not_names(index, counted_model, tmp_path):
    cache = Cache(tmp_path, CACHE_NAMESPACE, CACHE_FORMAT)
    keys = feature_keys(cache, index, counted_model, PREPROCESSING, "forward_features", "float32")
    renamed = index.assign(id=[f"other{i}" for i in range(len(index))])
    assert feature_keys(cache, renamed, counted_model, PREPROCESSING, "forward_features", "float32") == keys
    assert len(set(keys)) == len(keys)
    for layer, precision in (("output", "float32"), ("forward_features", "torch.bfloat16")):
        other = feature_keys(cache, index, counted_model, PREPROCESSING, layer, precision)
        assert not set(other) & set(keys)


def test_corrupt_entry_is_recomputed(index, counted_model, tmp_path):
    cache = tmp_path / "cache"
    first, _ = extract(counted_model, index, cache)
    path = sorted((cache / CACHE_NAMESPACE).rglob("*.npy"))[4]
    path.write_bytes(path.read_bytes()[:100])
    again, computed = extract(counted_model, index, cache)
    assert computed == 1
    assert (again != first).any(axis=1).sum() <= 1  # the other rows come from the cache
    np.testing.assert_allclose(again, first, rtol=1e-4, atol=1e-5)
    assert extract(counted_model, index, cache)[1] == 0


def test_no_cache_dir_writes_nothing(index, counted_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert extract(counted_model, index, None)[1] == 11
    assert extract(counted_model, index, None)[1] == 11
    assert list(tmp_path.iterdir()) == [tmp_path / "images"]
    with pytest.raises(ValueError, match="index is empty"):
        extract(counted_model, index.iloc[:0], tmp_path / "cache")


# --- the one image content hash (fer_utils.data.fingerprint), shared by fingerprints and cache keys ---

@pytest.fixture
def fixed_index(tmp_path) -> pd.DataFrame:
    """Files of fixed bytes (no encoder in the way) and one in-memory sample."""
    rows = []
    for i in range(6):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(bytes(range(i, 256)) * 3)
        rows.append({"id": f"img{i}", "path": str(path), "pixels": None, "label": i % 7,
                     "split": ("train", "val", "test")[i % 3], "source": "imagefolder"})
    rows.append({"id": "fer0", "path": None, "pixels": np.arange(48 * 48, dtype=np.uint8).reshape(48, 48),
                 "label": 3, "split": "test", "source": "fer2013"})
    return pd.DataFrame(rows)


def test_fingerprints_are_unchanged(fixed_index):
    """Values computed with the fingerprint code before image_hashes was shared (git HEAD at the time)."""
    assert fingerprint(fixed_index) == "3ff60cde5193dd48"
    assert fingerprint(fixed_index, content=False) == "2c72ee03c9c69392"
    assert fingerprint(fixed_index[fixed_index["split"] == "test"]) == "5ee95a0b3948d5fa"


def test_precomputed_hashes_read_each_file_once(fixed_index):
    hashes = dict(zip(fixed_index["id"], image_hashes(fixed_index)))
    test = fixed_index[fixed_index["split"] == "test"]
    expected = fingerprint(test)
    for path in fixed_index["path"].dropna():
        Path(path).unlink()  # from here on, only the mapping can give content hashes
    assert fingerprint(test, hashes=hashes) == expected
    assert fingerprint(fixed_index, hashes=hashes) == "3ff60cde5193dd48"
    partial = {k: v for k, v in hashes.items() if k != "img2"}
    with pytest.raises(DataError, match="img2.jpg: cannot read"):  # a row the mapping lacks is hashed
        fingerprint(test, hashes=partial)


def test_image_hashes_follow_content_in_index_order(fixed_index):
    hashes = image_hashes(fixed_index)
    assert len(set(hashes)) == len(hashes) == 7
    assert image_hashes(fixed_index.iloc[::-1]) == hashes[::-1]
    assert hashes[0] == file_sha256(fixed_index.loc[0, "path"])
    nothing = fixed_index.iloc[:1].assign(path=[None])
    with pytest.raises(DataError, match="sample img0: neither an image path nor pixels"):
        image_hashes(nothing)

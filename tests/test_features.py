"""Feature extraction: correct vectors, and a cache that hits only when nothing changed."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_utils.data import build_transform, open_image
from fer_utils.features import extract_features, split_transform
from fer_utils.models import Preprocessing, create_model

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
    """A ResNet18 whose feature forward passes are counted (a plain forward hook, no mocks)."""
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    model.calls = 0

    def count(module, inputs, output):
        model.calls += 1

    model.features.register_forward_hook(count)
    return model


def test_features_are_the_penultimate_vectors(index, counted_model):
    ids, features = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=0, device="cpu")
    assert ids == index["id"].tolist()
    assert features.shape == (11, 512) and features.dtype == np.float32
    assert counted_model.calls == 3  # 11 images in batches of 4
    transform = build_transform(32, PREPROCESSING.mean, PREPROCESSING.std)
    x = torch.stack([transform(open_image(row)) for _, row in index.iterrows()])
    with torch.no_grad():
        expected = counted_model.forward_features(x).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_split_transform_gives_the_same_tensors(index):
    """Per-image uint8 steps then per-batch float steps == the full per-image transform, bit for bit."""
    full = build_transform(32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    per_image, per_batch = split_transform(full)
    images = [open_image(row) for _, row in index.iterrows()]
    assert per_image(images[0]).dtype == torch.uint8
    batch = per_batch(torch.stack([per_image(im) for im in images]))
    assert torch.equal(batch, torch.stack([full(im) for im in images]))


def test_worker_processes_give_the_same_features(index, counted_model):
    _, in_process = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=0, device="cpu")
    _, workers = extract_features(counted_model, index, PREPROCESSING, batch_size=4, num_workers=1, device="cpu")
    np.testing.assert_array_equal(in_process, workers)


def test_cache_hits_only_when_nothing_changed(index, counted_model, tmp_path):
    cache = tmp_path / "cache"

    def run(model=counted_model, preprocessing=PREPROCESSING):
        before = model.calls
        _, features = extract_features(model, index, preprocessing, batch_size=16, num_workers=0, device="cpu",
                                       cache_dir=cache)
        return features, model.calls > before

    first, computed = run()
    assert computed and len(list(cache.glob("resnet18-*.safetensors"))) == 1
    second, computed = run()
    assert not computed
    np.testing.assert_array_equal(first, second)

    # one byte appended to one JPEG (decoders ignore trailing bytes: same pixels, other content hash)
    with open(index.loc[3, "path"], "ab") as handle:
        handle.write(b"\0")
    _, computed = run()
    assert computed
    _, computed = run()
    assert not computed

    with torch.no_grad():
        counted_model.features[0].weight[0, 0, 0, 0] += 1e-3
    _, computed = run()
    assert computed

    _, computed = run(preprocessing=Preprocessing(32, (0.4, 0.5, 0.5), (0.5, 0.5, 0.5)))
    assert computed
    assert len(list(cache.glob("*.safetensors"))) == 4  # one file per key, none overwritten


def test_corrupt_cache_file_is_recomputed(index, counted_model, tmp_path):
    cache = tmp_path / "cache"
    _, first = extract_features(counted_model, index, PREPROCESSING, num_workers=0, device="cpu", cache_dir=cache)
    (path,) = cache.glob("*.safetensors")
    path.write_bytes(b"truncated")
    calls = counted_model.calls
    _, again = extract_features(counted_model, index, PREPROCESSING, num_workers=0, device="cpu", cache_dir=cache)
    assert counted_model.calls > calls
    np.testing.assert_array_equal(first, again)

"""Model bundles: save -> load -> identical predictions; clear errors for bad bundles."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fer_utils.data import build_transform
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO
from fer_utils.models import Preprocessing, create_model
from fer_utils.predict import Predictor, find_latest_bundle, save_bundle

PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet18").eval()


@pytest.fixture
def bundle(tmp_path, model):
    return save_bundle(tmp_path / "bundle", model, "resnet18", PREPROCESSING, metrics={"accuracy": 0.5},
                       provenance={"seed": 42})


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(1)
    pil = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
    grey = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    return [pil, str(path), grey]


def test_round_trip_gives_identical_predictions(bundle, model, images):
    predictor = Predictor.from_bundle(bundle)
    proba = predictor.predict(images)
    transform = build_transform(32, PREPROCESSING.mean, PREPROCESSING.std)
    rgb = [images[0], Image.open(images[1]).convert("RGB"), Image.fromarray(images[2]).convert("RGB")]
    with torch.no_grad():
        expected = model(torch.stack([transform(im) for im in rgb])).softmax(1)
    assert proba.shape == (3, 7)
    assert torch.equal(torch.from_numpy(proba), expected)
    assert predictor.preprocessing == PREPROCESSING
    for name, tensor in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[name], tensor)


def test_predict_labeled(bundle, images):
    predictor = Predictor.from_bundle(bundle / "bundle.json")
    results = predictor.predict_labeled(images)
    proba = predictor.predict(images)
    for row, result in zip(proba, results):
        assert result["label"] == EMOTIONS[row.argmax()]
        assert result["label_ko"] == EMOTIONS_KO[row.argmax()]
        assert list(result["probabilities"]) == list(EMOTIONS)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_manifest_contents(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1 and manifest["architecture"] == "resnet18"
    assert manifest["num_classes"] == 7
    assert manifest["labels"] == list(EMOTIONS) and manifest["labels_ko"] == list(EMOTIONS_KO)
    assert manifest["preprocessing"] == PREPROCESSING.to_dict()
    assert manifest["metrics"] == {"accuracy": 0.5} and manifest["provenance"] == {"seed": 42}
    assert len(manifest["weights_sha256"]) == 64
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json", "model.safetensors"]


def test_bad_bundles_name_the_file(bundle, model):
    manifest_file, weights = bundle / "bundle.json", bundle / "model.safetensors"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))

    manifest_file.write_text(json.dumps({**manifest, "architecture": "alexnet"}), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest_file}.*unknown architecture 'alexnet'"):
        Predictor.from_bundle(bundle)

    manifest_file.write_text(json.dumps({**manifest, "architecture": "densenet121"}), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{weights}: weights do not fit architecture 'densenet121'"):
        Predictor.from_bundle(bundle)

    manifest_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest_file}: not valid JSON"):
        Predictor.from_bundle(bundle)

    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match=rf"{weights}: contents do not match the weights_sha256"):
        Predictor.from_bundle(bundle)

    weights.unlink()
    with pytest.raises(WeightsNotFoundError, match=rf"{weights}: model weights missing"):
        Predictor.from_bundle(bundle)


def test_failed_save_keeps_the_existing_bundle(bundle, model):
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        save_bundle(bundle, model, "resnet18", PREPROCESSING, metrics={"bad": object()})
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    with pytest.raises(ConfigError, match="'densenet121' is not registered or not the model's"):
        save_bundle(bundle, model, "densenet121", PREPROCESSING)


def test_unreadable_image_is_named(bundle, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match=str(missing)):
        Predictor.from_bundle(bundle).predict([missing])


def test_find_latest_bundle(tmp_path, model):
    with pytest.raises(WeightsNotFoundError, match=rf"under {tmp_path / 'runs'}"):
        find_latest_bundle(tmp_path / "runs")
    old = save_bundle(tmp_path / "runs" / "a" / "bundle", model, "resnet18", PREPROCESSING)
    new = save_bundle(tmp_path / "runs" / "b" / "bundle", model, "resnet18", PREPROCESSING)
    os.utime(old / "bundle.json", (1_000_000, 1_000_000))
    assert find_latest_bundle(tmp_path / "runs") == new
    os.utime(new / "bundle.json", (500_000, 500_000))
    assert find_latest_bundle(tmp_path / "runs") == old


def test_predictor_on_files_matches_evaluation_on_the_test_split(tmp_path, synthetic_rafdb):
    """The one inference path decodes and preprocesses images exactly as training/evaluation do."""
    from fer_utils.data import load_dataset, make_datasets
    from fer_utils.evaluate import predict_proba

    torch.manual_seed(1)
    prep = Preprocessing(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    model = create_model("resnet18")
    index = load_dataset(synthetic_rafdb)
    test = index[index["split"] == "test"].head(8)
    expected = predict_proba(model, make_datasets(test, prep.image_size, prep.mean, prep.std)["test"],
                             device="cpu", num_workers=0)
    bundle = save_bundle(tmp_path / "b", model, "resnet18", prep)
    got = Predictor.from_bundle(bundle).predict(test["path"].tolist())
    np.testing.assert_allclose(got, expected, atol=1e-5)

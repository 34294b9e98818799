"""Model bundles: save -> load -> identical predictions; clear errors for bad bundles."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fer_utils.data.tensor_transforms import BatchTransform, image_transform
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO
from fer_utils.models import create_model
from fer_utils.inference.bundle import bundle_summary, choose_bundle, list_bundles, save_bundle
from fer_utils.inference.predict import Predictor
from fer_utils.options import Preprocessing

PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DATA = {"name": "synthetic", "fingerprint": "0123456789abcdef", "synthetic": True}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet18").eval()


@pytest.fixture
def bundle(tmp_path, model):
    return save_bundle(tmp_path / "bundle", model, "resnet18", PREPROCESSING,
                       metrics={"accuracy": 0.5, "val_macro_f1": 0.4}, data=DATA, provenance={"seed": 42})


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
    transform = image_transform(PREPROCESSING)
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
    assert manifest["metrics"] == {"accuracy": 0.5, "val_macro_f1": 0.4} and manifest["provenance"] == {"seed": 42}
    assert manifest["data"] == DATA
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
        save_bundle(bundle, model, "resnet18", PREPROCESSING, metrics={"bad": object()}, data=DATA)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    with pytest.raises(ConfigError, match="'densenet121' is not registered or not the model's"):
        save_bundle(bundle, model, "densenet121", PREPROCESSING, metrics={}, data=DATA)
    with pytest.raises(ConfigError, match="data record lacks fingerprint, synthetic"):
        save_bundle(bundle, model, "resnet18", PREPROCESSING, metrics={}, data={"name": "x"})
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


def test_unreadable_image_is_named(bundle, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match=str(missing)):
        Predictor.from_bundle(bundle).predict([missing])


def test_choose_bundle_takes_the_best_validation_score_for_the_data_never_the_newest(tmp_path, model):
    runs = tmp_path / "runs"
    with pytest.raises(WeightsNotFoundError, match=rf"no model bundle .* under {runs}"):
        choose_bundle(runs, DATA["fingerprint"])

    def save(name, val, test, data=DATA):
        return save_bundle(runs / name / "bundle", model, "resnet18", PREPROCESSING,
                           metrics={"val_macro_f1": val, "macro_f1": test}, data=data)

    best_val = save("a", val=0.7, test=0.2)
    save("b", val=0.5, test=0.9)                     # better on test: must not matter
    save("c", val=0.9, test=0.9, data={**DATA, "name": "rafdb", "fingerprint": "ffff"})  # other data
    newest = save("d", val=0.1, test=0.1)
    assert newest.stat().st_mtime >= best_val.stat().st_mtime
    chosen = choose_bundle(runs, DATA["fingerprint"])
    assert chosen["path"] == str(best_val) and chosen["val_macro_f1"] == 0.7 and chosen["model"] == "resnet18"
    assert choose_bundle(runs, "ffff")["path"] == str(runs / "c" / "bundle")
    with pytest.raises(WeightsNotFoundError, match=r"bundles found for other data: rafdb \(ffff\), synthetic"):
        choose_bundle(runs, "0000")


def test_bundles_without_a_validation_score_or_weights_are_skipped_with_a_reason(tmp_path, model):
    runs = tmp_path / "runs"
    no_val = save_bundle(runs / "a" / "bundle", model, "resnet18", PREPROCESSING, metrics={}, data=DATA)
    no_weights = save_bundle(runs / "b" / "bundle", model, "resnet18", PREPROCESSING,
                             metrics={"val_macro_f1": 0.3}, data=DATA)
    (no_weights / "model.safetensors").unlink()
    broken = runs / "c" / "bundle"
    broken.mkdir(parents=True)
    (broken / "bundle.json").write_text("{", encoding="utf-8")
    servable, skipped = list_bundles(runs)
    assert servable == []
    assert len(skipped) == 3 and any(str(no_val) in s and "validation" in s for s in skipped)
    assert any(str(broken) in s and "not valid JSON" in s for s in skipped)
    with pytest.raises(WeightsNotFoundError, match="3 unusable bundle folder"):
        choose_bundle(runs, DATA["fingerprint"])
    assert bundle_summary(no_val)["data"] == DATA


def test_predictor_on_files_matches_evaluation_on_the_test_split(tmp_path, synthetic_rafdb):
    """The one inference path decodes and preprocesses images exactly as training/evaluation do."""
    from fer_utils.data import load_dataset
    from fer_utils.data.transforms import make_datasets
    from fer_utils.training.evaluate import predict_proba

    torch.manual_seed(1)
    prep = Preprocessing.preset(48, "half")
    model = create_model("resnet18")
    index = load_dataset(synthetic_rafdb)
    test = index[index["split"] == "test"].head(8)
    expected = predict_proba(model, make_datasets(test, prep)["test"], device="cpu", num_workers=0)
    bundle = save_bundle(tmp_path / "b", model, "resnet18", prep, metrics={}, data=DATA)
    got = Predictor.from_bundle(bundle).predict(test["path"].tolist())
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- hostile bundles: every manifest check can fail ---------------------------------------------

def _rewrite(bundle, **changes):
    """Rewrite bundle.json with ``changes`` (a value of ``...`` deletes the key); return its path."""
    file = bundle / "bundle.json"
    manifest = json.loads(file.read_text(encoding="utf-8"))
    manifest.update(changes)
    manifest = {k: v for k, v in manifest.items() if v is not ...}
    file.write_text(json.dumps(manifest), encoding="utf-8")
    return file


@pytest.mark.parametrize("key", ["architecture", "num_classes", "labels", "labels_ko", "preprocessing",
                                 "weights_sha256"])
def test_a_missing_manifest_key_is_named(bundle, key):
    file = _rewrite(bundle, **{key: ...})
    for load in (Predictor.from_bundle, bundle_summary):
        with pytest.raises(DataError, match=rf"{file}: missing key\(s\) {key}$"):
            load(bundle)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_an_unsupported_format_version_is_refused(bundle, version):
    file = _rewrite(bundle, format_version=version)
    with pytest.raises(DataError, match=rf"{file}: format_version {version!r} is not supported"):
        Predictor.from_bundle(bundle)


REORDERED = list(EMOTIONS[1:]) + [EMOTIONS[0]]


@pytest.mark.parametrize("changes, problem", [
    ({"labels": REORDERED}, r"labels \['fear', .*\] are not .*\('surprise', 'fear', .*\) in that order"),
    ({"labels": " ".join(EMOTIONS)}, r"labels 'surprise fear .*' are not"),
    ({"labels": list(EMOTIONS[:6])}, r"labels \[.*\] are not"),
    ({"labels_ko": list(reversed(EMOTIONS_KO))}, r"labels_ko \['중립', .*\] are not \('놀람', .*\) in that order"),
    ({"num_classes": 6}, r"num_classes 6 is not 7"),
    ({"num_classes": 7.0}, r"num_classes 7\.0 is not 7"),
    ({"num_classes": "7"}, r"num_classes '7' is not 7"),
    ({"num_classes": 6, "labels": list(EMOTIONS[:6]), "labels_ko": list(EMOTIONS_KO[:6])}, r"num_classes 6 is not 7"),
])
def test_labels_and_classes_must_be_the_canonical_ones(bundle, changes, problem):
    """A reordered or stringly label list would silently relabel every prediction."""
    file = _rewrite(bundle, **changes)
    for load in (Predictor.from_bundle, bundle_summary):
        with pytest.raises(DataError, match=rf"{file}: {problem}"):
            load(bundle)


def test_non_finite_numbers_in_the_manifest_are_refused(bundle, model):
    file = bundle / "bundle.json"
    file.write_text(file.read_text(encoding="utf-8").replace('"val_macro_f1": 0.4', '"val_macro_f1": NaN'),
                    encoding="utf-8")
    with pytest.raises(DataError, match=rf"{file}: not valid JSON \(NaN is not a JSON number\)"):
        bundle_summary(bundle)
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        save_bundle(bundle.parent / "nan", model, "resnet18", PREPROCESSING,
                    metrics={"val_macro_f1": float("nan")}, data=DATA)


def _nan_model():
    nan_model = create_model("resnet18")
    with torch.no_grad():
        for p in nan_model.parameters():
            p.fill_(float("nan"))
    return nan_model


def test_tampered_weights_without_a_checksum_are_refused(bundle):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _nan_model().state_dict().items()}, bundle / "model.safetensors")
    file = _rewrite(bundle, weights_sha256=...)
    with pytest.raises(DataError, match=rf"{file}: missing key\(s\) weights_sha256"):
        Predictor.from_bundle(bundle)


def test_non_finite_outputs_are_refused_naming_the_bundle(tmp_path, images):
    broken = save_bundle(tmp_path / "nan", _nan_model(), "resnet18", PREPROCESSING, metrics={}, data=DATA)
    predictor = Predictor.from_bundle(broken)
    with pytest.raises(DataError, match=rf"{broken}: the model gives non-finite probabilities"):
        predictor.predict(images)
    with pytest.raises(DataError, match=rf"{broken}: the model gives non-finite"):
        predictor.predict_labeled(images, on_error="report")  # a bundle fault, not an image's


# --- hostile images ------------------------------------------------------------------------------

def test_deep_and_transparent_images_predict_like_their_8_bit_versions(bundle, tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    deep = tmp_path / "deep.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(deep)
    rgba = np.dstack([np.stack([grey] * 3, -1), np.full((40, 40), 255, np.uint8)])
    predictor = Predictor.from_bundle(bundle)
    proba = predictor.predict([deep, Image.fromarray(grey.astype(np.uint16) * 257), rgba, grey])
    for row in proba[:3]:
        np.testing.assert_array_equal(row, proba[3])


def test_a_photo_stored_sideways_is_predicted_upright_as_its_exif_says(bundle, tmp_path):
    """A phone photo's pixels may be stored turned, with an EXIF orientation saying how to stand them
    up (as every viewer and the web site's uploads do): `fer predict` must see the upright face."""
    rng = np.random.default_rng(5)
    face = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    face.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6                      # "turn 90° clockwise to view"
    face.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    face.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways_untagged.png")
    proba = Predictor.from_bundle(bundle).predict([tmp_path / "upright.png", tmp_path / "sideways.png",
                                                   tmp_path / "sideways_untagged.png"])
    np.testing.assert_array_equal(proba[0], proba[1])
    assert not np.array_equal(proba[0], proba[2])          # without the tag it is another picture


def test_tiny_images_are_predicted_with_a_warning(bundle, tmp_path):
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(dot)
    predictor = Predictor.from_bundle(bundle)
    with pytest.warns(UserWarning, match=rf"{dot}: 1x1 pixels is smaller than 16 on a side"):
        assert predictor.predict([dot]).shape == (1, 7)
    with pytest.warns(UserWarning, match=r"image 1 \(in memory\): 15x40 pixels"):
        predictor.predict([np.zeros((40, 40), np.uint8), np.zeros((40, 15), np.uint8)])


def test_predict_labeled_can_report_bad_images_and_answer_the_rest(bundle, tmp_path, images):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    predictor = Predictor.from_bundle(bundle)
    mixed = [corrupt, *images, tmp_path / "absent.jpg"]
    results = predictor.predict_labeled(mixed, batch_size=2, on_error="report")
    assert [sorted(r) for r in results] == [["error"]] + [["label", "label_ko", "probabilities"]] * 3 + [["error"]]
    assert results[0]["error"].startswith(f"{corrupt}: unreadable or corrupt image")
    assert results[-1]["error"] == f"{tmp_path / 'absent.jpg'}: image file missing"
    for got, alone in zip(results[1:4], predictor.predict_labeled(images)):  # batches differ: tiny float noise
        assert got["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
    assert predictor.predict_labeled([corrupt], on_error="report") == [{"error": results[0]["error"]}]
    with pytest.raises(DataError, match="corrupt.png"):
        predictor.predict_labeled(mixed)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'report'"):
        predictor.predict_labeled(images, on_error="skip")


def test_bundles_of_the_original_protocol_are_never_chosen_automatically(tmp_path, model):
    corrected = save_bundle(tmp_path / "runs" / "a" / "bundle", model, "resnet18", PREPROCESSING,
                            metrics={"val_macro_f1": 0.4}, data=DATA, provenance={"protocol": "corrected"})
    save_bundle(tmp_path / "runs" / "b-original" / "bundle", model, "resnet18", PREPROCESSING,
                metrics={"val_macro_f1": 0.9}, data=DATA, provenance={"protocol": "original"})
    servable, skipped = list_bundles(tmp_path / "runs")
    assert [s["path"] for s in servable] == [str(corrected)]
    assert len(skipped) == 1 and "original study's protocol" in skipped[0] and "b-original" in skipped[0]
    assert choose_bundle(tmp_path / "runs", DATA["fingerprint"])["path"] == str(corrected)
    assert Predictor.from_bundle(tmp_path / "runs" / "b-original" / "bundle").manifest["provenance"]["protocol"] == "original"


def test_predictor_input_is_the_eval_tensor_path(bundle, model, images):
    """What a served model sees is what validation saw: the evaluation BatchTransform of the
    decoded uint8 image (PIL image, file or grey array alike)."""
    predictor = Predictor.from_bundle(bundle)
    evaluation = BatchTransform(PREPROCESSING)
    rgb = [np.array(images[0]), np.array(Image.open(images[1]).convert("RGB")),
           np.array(Image.fromarray(images[2]).convert("RGB"))]
    for position, (image, pixels) in enumerate(zip(images, rgb)):
        expected = evaluation(torch.from_numpy(pixels)[None])
        assert torch.equal(predictor._tensor(image, position), expected[0])
        with torch.no_grad():
            proba = model(expected).softmax(1).numpy()
        np.testing.assert_array_equal(predictor.predict([image]), proba)

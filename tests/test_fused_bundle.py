"""Fused bundles (CNN + captioner + text encoder + head) with real tiny models: save, load, serve end to end."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fer_utils.cli import main
from fer_utils.data.tensor_transforms import image_transform
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.inference.bundle import CNN_FOLDER, HEAD_FILE
from fer_utils.inference.fused_bundle import captioner_record, encoder_record, save_fused_bundle
from fer_utils.labels import EMOTIONS
from fer_utils.models import create_model
from fer_utils.models.heads.registry import create_head, fuse
from fer_utils.inference.bundle import bundle_summary, choose_bundle, list_bundles, save_bundle
from fer_utils.inference.predict import FusedPredictor, Predictor
from fer_utils.options import Preprocessing
from fer_utils.vlm import FaceImage, GenerationSettings, make_captioner, make_encoder
from fer_utils.vlm.postprocess import emotion_vote, postprocess
from fer_utils.vlm.prompts import PROMPTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DATA = {"name": "synthetic", "fingerprint": "0123456789abcdef", "synthetic": True}
PROMPT = PROMPTS["original"]
SETTINGS = GenerationSettings(max_new_tokens=8, batch_size=2)
NORM = "modality_l2"


@pytest.fixture(scope="module")
def parts(tmp_path_factory, one_torch_thread):
    """A random resnet18 CNN bundle, the tiny BLIP-2, the tiny CLIP text encoder and a gated head."""
    torch.manual_seed(0)
    cnn = create_model("resnet18").eval()
    root = tmp_path_factory.mktemp("fused")
    cnn_bundle = save_bundle(root / "cnn-bundle", cnn, "resnet18", PREPROCESSING,
                             metrics={"val_macro_f1": 0.4}, data=DATA)
    captioner = make_captioner("tiny_blip2", seed=0, device="cpu")
    encoder = make_encoder("tiny_clip", device="cpu")
    head = create_head("gated", cnn.feature_dim, encoder.dim).eval()
    return {"root": root, "cnn": cnn, "cnn_bundle": cnn_bundle, "captioner": captioner, "encoder": encoder,
            "head": head}


def save(parts, path, captioner=None, metrics=None, **changes):
    kwargs = dict(cnn_bundle=parts["cnn_bundle"],
                  captioner=captioner or captioner_record("tiny_blip2", parts["captioner"], seed=0),
                  prompt=PROMPT, settings=SETTINGS, postprocess=True,
                  encoder=encoder_record("tiny_clip", parts["encoder"]), head_name="gated", head=parts["head"],
                  cnn_dim=parts["cnn"].feature_dim, text_dim=parts["encoder"].dim, fusion_norm=NORM,
                  metrics=metrics or {"val_macro_f1": 0.6, "macro_f1": 0.5}, data=DATA, provenance={"seed": 0})
    kwargs.update(changes)
    return save_fused_bundle(path, **kwargs)


@pytest.fixture(scope="module")
def fused(parts):
    return save(parts, parts["root"] / "runs" / "fused" / "bundle")


@pytest.fixture(scope="module")
def predictor(fused):
    return Predictor.from_bundle(fused)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("images") / "face.png"
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), str(path),
            rng.integers(0, 256, (48, 48), dtype=np.uint8)]


def copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "copy")


def edit(bundle, **changes):
    file = bundle / "bundle.json"
    manifest = json.loads(file.read_text(encoding="utf-8"))
    manifest.update(changes)
    file.write_text(json.dumps(manifest), encoding="utf-8")
    return file


def test_predicts_end_to_end_like_the_manual_pipeline(parts, predictor, images):
    assert isinstance(predictor, FusedPredictor) and predictor.preprocessing == PREPROCESSING
    proba = predictor.predict(images)
    assert proba.shape == (3, 7) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)

    rgb = [images[0], Image.open(images[1]).convert("RGB"), Image.fromarray(images[2]).convert("RGB")]
    transform = image_transform(PREPROCESSING)
    with torch.no_grad():
        features = parts["cnn"].forward_features(torch.stack([transform(im) for im in rgb])).numpy()
    faces = [FaceImage(id=str(i), pixels=np.asarray(im)) for i, im in enumerate(rgb)]
    captions = [postprocess(c) for c in parts["captioner"].caption(faces, PROMPT, SETTINGS)]
    text = parts["encoder"].encode(captions)
    with torch.no_grad():
        expected = parts["head"](torch.from_numpy(fuse(features, text, "fused", NORM))).softmax(1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)

    results = predictor.predict_labeled(images)
    for result, row, caption in zip(results, expected, captions):
        assert result["caption"] == caption and isinstance(caption, str)
        vote = emotion_vote(caption)
        assert result["vote"] == (None if vote is None else EMOTIONS[vote])
        assert result["label"] == EMOTIONS[row.argmax()]
        assert list(result["probabilities"]) == list(EMOTIONS)


def test_the_bundle_is_self_contained_and_records_what_rebuilds_it(parts, fused, predictor):
    manifest = json.loads((fused / "bundle.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in fused.iterdir()) == ["bundle.json", CNN_FOLDER, HEAD_FILE]
    for name in ("bundle.json", "model.safetensors"):
        assert (fused / CNN_FOLDER / name).read_bytes() == (parts["cnn_bundle"] / name).read_bytes()
    assert manifest["kind"] == "fused" and manifest["format_version"] == 1 and manifest["labels"] == list(EMOTIONS)
    assert manifest["cnn"]["path"] == CNN_FOLDER and manifest["cnn"]["architecture"] == "resnet18"
    assert manifest["captioner"]["name"] == "tiny_blip2" and manifest["captioner"]["seed"] == 0
    assert manifest["captioner"]["identity"] == json.loads(json.dumps(parts["captioner"].identity))
    assert manifest["encoder"]["name"] == "tiny_clip"
    assert manifest["encoder"]["identity"] == json.loads(json.dumps(parts["encoder"].identity))
    assert manifest["prompt"] == PROMPT and manifest["generation"] == SETTINGS.to_dict() and manifest["postprocess"]
    assert manifest["head"] == {"name": "gated", "cnn_dim": 512, "text_dim": parts["encoder"].dim,
                                "fusion_norm": NORM, "kwargs": {}}
    assert len(manifest["weights_sha256"]) == 64
    summary = bundle_summary(fused)
    assert summary["kind"] == "fused" and summary["model"] == "fused:gated on resnet18"
    assert summary["val_macro_f1"] == 0.6 and predictor.summary()["model"] == summary["model"]


def test_fer_predict_prints_caption_and_vote(fused, images):
    res = CliRunner().invoke(main, ["predict", images[1], images[1], "--bundle", str(fused)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["bundle"]["model"] == "fused:gated on resnet18"
    first, second = out["predictions"]
    assert isinstance(first["caption"], str) and "vote" in first and first == second
    assert first["vote"] is None or first["vote"] in EMOTIONS


@pytest.mark.parametrize("name", ["simulated", "precomputed"])
def test_captioners_that_cannot_caption_a_new_image_are_refused(parts, tmp_path, name):
    with pytest.raises(ConfigError, match=f"captioner '{name}' cannot caption a new image"):
        save(parts, tmp_path / "b", captioner={"name": name, "identity": {"backend": name}})
    with pytest.raises(ConfigError, match="cnn_dim 256 is not the feature width 512"):
        save(parts, tmp_path / "b", cnn_dim=256)
    assert not (tmp_path / "b").exists()


def test_tampered_files_are_named(fused, tmp_path):
    bundle = copy(fused, tmp_path)
    head = bundle / HEAD_FILE
    head.write_bytes(head.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match=rf"{head}: contents do not match the weights_sha256"):
        Predictor.from_bundle(bundle)
    inner = bundle / CNN_FOLDER / "bundle.json"
    inner.write_text(inner.read_text(encoding="utf-8").replace('"val_macro_f1": 0.4', '"val_macro_f1": 0.9'),
                     encoding="utf-8")
    with pytest.raises(DataError, match=rf"{inner}: contents do not match the cnn.manifest_sha256"):
        bundle_summary(bundle)


def test_a_captioner_built_differently_is_refused(fused, tmp_path):
    bundle = copy(fused, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    file = edit(bundle, captioner={**manifest["captioner"], "seed": 1})
    with pytest.raises(DataError, match=rf"{file}: the captioner 'tiny_blip2' rebuilt now has identity .*seed"):
        Predictor.from_bundle(bundle)


def test_missing_blip2_weights_are_the_captioners_own_error(fused, tmp_path, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "empty-hf-home"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    bundle = copy(fused, tmp_path)
    edit(bundle, captioner={"name": "blip2", "model_id": "Salesforce/blip2-flan-t5-xl", "revision": "", "seed": 0,
                            "dtype": "float16", "identity": {"backend": "blip2", "model": "Salesforce/blip2-flan-t5-xl",
                                                            "revision": "0" * 40}})
    with pytest.raises(WeightsNotFoundError,
                       match=r"Salesforce/blip2-flan-t5-xl.*download Salesforce/blip2-flan-t5-xl"):
        Predictor.from_bundle(bundle)


def test_choose_bundle_ranks_cnn_and_fused_bundles_by_validation_f1(parts, tmp_path):
    runs = tmp_path / "runs"
    model = parts["cnn"]
    save_bundle(runs / "a" / "bundle", model, "resnet18", PREPROCESSING, metrics={"val_macro_f1": 0.5}, data=DATA)
    fused = save(parts, runs / "b" / "bundle", metrics={"val_macro_f1": 0.7, "macro_f1": 0.1})
    servable, skipped = list_bundles(runs)
    assert [b["kind"] for b in servable] == ["cnn", "fused"] and skipped == []  # the CNN copy is part of b
    chosen = choose_bundle(runs, DATA["fingerprint"])
    assert chosen["path"] == str(fused) and chosen["model"] == "fused:gated on resnet18"
    assert choose_bundle(runs, DATA["fingerprint"], kind="cnn")["path"] == str(runs / "a" / "bundle")
    best = save_bundle(runs / "c" / "bundle", model, "resnet18", PREPROCESSING, metrics={"val_macro_f1": 0.9},
                       data=DATA)
    assert choose_bundle(runs, DATA["fingerprint"])["path"] == str(best)
    (fused / HEAD_FILE).unlink()
    servable, skipped = list_bundles(runs)
    assert skipped == [f"{fused}: no {HEAD_FILE}"]

"""Explanations for the dashboard: Grad-CAM of CNN bundles (captum) and the text-path contribution of fused
bundles, on real tiny models, checked against independent computations."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from PIL import Image

from fer_utils.study import fusion_study
from fer_utils.data.tensor_transforms import image_transform
from fer_utils.errors import ConfigError
from fer_utils.inference.explain import CAM_LAYERS, GradCAM, TextContribution, cam_layer, gradcam, text_contribution
from fer_utils.inference.fused_bundle import captioner_record, encoder_record, save_fused_bundle
from fer_utils.labels import EMOTIONS, EMOTIONS_KO
from fer_utils.models import create_model, list_models
from fer_utils.models.heads.registry import create_head, fuse
from fer_utils.inference.bundle import save_bundle
from fer_utils.inference.predict import FusedPredictor, Predictor
from fer_utils.options import Preprocessing
from fer_utils.vlm import GenerationSettings, make_captioner, make_encoder
from fer_utils.vlm.postprocess import emotion_vote
from fer_utils.vlm.prompts import CONSTANT_CAPTION, PROMPTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PREPROCESSING = Preprocessing(96, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # resnet18's layer4: 3 x 3 at 96 px
SMALL = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DATA = {"name": "synthetic", "fingerprint": "0123456789abcdef", "synthetic": True}
NORM = "modality_l2"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, one_torch_thread):
    torch.manual_seed(0)
    bundle = save_bundle(tmp_path_factory.mktemp("cnn") / "bundle", create_model("resnet18").eval(), "resnet18",
                         PREPROCESSING, metrics={"val_macro_f1": 0.4}, data=DATA)
    return Predictor.from_bundle(bundle)


@pytest.fixture(scope="module")
def face():
    """A non-square face-sized image (70 wide, 50 high) with some structure: a bright blob on noise."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:50, :70]
    blob = 200 * np.exp(-((yy - 15) ** 2 + (xx - 50) ** 2) / 60.0)
    pixels = np.clip(rng.normal(60, 20, (50, 70, 3)) + blob[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def model_input(predictor, image):
    return predictor.transform(image.convert("RGB")).unsqueeze(0)


def finish(raw: torch.Tensor, input_size: int, image: Image.Image) -> np.ndarray:
    """The documented post-processing, written out: bilinear to the input size, ReLU, / max, to the image size."""
    cam = torch.relu(F.interpolate(raw, size=(input_size, input_size), mode="bilinear", align_corners=False))
    cam = cam / cam.max() if cam.max() > 0 else cam * 0
    return F.interpolate(cam, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0].numpy()


def manual_gradcam(model, layer_name, x, target) -> torch.Tensor:
    """Grad-CAM by hand on a copy of the model: ReLU-free sum_k mean(dscore/dA_k) * A_k at the layer."""
    model = copy.deepcopy(model).eval()
    layer = dict(model.named_modules())[layer_name]
    saved = {}

    def keep(module, inputs, output):
        output = output.clone()   # the block's output before any later in-place op
        output.retain_grad()
        saved["a"] = output
        return output

    handle = layer.register_forward_hook(keep)
    try:
        model(x)[0, target].backward()
    finally:
        handle.remove()
    activation = saved["a"]
    weights = activation.grad.mean(dim=(2, 3), keepdim=True)
    return (weights * activation).sum(1, keepdim=True).detach()


def test_heatmap_has_the_image_size_and_explains_the_predicted_class(predictor, face):
    cam = gradcam(predictor, face)
    assert isinstance(cam, GradCAM)
    assert cam.heatmap.shape == (face.height, face.width) == (50, 70)
    assert cam.heatmap.dtype == np.float32 and np.isfinite(cam.heatmap).all()
    assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() <= 1.0
    assert cam.heatmap.max() == pytest.approx(1.0, abs=1e-5)      # normalised by its peak
    assert cam.heatmap.std() > 0.01                                 # a 3 x 3 map, not a constant
    best = int(predictor.predict([face])[0].argmax())
    assert cam.target == best and cam.label == EMOTIONS[best] and cam.label_ko == EMOTIONS_KO[best]
    assert cam.layer == "features.7" and cam.image.size == face.size
    with pytest.raises(ValueError):
        cam.heatmap[0, 0] = 0.5   # read-only: the result is frozen


@pytest.mark.parametrize("target", [None, 0, 6])
def test_heatmap_matches_captum_directly_and_grad_cam_by_hand(predictor, face, target):
    cam = gradcam(predictor, face, target=target)
    x = model_input(predictor, face)
    t = cam.target
    by_hand = manual_gradcam(predictor.model, "features.7", x, t)
    assert by_hand.shape == (1, 1, 3, 3)
    model = copy.deepcopy(predictor.model)
    direct = LayerGradCam(model, model.features[7]).attribute(x, target=t).detach()
    torch.testing.assert_close(direct, by_hand, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(cam.heatmap, finish(by_hand, PREPROCESSING.image_size, face), atol=1e-5)
    if target is not None:
        assert cam.target == target and cam.label == EMOTIONS[target]


def test_gradcam_leaves_the_model_and_its_predictions_as_they_were(predictor, face):
    model = predictor.model
    before = predictor.predict([face])
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    state = {name: t.clone() for name, t in model.state_dict().items()}   # BatchNorm statistics included
    gradcam(predictor, face)
    gradcam(predictor, face, target=1)
    assert not model.training and not any(m.training for m in model.modules())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    np.testing.assert_array_equal(predictor.predict([face]), before)


def test_gradcam_works_inside_inference_mode_and_on_a_frozen_model(predictor, face):
    expected = gradcam(predictor, face).heatmap
    with torch.inference_mode():
        np.testing.assert_allclose(gradcam(predictor, face).heatmap, expected, atol=1e-6)
    frozen = Predictor(copy.deepcopy(predictor.model).requires_grad_(False), PREPROCESSING, EMOTIONS, EMOTIONS_KO)
    np.testing.assert_allclose(gradcam(frozen, face).heatmap, expected, atol=1e-5)
    assert not any(p.requires_grad for p in frozen.model.parameters())


def test_constant_image_and_a_map_without_evidence_give_no_nan(predictor):
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    cam = gradcam(predictor, grey)
    assert cam.heatmap.shape == (40, 40) and np.isfinite(cam.heatmap).all()
    assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
    blind = copy.deepcopy(predictor.model)
    torch.nn.init.zeros_(blind.head.weight)   # the logits ignore the features: every gradient is zero
    cam = gradcam(Predictor(blind, PREPROCESSING, EMOTIONS, EMOTIONS_KO), grey)
    assert np.isfinite(cam.heatmap).all() and not cam.heatmap.any()


def test_gradcam_accepts_grey_arrays_like_predict(predictor):
    grey = np.random.default_rng(0).integers(0, 256, (30, 20), dtype=np.uint8)
    cam = gradcam(predictor, grey)
    assert cam.heatmap.shape == (30, 20) and cam.target == int(predictor.predict([grey])[0].argmax())


@pytest.mark.parametrize("target", [7, -1, True, 2.0, "happy"])
def test_bad_targets_are_refused(predictor, face, target):
    with pytest.raises(ConfigError, match="target"):
        gradcam(predictor, face, target=target)


def test_overlay_blends_the_colormap_over_the_image(predictor, face):
    cam = gradcam(predictor, face)
    shown = cam.overlay()
    assert shown.mode == "RGB" and shown.size == face.size
    assert np.array_equal(np.asarray(cam.overlay(alpha=0.0)), np.asarray(face))
    from matplotlib import colormaps
    expected = (colormaps["jet"](cam.heatmap)[..., :3] * 255).round().astype(np.uint8)
    assert np.array_equal(np.asarray(cam.overlay(alpha=1.0)), expected)
    mixed = np.asarray(shown, dtype=float)
    assert np.abs(mixed - (0.55 * np.asarray(face) + 0.45 * expected)).max() <= 1.0
    for alpha in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ConfigError, match="alpha"):
            cam.overlay(alpha=alpha)
    with pytest.raises(ConfigError, match="colormap"):
        cam.overlay(cmap="no-such-map")


@pytest.mark.parametrize("arch", list_models())
def test_every_registered_architecture_has_a_cam_layer(arch):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    name, layer = cam_layer(model)
    assert name == CAM_LAYERS[arch] and dict(model.named_modules())[name] is layer
    shapes = []
    handle = layer.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    handle.remove()
    assert len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][2] >= 2   # a spatial map, not a vector
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (36, 28, 3), dtype=np.uint8))
    predictor = Predictor(model, SMALL, EMOTIONS, EMOTIONS_KO)
    cam = gradcam(predictor, image)
    assert cam.heatmap.shape == (36, 28) and np.isfinite(cam.heatmap).all()
    assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
    assert cam.target == int(predictor.predict([image])[0].argmax()) and cam.layer == name


def test_unknown_architectures_and_non_classifiers_are_refused(monkeypatch):
    model = create_model("resnet18")
    model.arch = "mystery_net"
    with pytest.raises(ConfigError, match="mystery_net"):
        cam_layer(model)
    with pytest.raises(ConfigError, match="Classifier"):
        cam_layer(torch.nn.Linear(3, 7))
    monkeypatch.setitem(CAM_LAYERS, "resnet18", "features.9")   # the Flatten: no spatial map
    with pytest.raises(ConfigError, match="features.9"):
        cam_layer(create_model("resnet18"))
    monkeypatch.setitem(CAM_LAYERS, "resnet18", "features.42")
    with pytest.raises(ConfigError, match="features.42"):
        cam_layer(create_model("resnet18"))


# ---- fused bundles: the text-path contribution ------------------------------------------------------------

@pytest.fixture(scope="module")
def fused(tmp_path_factory, one_torch_thread):
    """A fused bundle as tests/test_fused_bundle.py builds one: random resnet18, tiny BLIP-2, tiny CLIP, gated head."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("fused")
    cnn = create_model("resnet18").eval()
    cnn_bundle = save_bundle(root / "cnn-bundle", cnn, "resnet18", SMALL, metrics={"val_macro_f1": 0.4}, data=DATA)
    captioner = make_captioner("tiny_blip2", seed=0, device="cpu")
    encoder = make_encoder("tiny_clip", device="cpu")
    head = create_head("gated", cnn.feature_dim, encoder.dim).eval()
    bundle = save_fused_bundle(
        root / "bundle", cnn_bundle=cnn_bundle, captioner=captioner_record("tiny_blip2", captioner, seed=0),
        prompt=PROMPTS["original"], settings=GenerationSettings(max_new_tokens=8, batch_size=2), postprocess=True,
        encoder=encoder_record("tiny_clip", encoder), head_name="gated", head=head, cnn_dim=cnn.feature_dim,
        text_dim=encoder.dim, fusion_norm=NORM, metrics={"val_macro_f1": 0.6}, data=DATA, provenance={"seed": 0})
    return {"predictor": Predictor.from_bundle(bundle), "cnn": cnn, "encoder": encoder, "head": head}


def test_text_contribution_compares_the_caption_with_the_neutral_sentence(fused, face):
    predictor = fused["predictor"]
    assert isinstance(predictor, FusedPredictor)
    answer = predictor.predict_labeled([face])[0]
    result = text_contribution(predictor, face)
    np.testing.assert_array_equal(predictor.predict([face]), [list(answer["probabilities"].values())])
    assert isinstance(result, TextContribution)
    assert result.caption == answer["caption"] and result.vote == answer["vote"]
    assert result.vote == (None if emotion_vote(result.caption) is None else EMOTIONS[emotion_vote(result.caption)])
    assert list(result.probabilities) == list(EMOTIONS) == list(result.without_text)
    for name in EMOTIONS:
        assert result.probabilities[name] == pytest.approx(answer["probabilities"][name], abs=1e-6)
    assert result.label == answer["label"]

    # without text: the neutral caption through the same encoder, fuse and head, by hand
    with torch.no_grad():
        features = fused["cnn"].forward_features(image_transform(SMALL)(face).unsqueeze(0)).numpy()
        text = fused["encoder"].encode([CONSTANT_CAPTION])
        expected = fused["head"](torch.from_numpy(fuse(features, text, "fused", NORM))).softmax(1)[0].numpy()
    np.testing.assert_allclose([result.without_text[name] for name in EMOTIONS], expected, atol=1e-5)
    assert result.label_without_text == EMOTIONS[int(expected.argmax())]

    p = np.array([result.probabilities[name] for name in EMOTIONS])
    q = np.array([result.without_text[name] for name in EMOTIONS])
    assert p.sum() == pytest.approx(1.0, abs=1e-5) and q.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.delta == pytest.approx(result.probabilities[result.label] - result.without_text[result.label])
    assert result.total_variation == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-7)
    assert 0.0 <= result.total_variation <= 1.0 and result.total_variation > 0   # the caption is not the neutral one
    assert result.neutral_caption == CONSTANT_CAPTION


def test_the_neutral_sentence_is_the_fusion_studys_constant_caption():
    assert fusion_study.CONSTANT_CAPTION is CONSTANT_CAPTION


def test_a_caption_equal_to_the_neutral_sentence_contributes_nothing(fused, face, monkeypatch):
    predictor = fused["predictor"]
    monkeypatch.setattr(predictor, "captions", lambda faces: [CONSTANT_CAPTION] * len(faces))
    result = text_contribution(predictor, face)
    assert result.caption == CONSTANT_CAPTION and result.vote is None
    assert result.total_variation == 0.0 and result.delta == 0.0
    assert result.probabilities == result.without_text and result.label == result.label_without_text


def test_each_explanation_refuses_the_other_kind_of_bundle(predictor, fused, face):
    with pytest.raises(ConfigError, match="fused bundle"):
        gradcam(fused["predictor"], face)
    with pytest.raises(ConfigError, match="CNN bundle"):
        text_contribution(predictor, face)
    with pytest.raises(ConfigError, match="Predictor"):
        gradcam(object(), face)

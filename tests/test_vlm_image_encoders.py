"""Image encoders (fer_utils.vlm.image_encoders), the fusion study's second-encoder control: the
tiny open_clip runs the real open_clip classes and preprocessing offline with random weights,
embed_images caches per image content, and the real CLIP ViT-L/14 fails fast when its weights
are not cached (no download here)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fer_utils.data import load_dataset
from fer_utils.errors import ConfigError
from fer_utils.vlm import image_encoders as IE
from fer_utils.vlm.base import face_images


@pytest.fixture(scope="module")
def index(synthetic_rafdb):
    """20 rows of the synthetic set plus a 21st that repeats the first row's image under another id."""
    rows = load_dataset(synthetic_rafdb).iloc[:20].reset_index(drop=True)
    return pd.concat([rows, rows.iloc[[0]].assign(id="repeat-of-0")], ignore_index=True)


@pytest.fixture(scope="module")
def images(index):
    return [image.load() for image in face_images(index.iloc[:20])]


@pytest.fixture(scope="module")
def tiny(one_torch_thread, images):
    """The tiny image encoder at seed 0 and its vectors for ``images`` at the default batch size."""
    encoder = IE.tiny_open_clip_image_encoder(seed=0, device="cpu")
    return encoder, encoder.encode(images)


def test_tiny_image_encoder_shape_dtype_and_identity(tiny, images):
    encoder, vectors = tiny
    assert isinstance(encoder, IE.ImageEncoder) and encoder.name == "tiny_open_clip" and encoder.dim == 16
    assert vectors.shape == (len(images), 16) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and not np.allclose(vectors, vectors[0])
    assert not encoder.model.training
    identity = encoder.identity
    json.dumps(identity)
    assert identity["backend"] == "open_clip-image" and identity["output"] == "encode_image (projected)"
    assert identity["pretrained"] is None and identity["normalized"] is False
    assert identity["weights_sha256"].startswith("weights_sha256:")
    assert identity["preprocess"]["size"] == [32, 32]
    # the text tower is gone; the vision tower is all there
    names = list(encoder.model.state_dict())
    assert not [n for n in names if n.startswith(("transformer.", "token_embedding", "positional_embedding",
                                                  "text_projection", "ln_final"))]
    assert any(n.startswith("visual.") for n in names)


def test_tiny_image_encoder_is_deterministic_per_seed_and_leaves_the_global_rng_alone(tiny, images):
    encoder, vectors = tiny
    state = torch.random.get_rng_state()
    same, other = (IE.tiny_open_clip_image_encoder(seed=s, device="cpu") for s in (0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(same.encode(images[:8]), vectors[:8])
    assert same.identity == encoder.identity and other.identity != encoder.identity
    assert not np.allclose(other.encode(images[:8]), vectors[:8])


def test_tiny_image_encoder_does_not_depend_on_the_batch_size(tiny, images):
    encoder, vectors = tiny
    np.testing.assert_allclose(encoder.encode(images, batch_size=1), vectors, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode(images, batch_size=7), vectors, atol=1e-5, rtol=0)


def test_encode_preprocesses_any_image_and_checks_its_inputs(tiny, images):
    encoder, vectors = tiny
    wide = images[0].resize((90, 40))
    assert encoder.encode([wide, images[0].convert("L")]).shape == (2, 16)
    normalized = IE.tiny_open_clip_image_encoder(seed=0, device="cpu", normalize=True)
    np.testing.assert_allclose(normalized.encode(images[:3]),
                               vectors[:3] / np.linalg.norm(vectors[:3], axis=1, keepdims=True), atol=1e-5)
    assert normalized.identity["normalized"] is True
    assert encoder.encode([]).shape == (0, 16)
    with pytest.raises(TypeError, match="single image"):
        encoder.encode(images[0])
    with pytest.raises(TypeError, match="image 1"):
        encoder.encode([images[0], np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ConfigError, match="batch_size"):
        encoder.encode(images[:1], batch_size=0)


def test_embed_images_caches_per_image_content(tiny, index, images, tmp_path, monkeypatch):
    encoder, vectors = tiny
    out, first = IE.embed_images(index, encoder, tmp_path, batch_size=8)
    assert out.shape == (21, 16) and out.dtype == np.float32
    assert (first.items, first.distinct, first.cache_hits, first.computed) == (21, 20, 0, 20)
    np.testing.assert_allclose(out[:20], vectors, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out[20], out[0])  # the repeated image: computed once

    def fail(*args, **kwargs):
        raise AssertionError("everything should come from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(encoder, "encode", fail)
        again, second = IE.embed_images(index.iloc[::-1], encoder, tmp_path)
    assert (second.cache_hits, second.computed, second.seconds) == (20, 0, 0.0)
    np.testing.assert_array_equal(again, out[::-1])

    other = IE.tiny_open_clip_image_encoder(seed=1, device="cpu")
    _, third = IE.embed_images(index, other, tmp_path)
    assert (third.cache_hits, third.computed) == (0, 20)

    uncached, fourth = IE.embed_images(index, encoder, None)
    assert (fourth.cache_hits, fourth.computed) == (0, 20)
    np.testing.assert_allclose(uncached, out, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="empty"):
        IE.embed_images(index.iloc[:0], encoder, tmp_path)


def test_make_image_encoder_builds_by_name_and_rejects_unknown_names_and_arguments(tiny):
    assert set(IE.IMAGE_ENCODERS) == {"open_clip", "tiny_open_clip"}
    assert IE.make_image_encoder("tiny_open_clip", seed=0, device="cpu").identity == tiny[0].identity
    with pytest.raises(ConfigError) as info:
        IE.make_image_encoder("resnet")
    assert "'resnet'" in str(info.value) and all(name in str(info.value) for name in IE.IMAGE_ENCODERS)
    with pytest.raises(ConfigError, match="model_id"):
        IE.make_image_encoder("tiny_open_clip", model_id="x")
    with pytest.raises(ConfigError, match="no-such-tag"):
        IE.make_image_encoder("open_clip", pretrained="no-such-tag", device="cpu")

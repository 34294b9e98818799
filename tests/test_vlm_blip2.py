"""BLIP-2 captioner (fer_utils.vlm.blip2) on tiny models built in code: no download, a few seconds."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fer_utils.errors import ConfigError, WeightsNotFoundError  # noqa: E402
from fer_utils.models.runtime import weights_sha256  # noqa: E402
from fer_utils.vlm.base import FaceImage, GenerationSettings  # noqa: E402
from fer_utils.vlm.blip2 import (ORIGINAL_MODEL_ID, Blip2Captioner, original_architecture_config,  # noqa: E402
                                 original_architecture_model, tiny_blip2, tiny_blip2_captioner)
from fer_utils.vlm.prompts import PROMPTS  # noqa: E402

PROMPT = PROMPTS["original"]
KINDS = ("opt", "t5")
FIXED = GenerationSettings(max_new_tokens=6, min_new_tokens=6, batch_size=3)


def faces(n: int = 5, seed: int = 0) -> list[FaceImage]:
    rng = np.random.default_rng(seed)
    return [FaceImage(id=f"f{i}", pixels=rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def captioners(one_torch_thread) -> dict[str, Blip2Captioner]:
    return {kind: tiny_blip2_captioner(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Each tiny model saved with save_pretrained (model and processor) in a folder of its own."""
    out = {}
    for kind in KINDS:
        model, processor = tiny_blip2(kind)
        folder = tmp_path_factory.mktemp(f"tiny-blip2-{kind}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[kind] = folder
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_captions_are_strings_one_per_image_and_deterministic(captioners, kind):
    captioner, images = captioners[kind], faces()
    first = captioner.caption(images, PROMPT, FIXED)
    assert isinstance(first, list) and len(first) == len(images)
    assert all(isinstance(text, str) and text == text.strip() for text in first)
    assert captioner.caption(images, PROMPT, FIXED) == first
    assert len(set(first)) > 1, "the tiny model's captions should depend on the image"
    assert captioner.caption([], PROMPT, FIXED) == []
    assert captioner.meaningful is False and captioner.name == f"tiny-blip2-{kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_one_at_a_time(captioners, kind):
    captioner, images = captioners[kind], faces(7, seed=1)
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=2, batch_size=4, dtype="float32")
    batched = captioner.caption(images, PROMPT, settings)
    single = captioner.caption(images, PROMPT, GenerationSettings(**{**settings.to_dict(), "batch_size": 1}))
    assert batched == single
    assert captioner.generate_token_ids(images, PROMPT, settings) == \
        captioner.generate_token_ids(images, PROMPT, GenerationSettings(**{**settings.to_dict(), "batch_size": 1}))


@pytest.mark.parametrize("kind", KINDS)
def test_new_token_counts_respect_min_and_max(captioners, kind):
    captioner, images = captioners[kind], faces()
    eos = captioner.model.generation_config.eos_token_id
    for new in (1, 5, 9):
        rows = captioner.generate_token_ids(images, PROMPT, GenerationSettings(max_new_tokens=new, min_new_tokens=new))
        assert [len(row) for row in rows] == [new] * len(images)  # only new tokens: no prompt, no start token
        assert all(eos not in row for row in rows)  # min_new_tokens suppresses the end token
    settings = GenerationSettings(max_new_tokens=7, min_new_tokens=3)
    for row in captioner.generate_token_ids(images, PROMPT, settings):
        body = row[:-1] if row and row[-1] == eos else row
        assert 3 <= len(body) and len(row) <= 7
    texts = captioner.caption(images, PROMPT, settings)
    decoded = captioner.processor.tokenizer.batch_decode(captioner.generate_token_ids(images, PROMPT, settings),
                                                         skip_special_tokens=True)
    assert texts == [text.strip() for text in decoded]


@pytest.mark.parametrize("kind", KINDS)
def test_generation_settings_reach_generate(captioners, kind):
    captioner, images = captioners[kind], faces(4)
    plain = captioner.generate_token_ids(images, PROMPT, GenerationSettings(max_new_tokens=8, min_new_tokens=8))
    assert any(len(set(row)) < len(row) for row in plain)  # random weights repeat tokens...
    distinct = GenerationSettings(max_new_tokens=8, min_new_tokens=8, no_repeat_ngram_size=1)
    assert all(len(set(row)) == len(row) == 8 for row in captioner.generate_token_ids(images, PROMPT, distinct))
    beams = GenerationSettings(max_new_tokens=5, min_new_tokens=5, num_beams=3, batch_size=2)
    assert [len(row) for row in captioner.generate_token_ids(images, PROMPT, beams)] == [5] * 4
    penalised = GenerationSettings(max_new_tokens=8, min_new_tokens=8, repetition_penalty=5.0)
    assert captioner.generate_token_ids(images, PROMPT, penalised) != plain


@pytest.mark.parametrize("kind", KINDS)
def test_any_prompt_keeps_the_contract(captioners, kind):
    captioner, images = captioners[kind], faces(3)
    for prompt in (*PROMPTS.values(), "", "Question: Is this face happy or sad? Answer:"):
        texts = captioner.caption(images, prompt, FIXED)
        assert len(texts) == len(images) and all(isinstance(text, str) for text in texts)
        assert [len(r) for r in captioner.generate_token_ids(images, prompt, FIXED)] == [6] * len(images)
        if prompt:
            assert not any(text.startswith(prompt) for text in texts)
    with pytest.raises(ConfigError, match="prompt must be a string"):
        captioner.caption(images, None, FIXED)


@pytest.mark.parametrize("kind", KINDS)
def test_save_pretrained_round_trip(captioners, saved, kind):
    loaded = Blip2Captioner.from_pretrained(str(saved[kind]), device="cpu")
    images = faces()
    assert loaded.caption(images, PROMPT, FIXED) == captioners[kind].caption(images, PROMPT, FIXED)
    identity = loaded.identity
    assert identity["backend"] == "blip2" and identity["model"] == str(saved[kind])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", identity["revision"])
    assert Blip2Captioner.from_pretrained(str(saved[kind]), device="cpu").identity == identity
    assert loaded.name == str(saved[kind]) and loaded.meaningful is True
    assert loaded.is_encoder_decoder is (kind == "t5")
    if kind == "opt":
        assert loaded.processor.tokenizer.padding_side == "left"


def test_load_from_hub_cache_records_the_commit(saved, tmp_path, monkeypatch):
    """A snapshot in the hub cache layout loads by its model id, offline, and its commit is the revision."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--example--tiny-blip2"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in saved["t5"].iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for revision in (None, commit):
        captioner = Blip2Captioner.from_pretrained("example/tiny-blip2", revision=revision, device="cpu")
        assert captioner.identity == {"backend": "blip2", "model": "example/tiny-blip2", "revision": commit}
        assert captioner.name == "example/tiny-blip2"
    with pytest.raises(WeightsNotFoundError, match="example/tiny-blip2"):
        Blip2Captioner.from_pretrained("example/tiny-blip2", revision="v2", device="cpu")


def test_missing_weights_raise_with_cache_and_download_command(tmp_path, monkeypatch):
    import os

    from huggingface_hub import constants

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    home = tmp_path / "empty-hf-home"
    home.mkdir()
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    with pytest.raises(WeightsNotFoundError) as info:
        Blip2Captioner.from_pretrained(ORIGINAL_MODEL_ID)
    message = str(info.value)
    assert ORIGINAL_MODEL_ID in message and str(home) in message
    assert f"hf download {ORIGINAL_MODEL_ID}" in message
    assert "random weights are never used" in message
    assert not (home / "hub").exists() or not any((home / "hub").iterdir())  # nothing was fetched


def test_incomplete_folder_and_bad_names_raise(saved, tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved["opt"] / "config.json").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="no weight file"):
        Blip2Captioner.from_pretrained(str(folder), device="cpu")
    with pytest.raises(ConfigError, match="neither an existing folder"):
        Blip2Captioner.from_pretrained(str(tmp_path / "missing" / "folder"))
    with pytest.raises(ConfigError, match="revision"):
        Blip2Captioner.from_pretrained(str(saved["opt"]), revision="main")


def test_tiny_weights_are_seeded_and_leave_the_global_rng_alone(captioners):
    state = torch.random.get_rng_state()
    first, _ = tiny_blip2("opt", seed=0)
    again, _ = tiny_blip2("opt", seed=0)
    other, _ = tiny_blip2("opt", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert weights_sha256(first) == weights_sha256(again) == captioners["opt"].identity["weights"]
    assert weights_sha256(other) != weights_sha256(first)
    identity = tiny_blip2_captioner("t5", seed=3).identity
    assert identity == {"backend": "tiny-blip2", "kind": "t5", "seed": 3,
                        "weights": weights_sha256(tiny_blip2("t5", seed=3)[0]), "version": 1}
    assert identity != captioners["t5"].identity


def test_dtype_casts_like_from_pretrained_and_never_upcast(saved):
    images = faces(3)
    half = GenerationSettings(max_new_tokens=4, min_new_tokens=4, dtype="float16")
    cast = tiny_blip2_captioner("t5")
    cast_texts = cast.caption(images, PROMPT, half)
    loaded = Blip2Captioner.from_pretrained(str(saved["t5"]), device="cpu", dtype="float16")
    assert loaded.caption(images, PROMPT, half) == cast_texts
    for (name, a), (_, b) in zip(cast.model.state_dict().items(), loaded.model.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert cast.model.qformer.layernorm.weight.dtype == torch.float32  # kept in float32, as transformers does
    with pytest.raises(ConfigError, match="float16"):
        cast.caption(images, PROMPT, GenerationSettings(dtype="float32"))
    bf16 = tiny_blip2_captioner("opt")
    assert len(bf16.caption(images, PROMPT, GenerationSettings(max_new_tokens=3, dtype="bfloat16"))) == 3
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}


def test_speed_levers(captioners):
    images = faces(4)
    reference = captioners["t5"].caption(images, PROMPT, FIXED)
    eager = tiny_blip2_captioner("t5", attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager" and eager.identity["attn_implementation"] == "eager"
    assert eager.caption(images, PROMPT, FIXED) == reference
    static = tiny_blip2_captioner("t5", static_cache=True)
    assert static.caption(images, PROMPT, FIXED) == reference and static.identity["static_cache"] is True
    with pytest.raises(ConfigError, match="static_cache"):
        tiny_blip2_captioner("opt", compile=True)
    with pytest.raises(ConfigError, match="flash_attention_2"):
        tiny_blip2_captioner("opt", attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match="flex_attention"):
        tiny_blip2_captioner("t5", attn_implementation="flex_attention")
    with pytest.raises(ConfigError, match="kind"):
        tiny_blip2("llama")


def test_original_architecture_on_meta_device():
    config = original_architecture_config(image_token_index=32100)
    model = original_architecture_model(config, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == 3_942_446_592  # Salesforce/blip2-flan-t5-xl: 3.94 B
    assert config.num_query_tokens == 32 and config.vision_config.num_hidden_layers == 39
    assert config.text_config.d_model == 2048 and config.text_config.num_decoder_layers == 24


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_loading_draws_no_progress_bar_off_a_terminal_nor_for_a_quick_load(saved, monkeypatch):
    """transformers draws "Loading weights" with tqdm on stderr: not when stderr is a log or a pipe,
    and on a terminal only for a load that lasts over a second (a tiny model's does not); the bar
    itself still works inside the block (a slow load on a terminal shows it)."""
    import io
    import sys
    import time

    from transformers.utils import logging as hf_logging
    from transformers.utils.logging import tqdm as hf_tqdm

    from fer_utils.vlm.base import quiet_loading

    enabled = hf_logging.is_progress_bar_enabled()   # another test of this process may have turned them off
    hf_logging.enable_progress_bar()
    try:
        for stream in (io.StringIO(), _Terminal()):
            monkeypatch.setattr(sys, "stderr", stream)
            Blip2Captioner.from_pretrained(str(saved["opt"]), device="cpu")
            assert stream.getvalue() == "", stream.getvalue()
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        with quiet_loading():
            for _ in hf_tqdm(range(3), desc="Loading weights", file=terminal, mininterval=0):
                time.sleep(0.6)
        assert "Loading weights" in terminal.getvalue()
        outside = io.StringIO()       # outside the block: transformers' own behaviour, a bar anywhere
        for _ in hf_tqdm(range(2), desc="Loading weights", file=outside):
            pass
        assert "Loading weights" in outside.getvalue()
    finally:
        if not enabled:
            hf_logging.disable_progress_bar()

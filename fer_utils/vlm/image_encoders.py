"""Image encoders: face images to vectors, for the fusion study's *second-encoder control*.

The fusion heads combine the CNN's face features with a caption embedding. To tell "captions help"
apart from "a second pretrained encoder helps", the same heads are trained with a CLIP *image*
embedding of the same face in place of the caption embedding. This module makes those vectors:

=================  ========================================  =====  ==========================================
name               class / factory                           dim    output
=================  ========================================  =====  ==========================================
``open_clip``      :class:`OpenCLIPImageEncoder`             768    ``encode_image`` of CLIP ViT-L/14 (openai)
``tiny_open_clip`` :func:`tiny_open_clip_image_encoder`      16     ``encode_image`` of a random tiny open_clip
=================  ========================================  =====  ==========================================

``encode_image`` is the *projected* image embedding: the pooled vision-tower state multiplied by
the visual projection, the vector CLIP compares with ``encode_text`` (768-d for ViT-L/14). Images
go through open_clip's own evaluation transform for the model and pretrained tag (resize,
centre crop, the tag's mean and std), the ``preprocess`` that ``create_model_and_transforms``
returns for inference.

Loading follows :class:`~fer_utils.vlm.encoders.OpenCLIPTextEncoder` and reuses its helpers:
weights are looked up in the local cache only (``download=True`` lets open_clip fetch them), a
missing checkpoint raises :class:`~fer_utils.errors.WeightsNotFoundError` at once naming the
model, the tag and the command that fetches it, and random weights are used only when
``pretrained=None`` is passed explicitly (the tiny encoder). The text tower is dropped after
loading (``encode_image`` never uses it; ~0.5 GB for ViT-L/14).

:func:`embed_images` embeds a data index through the project's cache (namespace
``image-embeddings``), one entry per image keyed by its content hash and the encoder's identity.
open_clip is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fer_utils.cache import Cache
from fer_utils.data.fingerprint import image_hashes
from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.models.runtime import resolve_device, weights_sha256
from fer_utils.vlm.base import Encoder, build, face_images
from fer_utils.vlm.encoders import load_open_clip, open_clip_not_found, sha256_of_file, tiny_open_clip
from fer_utils.vlm.pipeline import Throughput, cached_vectors

IMAGE_EMBEDDING_NAMESPACE = "image-embeddings"
IMAGE_EMBEDDING_FORMAT = 1


# --------------------------------------------------------------------------------------------
# interface


class ImageEncoder(Encoder):
    """Embeds images (the image-side twin of :class:`~fer_utils.vlm.base.TextEncoder`)::

        vectors = encoder.encode(images)        # [len(images), encoder.dim] float32 (PIL images in)
    """

    name: str = "image-encoder"


def _check_images(images: Sequence[Image.Image], batch_size: int) -> list[Image.Image]:
    """``images`` as a list after checking it is a sequence of PIL images and ``batch_size`` >= 1."""
    if isinstance(images, Image.Image):
        raise TypeError("encode() takes a sequence of images, got a single image: wrap it in a list")
    images = list(images)
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"encode(): image {i} is {type(image).__name__}, not a PIL image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"encode(): batch_size must be an integer >= 1, got {batch_size!r}")
    return images


# --------------------------------------------------------------------------------------------
# open_clip


def _drop_text_tower(model: torch.nn.Module) -> None:
    """Remove the text tower of an open_clip ``CLIP`` (its own attributes) or ``CustomTextCLIP``
    (``model.text``) in place; ``encode_image`` uses none of it."""
    if isinstance(getattr(model, "text", None), torch.nn.Module):
        model.text = torch.nn.Identity()
    for name in ("transformer", "token_embedding", "ln_final"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            setattr(model, name, torch.nn.Identity())
    for name in ("positional_embedding", "text_projection", "attn_mask"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


class OpenCLIPImageEncoder(ImageEncoder):
    """CLIP's image tower through open_clip: ``model.encode_image(preprocess(image))``.

    The *projected* image embedding (768-d for ViT-L/14; ``identity["output"]`` is
    ``"encode_image (projected)"``), not normalised unless ``normalize=True``. ``preprocess`` is
    open_clip's evaluation transform for the model and tag (for ``openai``: bicubic resize of the
    shorter side to 224, centre crop, OpenAI's mean and std); it is part of the identity.

    ``pretrained`` is an open_clip tag (``"openai"``: QuickGELU is switched on as the tag
    requires), a checkpoint file (open_clip's default preprocessing), or ``None`` for random
    weights (explicitly only; drawn from ``seed`` without touching the global RNG). A tag's
    weights are looked up in the local cache and never downloaded unless ``download=True``; if
    absent, :class:`WeightsNotFoundError` says where they were looked for and how to get them.
    """

    name = "open_clip"

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = "openai",
                 device: str | torch.device = "auto", normalize: bool = False,
                 cache_dir: str | None = None, download: bool = False, seed: int = 0):
        import open_clip

        self.device = resolve_device(device)
        self.model_name, self.pretrained, self.normalize = model_name, pretrained, bool(normalize)
        model, preprocess, checkpoint = load_open_clip(
            model_name, pretrained, cache_dir=cache_dir, download=download, seed=seed, not_found=self._not_found,
            tag_preprocessing=True)
        _drop_text_tower(model)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.preprocess_cfg = {key: list(value) if isinstance(value, tuple) else value
                               for key, value in dict(model.visual.preprocess_cfg).items()}
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        self._checkpoint = checkpoint
        self._identity: dict[str, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """Backend, model, pretrained tag, the weights' hash (``sha256:<hex>`` of the checkpoint
        file loaded, or ``weights_sha256:<hex>`` of the image model's state dict for random
        weights), output, normalisation and the preprocessing. The hash is computed on first use
        and memoised."""
        if self._identity is None:
            weights = ("sha256:" + sha256_of_file(self._checkpoint) if self._checkpoint is not None
                       else "weights_sha256:" + weights_sha256(self.model))
            self._identity = {"backend": "open_clip-image", "model": self.model_name, "pretrained": self.pretrained,
                              "weights_sha256": weights, "output": "encode_image (projected)",
                              "normalized": self.normalize, "preprocess": dict(self.preprocess_cfg)}
        return {**self._identity, "preprocess": dict(self._identity["preprocess"])}

    def _not_found(self, tag_cfg: dict[str, Any], cache_dir: str | None, detail: str) -> WeightsNotFoundError:
        """The text encoder's message (same weights, same places, same command), naming this class."""
        return open_clip_not_found(type(self).__name__, self.model_name, self.pretrained, tag_cfg, cache_dir, detail)

    def encode(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        images = _check_images(images, batch_size)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                pixels = torch.stack([self.preprocess(image) for image in images[start:start + batch_size]])
                rows.append(self.model.encode_image(pixels.to(self.device), normalize=self.normalize).float().cpu())
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(rows).numpy().astype(np.float32, copy=False)


def tiny_open_clip_image_encoder(seed: int = 0, device: str | torch.device = "auto",
                                 normalize: bool = False) -> OpenCLIPImageEncoder:
    """The image tower of :func:`~fer_utils.vlm.encoders.tiny_open_clip_encoder`'s model (a
    one-layer 32-pixel ViT, 16-d ``encode_image``): :class:`OpenCLIPImageEncoder`'s code with
    meaningless vectors, offline, for tests and CI."""
    return tiny_open_clip(OpenCLIPImageEncoder, seed, device, normalize)


# --------------------------------------------------------------------------------------------
# registry


IMAGE_ENCODERS: dict[str, Callable[..., ImageEncoder]] = {
    "open_clip": OpenCLIPImageEncoder,
    "tiny_open_clip": tiny_open_clip_image_encoder,
}
"""Image encoders by name: ``open_clip`` is CLIP ViT-L/14 (openai) ``encode_image`` by default."""


def make_image_encoder(name: str, **kwargs: Any) -> ImageEncoder:
    """The image encoder ``name`` (a key of :data:`IMAGE_ENCODERS`) built with ``kwargs``
    (``model_name``, ``pretrained``, ``device``, ``seed``, ...); unknown names or arguments raise
    ConfigError."""
    return build(IMAGE_ENCODERS, "image encoder", name, kwargs)


# --------------------------------------------------------------------------------------------
# a data index through the cache


def embed_images(index: pd.DataFrame, encoder: ImageEncoder, cache_dir: str | os.PathLike | None = None, *,
                 batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, Throughput]:
    """``([len(index), encoder.dim] float32, throughput)``: one vector per index row, in order.

    Entries (namespace ``image-embeddings``) are per image, keyed by the image's content hash
    (:func:`~fer_utils.data.fingerprint.image_hashes`) and ``encoder.identity``; only the images
    the cache lacks are decoded (``FaceImage.load``) and embedded, ``batch_size * 8`` at a time,
    and stored after each chunk. An image present in several rows is embedded once (also with
    ``cache_dir=None``, which caches nothing). ``throughput.seconds`` counts decoding and embedding.
    """
    if index.empty:
        raise ValueError("no images to embed: the index is empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"embed_images(): batch_size must be an integer >= 1, got {batch_size!r}")
    hashes = image_hashes(index)
    images = face_images(index, hashes)
    first: dict[str, int] = {}   # content hash -> first row with it
    for i, sha in enumerate(hashes):
        first.setdefault(sha, i)
    distinct = list(first)
    cache = Cache(cache_dir, IMAGE_EMBEDDING_NAMESPACE, IMAGE_EMBEDDING_FORMAT)
    identity = encoder.identity
    rows, computed, seconds = cached_vectors(
        distinct, lambda sha: {"image": sha, "encoder": identity},
        lambda shas: encoder.encode([images[first[sha]].load() for sha in shas], batch_size=batch_size),
        encoder.dim, cache, f"image encoder {encoder.name}", "images", batch_size, progress)
    by_hash = dict(zip(distinct, rows))
    throughput = Throughput(len(hashes), len(distinct) - computed, computed, seconds, len(distinct))
    return np.stack([by_hash[sha] for sha in hashes]), throughput


__all__ = ["IMAGE_EMBEDDING_FORMAT", "IMAGE_EMBEDDING_NAMESPACE", "IMAGE_ENCODERS", "ImageEncoder",
           "OpenCLIPImageEncoder", "embed_images", "make_image_encoder", "tiny_open_clip_image_encoder"]

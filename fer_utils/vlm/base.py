"""The interfaces of the vision-language half of the study. Torch-free.

A **captioner** writes one sentence per face image::

    captions = captioner.caption(images, prompt, settings)     # list[str], one per image

``images`` is a sequence of :class:`FaceImage` (made from a data index by :func:`face_images`):
model captioners decode the pixels, the precomputed captioner looks the id up in a file, and the
simulated captioner (an experimental control) reads the label. ``prompt`` is the prompt's text
(:mod:`fer_utils.vlm.prompts` resolves names such as ``original``) and ``settings`` the
:class:`GenerationSettings`.

A **text encoder** turns sentences into one float32 vector each::

    vectors = encoder.encode(texts)                              # [len(texts), encoder.dim]

Both carry an ``identity``: a JSON-able dict of everything that determines their output (model id
and revision or a weights hash, the backend, the output layer). The caches key entries by it
(:mod:`fer_utils.vlm.pipeline`), so two captioners with the same identity must write the same
captions for the same inputs (pixels; or id and label for captioners with ``cached = False``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fer_utils.errors import ConfigError

PROGRESS_DELAY = 1.0
"""Seconds a model load runs before transformers' progress bar ("Loading weights") appears."""


def _calm_bar(factory, args, kwargs):
    """transformers' tqdm hook: no bar when stderr is not a terminal (a log, a pipe, a notebook's
    output), and none for work that ends within :data:`PROGRESS_DELAY` seconds."""
    kwargs = {**kwargs, "delay": max(kwargs.get("delay") or 0, PROGRESS_DELAY)}
    if not (getattr(sys.stderr, "isatty", None) and sys.stderr.isatty()):
        kwargs["disable"] = True
    return factory(*args, **kwargs)


@contextlib.contextmanager
def quiet_loading():
    """Load transformers models inside this block: their loading bars only show on a terminal, and
    only after a second (a tiny model's load draws nothing; BLIP-2 flan-t5-xl's still shows)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.set_tqdm_hook(_calm_bar)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


@dataclass(frozen=True)
class FaceImage:
    """One face of a data index: its id, where its pixels are, and its label (or None).

    Only the simulated captioner reads ``label``; model captioners call :meth:`load`.
    """

    id: str
    path: str | None = None
    pixels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    label: int | None = None
    sha256: str | None = None      # content hash of the image (cache keys), when known

    def load(self):
        """The image as an RGB PIL image (the project's one decoder, ``data.index.load_rgb``)."""
        from fer_utils.data.index import load_rgb
        return load_rgb(self.path, self.pixels)


def face_images(index: pd.DataFrame, hashes: Sequence[str] | None = None) -> list[FaceImage]:
    """One :class:`FaceImage` per row of a data index, in order (``hashes``: each row's content hash)."""
    if hashes is not None and len(hashes) != len(index):
        raise ValueError(f"{len(hashes)} hashes for {len(index)} index rows")
    out = []
    for i, row in enumerate(index.itertuples(index=False)):
        path = getattr(row, "path", None)
        pixels = getattr(row, "pixels", None)
        label = getattr(row, "label", None)
        out.append(FaceImage(
            id=str(row.id),
            path=None if path is None or (isinstance(path, float) and np.isnan(path)) else str(path),
            pixels=pixels if isinstance(pixels, np.ndarray) else None,
            label=None if label is None or pd.isna(label) else int(label),
            sha256=None if hashes is None else hashes[i],
        ))
    return out


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GenerationSettings:
    """How a model captioner generates: every field is part of the caption cache key.

    The original study: ``Salesforce/blip2-flan-t5-xl`` in float16, greedy decoding,
    ``max_new_tokens=30`` and transformers' defaults otherwise (:data:`ORIGINAL_GENERATION`).
    ``min_new_tokens`` equal to ``max_new_tokens`` makes every image cost the same number of
    decoding steps (benchmarks with random weights, which stop at random end tokens).
    ``dtype="auto"``: bfloat16 on CUDA (float16 where bfloat16 is unsupported), float32 on CPU.
    ``batch_size`` is part of the key too: batched generation pads, and padding can change the
    last digits of a logit and hence, rarely, a greedy token.
    """

    max_new_tokens: int = 30
    min_new_tokens: int = 0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    batch_size: int = 64
    dtype: str = "auto"

    def __post_init__(self):
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"generation setting {name} must be an integer >= 1, got {value!r}")
        for name in ("min_new_tokens", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"generation setting {name} must be an integer >= 0, got {value!r}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(f"generation setting min_new_tokens ({self.min_new_tokens}) exceeds "
                              f"max_new_tokens ({self.max_new_tokens})")
        if isinstance(self.repetition_penalty, bool) or not isinstance(self.repetition_penalty, (int, float)) \
                or not self.repetition_penalty > 0:
            raise ConfigError(f"generation setting repetition_penalty must be a number > 0, "
                              f"got {self.repetition_penalty!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"generation setting dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "GenerationSettings":
        """Settings from the keys of ``values`` that are fields (others are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


ORIGINAL_GENERATION = GenerationSettings(max_new_tokens=30, batch_size=1, dtype="float16")
"""The original study's settings: one image at a time, float16, greedy, 30 new tokens."""


class Captioner(ABC):
    """Writes one caption per image; see the module docstring."""

    name: str = "captioner"
    meaningful: bool = True
    """False for captioners whose text carries no information about the face (the tiny BLIP-2
    with random weights): pages say so."""
    simulated: bool = False
    """True for the simulated control (captions drawn from the label, not written by a model)."""
    cached: bool = True
    """Whether the pipeline caches this captioner's captions by image content. False for those
    whose captions depend on the id or label rather than the pixels (precomputed, simulated)."""

    def prepare(self, images: Sequence[FaceImage]) -> None:
        """Called once with the whole data set before it is captioned batch by batch: a place to
        check it as a whole (the precomputed captioner checks its file's ids). Does nothing here."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines this captioner's output, JSON-able (a cache-key part)."""

    @abstractmethod
    def caption(self, images: Sequence[FaceImage], prompt: str, settings: GenerationSettings) -> list[str]:
        """One caption per image, in order."""


class Encoder(ABC):
    """Turns items (sentences, images) into vectors: ``encoder.encode(items)`` is ``[len(items),
    encoder.dim]`` float32; ``identity`` is a JSON-able dict of everything that determines the
    vectors (a cache-key part)."""

    name: str = "encoder"
    dim: int = 0

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the vectors, JSON-able (a cache-key part)."""

    @abstractmethod
    def encode(self, items: Sequence, batch_size: int = 64) -> np.ndarray:
        """``[len(items), dim]`` float32, one row per item, in order."""


class TextEncoder(Encoder):
    """Embeds sentences; see the module docstring."""


def hf_download_command(repo_id: str, revision: str | None = None) -> str:
    """The one shell command of the installed huggingface_hub (``hf`` from 1.0, before it
    ``huggingface-cli``) that puts ``repo_id`` (at ``revision``) into the Hugging Face cache in effect."""
    import huggingface_hub

    major = int(huggingface_hub.__version__.split(".")[0])
    return (f"{'hf' if major >= 1 else 'huggingface-cli'} download {repo_id}"
            + (f" --revision {revision}" if revision else ""))


def factory_arguments(factory: Callable) -> list[str]:
    """The keyword arguments a model factory (a function or a class) takes."""
    return [p for p in inspect.signature(factory).parameters if p not in ("self", "cls")]


def build(factories: Mapping[str, Callable], what: str, name: str, kwargs: Mapping[str, Any]) -> Any:
    """``factories[name](**kwargs)``; a :class:`ConfigError` naming ``what`` (e.g. "text encoder")
    and the choices for an unknown name, or the arguments it takes for an unknown argument."""
    if name not in factories:
        raise ConfigError(f"unknown {what} {name!r}; choose one of: {', '.join(factories)}")
    accepted = factory_arguments(factories[name])
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"{what} {name!r} takes no argument(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(accepted) or 'none'}")
    return factories[name](**kwargs)


__all__ = ["DTYPES", "ORIGINAL_GENERATION", "Captioner", "FaceImage", "GenerationSettings", "TextEncoder",
           "face_images", "hf_download_command"]

"""Captions, text embeddings and CNN features of a large data set on Ray Data (optional extra ``scale``).

The single-process functions (:func:`~fer_utils.vlm.pipeline.caption_index`,
:func:`~fer_utils.vlm.pipeline.embed_texts`, :func:`~fer_utils.training.features.extract_features`) stay
the one place where entries are computed and keyed. Here the driver

1. builds the model once from a picklable *spec* (the same builders the CLI uses) to know the
   cache keys, and picks the index rows (or sentences) whose entry the cache lacks, one per
   distinct key;
2. sends only those rows through ``ray.data`` ``map_batches`` with a callable class: one model
   actor per GPU (``num_gpus=1``) on a cluster with GPUs, CPU actors (``num_cpus=1``) otherwise,
   ``concurrency`` of them. Each actor builds its model once and, for each batch of rows, calls
   the single-process function on that sub-index with the same cache folder: the entries are
   the ones a single-process run writes, by construction (writes are atomic, so actors never
   corrupt each other's entries);
3. reads every row back from the cache (the single-process function, which now finds them all;
   for features the cache itself, under the keys ``extract_features`` uses) and returns what
   the single-process function returns.

The cache folder must be one the actors can write and the driver can read: on one machine any
folder; on a cluster a shared filesystem (or run per machine and copy the folders together:
entries are per item and add up). Every node needs ``fer_utils`` and the model files installed.

Ray is imported only inside these functions: ``import fer_utils.inference.scale`` works without it, and
using it without Ray raises :class:`~fer_utils.errors.ConfigError` naming
``pip install 'fer_utils[scale]'``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from fer_utils.errors import ConfigError

INSTALL_HINT = "pip install 'fer_utils[scale]'"


def require_ray():
    """The ``ray`` module with Ray Data, or ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: pyarrow, ...)
    except ImportError as exc:
        raise ConfigError(f"Ray is not installed ({exc.msg if hasattr(exc, 'msg') else exc}); running on Ray "
                          f"needs the optional extra: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_kwargs) -> Iterator[Any]:
    """Attach to Ray for the ``with`` block; yields the ``ray`` module.

    ``address`` None or "" (or "local"): start a local instance (or attach to the one
    ``RAY_ADDRESS`` names, as ``ray.init()`` does); ``"auto"``: the cluster this machine joined
    with ``ray start``; ``"ray://host:port"``: a remote cluster through Ray Client. A session that
    was already initialised is used as it is and left running; one started here is shut down.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    target = None if address in (None, "", "local") else address
    try:
        ray.init(address=target, **{"log_to_driver": False, **init_kwargs})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if target is None else f"the Ray cluster at {target!r}"
        hint = " (start one with `ray start --head`, then `ray start --address=HEAD:6379` on the others)" \
            if target == "auto" else ""
        raise ConfigError(f"could not start or reach {where}: {exc}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --- picklable specs: what each actor builds once --------------------------------------------------

@dataclass(frozen=True)
class _FactorySpec:
    """A model by name and the keyword options of the :mod:`fer_utils.vlm` factory that its
    subclass names in ``factory`` (looked up when built, so importing this module stays light)."""

    factory: ClassVar[str]

    name: str
    options: dict = field(default_factory=dict)

    def build(self, device: str | None = None):
        """The model, on ``device`` if given (else on the one ``options`` name, if any)."""
        from fer_utils import vlm

        options = dict(self.options)
        if device is not None:
            options["device"] = device
        return getattr(vlm, self.factory)(self.name, **options)


@dataclass(frozen=True)
class CaptionerSpec(_FactorySpec):
    """A captioner by name and the options of :func:`fer_utils.vlm.make_captioner`."""

    factory: ClassVar[str] = "make_captioner"

    def for_keys(self):
        """This process's stand-in for the cache keys and the read-back: the captioner itself, except
        for ``blip2``, whose identity (model id and snapshot revision, or the folder's hash) is found
        without loading its weights (a BLIP-2 flan-t5-xl is about 16 GB in float32)."""
        if self.name != "blip2" or not self.options.get("model_id"):
            return self.build(device="cpu")
        from fer_utils.vlm.blip2 import Blip2Captioner

        model_id = self.options["model_id"]
        _, revision = Blip2Captioner._locate(model_id, self.options.get("revision") or None)
        return _KeysOnly(model_id, {"backend": "blip2", "model": model_id, "revision": revision})


class _KeysOnly:
    """A captioner's name and identity without its model: every caption must come from the cache."""

    cached = True

    def __init__(self, name: str, identity: dict):
        self.name, self._identity = name, identity

    @property
    def identity(self) -> dict:
        return dict(self._identity)

    def caption(self, images, prompt, settings):
        raise RuntimeError(f"{len(images)} captions of {self.name} are missing from the cache after the Ray run: "
                           "the actors wrote other entries than this process reads (another snapshot?)")


@dataclass(frozen=True)
class EncoderSpec(_FactorySpec):
    """A text encoder by name and the keyword arguments of :func:`fer_utils.vlm.make_encoder`."""

    factory: ClassVar[str] = "make_encoder"


@dataclass(frozen=True)
class CNNSpec:
    """A CNN for feature extraction: a bundle folder (its weights and preprocessing), or a registry
    architecture with its pretrained ImageNet weights (``pretrained=False``: random weights drawn
    from ``seed``, the same in every process) at ``image_size`` with ``normalization``."""

    model: str = ""
    bundle: str = ""
    pretrained: bool = True
    seed: int = 0
    image_size: int = 224
    normalization: str = "imagenet"

    def __post_init__(self):
        if bool(self.model) == bool(self.bundle):
            raise ConfigError("a CNN is either a registry model name or a bundle folder (exactly one of them)")

    def build(self):
        """``(model, preprocessing)``, on the CPU."""
        import torch

        from fer_utils.options import Preprocessing

        if self.bundle:
            from fer_utils.inference.predict import Predictor

            predictor = Predictor.from_bundle(self.bundle, device="cpu")
            return predictor.model, predictor.preprocessing
        from fer_utils.models import create_model

        if not self.pretrained:
            torch.manual_seed(self.seed)
        model = create_model(self.model, pretrained=self.pretrained)
        return model, Preprocessing.preset(self.image_size, self.normalization)


# --- the Ray Data plumbing ---------------------------------------------------------------------------

def _actor_resources(ray, concurrency: int | None, use_gpu: bool | None) -> tuple[int, dict]:
    """(number of actors, their resource request): one GPU each where the cluster has GPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if use_gpu is None:
        use_gpu = gpus > 0
    if use_gpu and not gpus:
        raise ConfigError("GPU actors were asked for, but the Ray cluster has no GPU")
    if concurrency is None:
        concurrency = gpus if use_gpu else max(1, int(resources.get("CPU", 1)))
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
    return concurrency, ({"num_gpus": 1} if use_gpu else {"num_cpus": 1})


def run_actors(worker_cls, rows: int, constructor: dict, *, batch_rows: int, concurrency: int | None,
               use_gpu: bool | None) -> tuple[pd.DataFrame, int, float]:
    """Positions ``0 .. rows-1`` through ``worker_cls`` actors, ``batch_rows`` per call:
    ``(reports, computed, seconds)``, the concatenated per-batch reports (columns rows, computed,
    seconds, note), how many entries the actors computed and the wall-clock seconds of the run."""
    start = time.perf_counter()
    ray = require_ray()
    actors, resources = _actor_resources(ray, concurrency, use_gpu)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    blocks = max(1, min(math.ceil(rows / batch_rows), 4 * actors))
    # One DataFrame per block, split here: Ray's own split (override_num_blocks) goes through
    # np.array_split, which returns arrays, not DataFrames, under pandas 3.
    positions = ray.data.from_pandas([pd.DataFrame({"row": part})
                                      for part in np.array_split(np.arange(rows, dtype=np.int64), blocks)])
    reports = positions.map_batches(
        worker_cls, batch_size=batch_rows, batch_format="pandas", fn_constructor_kwargs=constructor,
        compute=ray.data.ActorPoolStrategy(size=min(actors, blocks)), **resources)
    logger = logging.getLogger("ray.data")   # its per-run INFO lines (plan, log folder) would drown the summary
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        reports = reports.to_pandas()
    finally:
        logger.setLevel(level)
    return reports, int(reports["computed"].sum()), time.perf_counter() - start


def _report(rows: int, computed: int, seconds: float, note: str = "") -> pd.DataFrame:
    return pd.DataFrame({"rows": [rows], "computed": [computed], "seconds": [seconds], "note": [note]})


class _CaptionWorker:
    """A Ray Data actor: one captioner, :func:`caption_index` on each batch of rows."""

    def __init__(self, spec: CaptionerSpec, index: pd.DataFrame, prompt: str, settings, cache_dir: str):
        self.captioner = spec.build()
        self.index, self.prompt, self.settings, self.cache_dir = index, prompt, settings, cache_dir

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from fer_utils.vlm.pipeline import caption_index

        rows = self.index.iloc[batch["row"].to_numpy()]
        result = caption_index(rows, self.captioner, self.prompt, self.settings, self.cache_dir, postprocess=False)
        return _report(len(rows), result.throughput.computed, result.throughput.seconds)


class _EmbedWorker:
    """A Ray Data actor: one text encoder, :func:`embed_texts` on each batch of sentences."""

    def __init__(self, spec: EncoderSpec, texts: list[str], cache_dir: str, batch_size: int):
        self.encoder = spec.build()
        self.texts, self.cache_dir, self.batch_size = texts, cache_dir, batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from fer_utils.vlm.pipeline import embed_texts

        texts = [self.texts[i] for i in batch["row"].to_numpy()]
        _, throughput = embed_texts(texts, self.encoder, self.cache_dir, batch_size=self.batch_size)
        return _report(len(texts), throughput.computed, throughput.seconds)


class _FeatureWorker:
    """A Ray Data actor: one CNN, :func:`extract_features` on each batch of rows."""

    def __init__(self, spec: CNNSpec, index: pd.DataFrame, options: dict, cache_dir: str):
        self.model, self.preprocessing = spec.build()
        self.index, self.options, self.cache_dir = index, options, cache_dir

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from fer_utils.training.features import extract_features
        from fer_utils.models.runtime import amp_dtype, resolve_device

        rows = self.index.iloc[batch["row"].to_numpy()]
        start = time.perf_counter()
        extract_features(self.model, rows, self.preprocessing, cache_dir=self.cache_dir, **self.options)
        device = resolve_device(self.options["device"])
        precision = str(amp_dtype(device)) if self.options["amp"] else "float32"
        return _report(len(rows), len(rows), time.perf_counter() - start, precision)


def _cache_root(cache_dir) -> str:
    if cache_dir is None:
        raise ConfigError("a Ray run writes its results into the cache: it needs a cache folder (cache_dir)")
    return os.fspath(os.path.abspath(cache_dir))


# --- the three steps -----------------------------------------------------------------------------------

def caption_index_ray(index: pd.DataFrame, spec: CaptionerSpec, prompt: str, settings,
                      cache_dir: str | os.PathLike, *, postprocess: bool = True, concurrency: int | None = None,
                      use_gpu: bool | None = None, batch_rows: int | None = None):
    """:func:`~fer_utils.vlm.pipeline.caption_index` of ``index`` with the captioning on Ray actors.

    Returns the same :class:`~fer_utils.vlm.pipeline.CaptionResult` (same table, same cache
    entries); its throughput counts the rows the cache held before, the captions the actors
    computed and the wall-clock seconds of the Ray step. ``batch_rows`` (default: 4 generation
    batches) rows go to an actor per call. A captioner that is not cached (precomputed, simulated:
    instant) runs in this process.
    """
    from fer_utils.cache import Cache, still_to_compute
    from fer_utils.data.fingerprint import image_hashes
    from fer_utils.vlm.base import face_images
    from fer_utils.vlm.pipeline import (CAPTION_FORMAT, CAPTION_NAMESPACE, CaptionResult, Throughput,
                                        cached_caption_entries, caption_index, caption_keys, hit_costs)

    require_ray()
    if index.empty:
        raise ValueError("no images to caption: the index is empty")
    root = _cache_root(cache_dir)
    captioner = spec.for_keys()   # this process's copy: the cache keys, then the read-back
    if not getattr(captioner, "cached", True):
        return caption_index(index, captioner, prompt, settings, root, postprocess=postprocess)
    cache = Cache(root, CAPTION_NAMESPACE, CAPTION_FORMAT)
    keys = caption_keys(cache, face_images(index, image_hashes(index)), captioner, prompt, settings)
    entries = cached_caption_entries(cache, keys)
    todo = still_to_compute(keys, [caption for caption, _ in entries])
    hits, timed, timed_seconds = hit_costs(keys, entries)
    computed, seconds = 0, 0.0
    if todo:
        rows = index.iloc[list(todo.values())]
        _, computed, seconds = run_actors(
            _CaptionWorker, len(rows),
            {"spec": spec, "index": rows, "prompt": prompt, "settings": settings, "cache_dir": root},
            batch_rows=batch_rows or settings.batch_size * 4, concurrency=concurrency, use_gpu=use_gpu)
    result = caption_index(index, captioner, prompt, settings, root, postprocess=postprocess)
    if result.throughput.computed:
        raise RuntimeError(f"after the Ray run {result.throughput.computed} captions were still missing from "
                           f"{root}: the actors wrote other entries than this process reads (another model?)")
    return CaptionResult(result.table, Throughput(len(index), hits, computed, seconds, len(set(keys)), timed,
                                                  timed_seconds))


def embed_texts_ray(texts: Sequence[str], spec: EncoderSpec, cache_dir: str | os.PathLike, *,
                    batch_size: int = 64, concurrency: int | None = None, use_gpu: bool | None = None,
                    batch_rows: int | None = None, encoder=None):
    """:func:`~fer_utils.vlm.pipeline.embed_texts` with the encoding on Ray actors: the same
    ``(vectors, throughput)`` and cache entries; only sentences without an entry are sent.
    ``encoder``: this process's copy of ``spec`` if already built (default: built here, on the CPU)."""
    from fer_utils.cache import Cache
    from fer_utils.vlm.pipeline import (EMBEDDING_FORMAT, EMBEDDING_NAMESPACE, Throughput, embed_texts,
                                        embedding_key_parts, valid_vector)

    require_ray()
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts to embed")
    root = _cache_root(cache_dir)
    encoder = encoder if encoder is not None else spec.build(device="cpu")
    cache = Cache(root, EMBEDDING_NAMESPACE, EMBEDDING_FORMAT)
    distinct = list(dict.fromkeys(texts))
    identity = encoder.identity
    rows = cache.get_arrays([cache.key(**embedding_key_parts(text, identity)) for text in distinct])
    missing = [text for text, row in zip(distinct, rows) if not valid_vector(row, encoder.dim)]
    computed, seconds = 0, 0.0
    if missing:
        _, computed, seconds = run_actors(
            _EmbedWorker, len(missing), {"spec": spec, "texts": missing, "cache_dir": root, "batch_size": batch_size},
            batch_rows=batch_rows or batch_size * 8, concurrency=concurrency, use_gpu=use_gpu)
    vectors, again = embed_texts(texts, encoder, root, batch_size=batch_size)
    if again.computed:
        raise RuntimeError(f"after the Ray run {again.computed} sentences were still missing from {root}")
    return vectors, Throughput(len(texts), len(distinct) - len(missing), computed, seconds, len(distinct))


def extract_features_ray(spec: CNNSpec, index: pd.DataFrame, *, batch_size: int = 64,
                         num_workers: int | str = 0, device: str = "auto", cache_dir: str | os.PathLike,
                         amp: bool = False, channels_last: bool = True, concurrency: int | None = None,
                         use_gpu: bool | None = None, batch_rows: int | None = None):
    """:func:`~fer_utils.training.features.extract_features` with the extraction on Ray actors.

    Returns ``(ids, features, throughput)``: the ids and features ``extract_features`` returns
    (read from the cache entries the actors wrote, under the same keys) and how many images the
    cache held, how many the actors computed and the wall-clock seconds. ``device`` is each
    actor's device ("auto": the GPU Ray gave it, else the CPU); ``num_workers`` each actor's
    DataLoader workers.
    """
    import torch

    from fer_utils.cache import Cache
    from fer_utils.training.features import CACHE_FORMAT, CACHE_NAMESPACE, feature_keys, feature_layer, is_feature_row
    from fer_utils.vlm.pipeline import Throughput

    require_ray()
    if index.empty:
        raise ValueError("no features to extract: the index is empty")
    root = _cache_root(cache_dir)
    model, preprocessing = spec.build()
    layer, _ = feature_layer(model)
    cache = Cache(root, CACHE_NAMESPACE, CACHE_FORMAT)
    # Precision is part of the key: float32, or the autocast dtype of the actors' device (bfloat16
    # on CPUs and recent GPUs; the actors report theirs, and the read-back uses what they report).
    precision = str(torch.bfloat16) if amp else "float32"
    keys = feature_keys(cache, index, model, preprocessing, layer, precision)

    found, todo = cache.lookup_arrays(keys, is_feature_row)
    hits = len({key for key, row in zip(keys, found) if row is not None})
    computed, seconds = 0, 0.0
    if todo:
        rows = index.iloc[list(todo.values())]
        options = {"batch_size": batch_size, "num_workers": num_workers, "device": device, "amp": amp,
                   "channels_last": channels_last}
        reports, computed, seconds = run_actors(
            _FeatureWorker, len(rows), {"spec": spec, "index": rows, "options": options, "cache_dir": root},
            batch_rows=batch_rows or batch_size * 4, concurrency=concurrency, use_gpu=use_gpu)
        used = set(reports["note"])
        if used != {precision}:
            raise RuntimeError(f"the actors computed features at precision {', '.join(sorted(used))}, not "
                               f"{precision}: amp on a GPU without bfloat16 (float16) keys its entries apart; "
                               "run without amp, or single-process on that GPU")
    rows, _ = cache.lookup_arrays(keys, is_feature_row)
    missing = sum(row is None for row in rows)
    if missing:
        raise RuntimeError(f"after the Ray run {missing} feature rows were still missing from {root}")
    ids = index["id"].astype(str).tolist()
    return ids, np.stack(rows), Throughput(len(index), hits, computed, seconds, len(set(keys)))


__all__ = ["INSTALL_HINT", "CNNSpec", "CaptionerSpec", "EncoderSpec", "caption_index_ray", "embed_texts_ray",
           "extract_features_ray", "ray_session", "require_ray"]

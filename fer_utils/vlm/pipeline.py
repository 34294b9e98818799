"""Captions and text embeddings of a data index, through the project's one cache.

``caption_index`` writes one caption per index row and ``embed_texts`` one vector per caption;
both compute only what the cache lacks::

    captions = caption_index(index, captioner, prompt, settings, cache_dir=paths.cache)
    vectors = embed_texts(captions.table["caption"], encoder, cache_dir=paths.cache)

**Caption entries** (namespace ``captions``) are per image, keyed by the image's content hash,
the captioner's ``identity`` (model id and revision, or a weights hash), the prompt's text and
every generation setting: a changed prompt, setting or model misses, and work split into shards
(``fer caption --shard i/n``) or run on several machines adds up. The raw caption is cached;
post-processing (cheap, and an option) runs after. Captioners that read a file or a label rather
than the pixels (precomputed, simulated: ``cached = False``) are not cached.

**Embedding entries** (namespace ``text-embeddings``) are per sentence, keyed by the sentence and
the encoder's identity: identical captions (frequent with one-word prompts) are embedded once.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fer_utils.cache import Cache
from fer_utils.data.fingerprint import image_hashes
from fer_utils.vlm.base import Captioner, FaceImage, GenerationSettings, TextEncoder, face_images
from fer_utils.vlm.postprocess import caption_table

CAPTION_NAMESPACE = "captions"
CAPTION_FORMAT = 1
EMBEDDING_NAMESPACE = "text-embeddings"
EMBEDDING_FORMAT = 1


@dataclass
class Throughput:
    """How much of a step the cache served and how fast the rest was computed."""

    items: int            # rows asked for
    cache_hits: int       # distinct items the cache held
    computed: int         # distinct items computed
    seconds: float        # time spent computing (cache reads excluded)
    distinct: int | None = None   # distinct items among the rows (None: every row counted apart)

    @property
    def per_second(self) -> float | None:
        """Items computed per second, or None when nothing was computed."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    def summary(self, what: str = "images") -> str:
        rate = self.per_second
        speed = f", {rate:,.1f} {what}/s" if rate is not None else ""
        distinct = f" ({self.distinct:,} distinct)" if self.distinct is not None else ""
        return (f"{self.items:,} {what}{distinct}: {self.cache_hits:,} from the cache, "
                f"{self.computed:,} computed in {self.seconds:.1f} s{speed}")

    def to_dict(self) -> dict:
        return {"items": self.items, "distinct": self.distinct, "cache_hits": self.cache_hits,
                "computed": self.computed, "seconds": self.seconds, "per_second": self.per_second}


@dataclass
class CaptionResult:
    table: pd.DataFrame       # id, raw, caption, vote, vote_label, emotion_word, repetition (index order)
    throughput: Throughput


def shard(index: pd.DataFrame, spec: str | tuple[int, int] | None) -> pd.DataFrame:
    """Rows ``i, i + n, i + 2n, ...`` (1-based ``i``) of ``index`` for ``spec`` "i/n"; all for None.

    Shards of one index are disjoint and together cover it; their cache entries add up.
    """
    if spec is None:
        return index
    if isinstance(spec, str):
        try:
            i, n = (int(part) for part in spec.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/n (e.g. 2/4), got {spec!r}") from None
    else:
        i, n = spec
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: i must be between 1 and n")
    return index.iloc[i - 1::n]


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def caption_keys(cache: Cache, images: Sequence[FaceImage], captioner: Captioner, prompt: str,
                 settings: GenerationSettings) -> list[str]:
    """The caption entry's key of each image (images carrying their content hash), in order."""
    shared = {"captioner": captioner.identity, "prompt": prompt, "settings": settings.to_dict()}
    return [cache.key(image=image.sha256, **shared) for image in images]


def cached_captions(cache: Cache, keys: Sequence[str]) -> list[str | None]:
    """The cached raw caption of each key, None where the entry is absent or unreadable."""
    return [entry.get("caption") if isinstance(entry, dict) and isinstance(entry.get("caption"), str) else None
            for entry in cache.get_many(list(keys), "json")]


def embedding_key_parts(text: str, identity: dict) -> dict:
    """The named parts of a text embedding's key: the sentence and the encoder's identity."""
    return {"text": text, "encoder": identity}


def valid_vector(row: np.ndarray | None, dim: int) -> bool:
    """Whether a cached row is a usable vector: 1-d float32 of length ``dim``."""
    return row is not None and row.ndim == 1 and row.dtype == np.float32 and len(row) == dim


def caption_index(index: pd.DataFrame, captioner: Captioner, prompt: str, settings: GenerationSettings,
                  cache_dir: str | os.PathLike | None = None, *, postprocess: bool = True,
                  progress: bool = False, chunk_batches: int = 4) -> CaptionResult:
    """One caption per row of ``index`` (in order), computing only what the cache lacks.

    Missing captions are computed ``chunk_batches`` batches at a time and stored after each chunk,
    so an interrupted run keeps what it finished. ``prompt`` is the prompt's text.
    """
    if index.empty:
        raise ValueError("no images to caption: the index is empty")
    cached = getattr(captioner, "cached", True)
    images = face_images(index, image_hashes(index) if cached else None)
    if hasattr(captioner, "prepare"):
        captioner.prepare(images)
    cache = Cache(cache_dir if cached else None, CAPTION_NAMESPACE, CAPTION_FORMAT)
    keys = caption_keys(cache, images, captioner, prompt, settings) if cache.enabled else []
    found = cached_captions(cache, keys) if cache.enabled else [None] * len(images)
    todo: dict[str, int] = {}   # key (or id, uncached) -> first row needing it
    for i, (image, caption) in enumerate(zip(images, found)):
        if caption is None:
            todo.setdefault(keys[i] if cache.enabled else f"row{i}", i)
    computed: dict[str, str] = {}
    seconds = 0.0
    if todo:
        pending = list(todo.items())
        bar = _progress(len(pending), "captioning", progress)
        for part in _chunks(pending, settings.batch_size * chunk_batches):
            start = time.perf_counter()
            texts = captioner.caption([images[i] for _, i in part], prompt, settings)
            seconds += time.perf_counter() - start
            if len(texts) != len(part):
                raise RuntimeError(f"captioner {captioner.name} returned {len(texts)} captions for {len(part)} images")
            for (key, _), text in zip(part, texts):
                computed[key] = text
                if cache.enabled:
                    cache.put_json(key, {"caption": text})
            bar.update(len(part))
        bar.close()
    raw = []
    for i, caption in enumerate(found):
        raw.append(caption if caption is not None else computed[keys[i] if cache.enabled else f"row{i}"])
    table = caption_table([image.id for image in images], raw, postprocess=postprocess)
    hits = len({key for key, caption in zip(keys, found) if caption is not None}) if cache.enabled else 0
    distinct = len(set(keys)) if cache.enabled else None
    return CaptionResult(table, Throughput(len(images), hits, len(todo), seconds, distinct))


def embed_texts(texts: Sequence[str], encoder: TextEncoder, cache_dir: str | os.PathLike | None = None, *,
                batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, Throughput]:
    """``([len(texts), encoder.dim] float32, throughput)``: one vector per text, cached per distinct text."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts to embed")
    cache = Cache(cache_dir, EMBEDDING_NAMESPACE, EMBEDDING_FORMAT)
    distinct = list(dict.fromkeys(texts))
    identity = encoder.identity
    rows, computed, seconds = cached_vectors(
        distinct, lambda text: embedding_key_parts(text, identity),
        lambda part: encoder.encode(part, batch_size=batch_size), encoder.dim, cache,
        f"text encoder {encoder.name}", "texts", batch_size, progress)
    by_text = dict(zip(distinct, rows))
    throughput = Throughput(len(texts), len(distinct) - computed, computed, seconds, len(distinct))
    return np.stack([by_text[text] for text in texts]), throughput


def cached_vectors(items: Sequence, key_parts, compute, dim: int, cache: Cache, who: str, noun: str,
                   batch_size: int, progress: bool) -> tuple[list[np.ndarray], int, float]:
    """``(one float32 vector per item, items computed, seconds computing)``: the cache's entry of each
    item (keyed by ``key_parts(item)``), and for the misses ``compute(items) -> [n, dim]``,
    ``batch_size * 8`` items at a time, each chunk stored as soon as it is done. ``who`` and
    ``noun`` name the model and the items in errors and the progress bar. Text and image
    embeddings share it."""
    keys = [cache.key(**key_parts(item)) for item in items] if cache.enabled else []
    rows = ([row if valid_vector(row, dim) else None for row in cache.get_arrays(keys)]
            if cache.enabled else [None] * len(items))
    missing = [i for i, row in enumerate(rows) if row is None]
    seconds = 0.0
    if missing:
        bar = _progress(len(missing), f"embedding {noun}", progress)
        for part in _chunks(missing, batch_size * 8):
            start = time.perf_counter()
            vectors = np.asarray(compute([items[i] for i in part]), dtype=np.float32)
            seconds += time.perf_counter() - start
            if vectors.shape != (len(part), dim):
                raise RuntimeError(f"{who} returned shape {vectors.shape} for {len(part)} {noun} of dimension {dim}")
            for i, vector in zip(part, vectors):
                rows[i] = vector
                if cache.enabled:
                    cache.put_array(keys[i], vector)
            bar.update(len(part))
        bar.close()
    return rows, len(missing), seconds


def _progress(total: int, what: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=what, unit="item", disable=not enabled, leave=False)


__all__ = ["CAPTION_FORMAT", "CAPTION_NAMESPACE", "EMBEDDING_FORMAT", "EMBEDDING_NAMESPACE", "CaptionResult",
           "FaceImage", "Throughput", "cached_captions", "cached_vectors", "caption_index", "caption_keys",
           "embed_texts", "embedding_key_parts", "shard", "valid_vector"]

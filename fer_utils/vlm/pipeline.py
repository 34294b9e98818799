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

from fer_utils.cache import Cache, still_to_compute
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
    hits_timed: int = 0           # cache hits whose entry recorded what computing it cost
    hits_seconds: float = 0.0     # that cost, summed (measured when the entries were made)

    @property
    def per_second(self) -> float | None:
        """Items computed per second, or None when nothing was computed."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    @property
    def per_second_when_made(self) -> float | None:
        """Items per second over everything this step needed, as measured when each item was
        computed: this run's computing plus what the timed cache hits cost when they were made
        (perhaps on another machine); None when nothing carries a time."""
        count, seconds = self.computed + self.hits_timed, self.seconds + self.hits_seconds
        return count / seconds if count and seconds > 0 else None

    def summary(self, what: str = "images") -> str:
        rate, made = self.per_second, self.per_second_when_made
        speed = (f", {rate:,.1f} {what}/s" if rate is not None else
                 f" ({made:,.1f} {what}/s when the cached ones were made)" if made is not None else "")
        distinct = f" ({self.distinct:,} distinct)" if self.distinct is not None else ""
        return (f"{self.items:,} {what}{distinct}: {self.cache_hits:,} from the cache, "
                f"{self.computed:,} computed in {self.seconds:.1f} s{speed}")

    def to_dict(self) -> dict:
        return {"items": self.items, "distinct": self.distinct, "cache_hits": self.cache_hits,
                "computed": self.computed, "seconds": self.seconds, "per_second": self.per_second,
                "hits_timed": self.hits_timed, "hits_seconds": self.hits_seconds,
                "per_second_when_made": self.per_second_when_made}


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
    if n < 1:
        raise ValueError(f"shard {i}/{n}: n must be at least 1")
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


def cached_caption_entries(cache: Cache, keys: Sequence[str]) -> list[tuple[str | None, float | None]]:
    """``(raw caption, seconds it cost when made)`` of each key: ``(None, None)`` where the entry
    is absent or unreadable, seconds None where the entry has no usable time (older entries)."""
    out = []
    for entry in cache.get_many(list(keys), "json"):
        if not (isinstance(entry, dict) and isinstance(entry.get("caption"), str)):
            out.append((None, None))
            continue
        cost = entry.get("seconds")
        valid = isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 < cost < float("inf")
        out.append((entry["caption"], float(cost) if valid else None))
    return out


def hit_costs(keys: Sequence[str], entries: Sequence[tuple[str | None, float | None]]) -> tuple[int, int, float]:
    """``(distinct keys the cache held, how many of them carry their cost, that cost summed)`` of
    :func:`cached_caption_entries`' answer for ``keys``."""
    held = {key: cost for key, (caption, cost) in zip(keys, entries) if caption is not None}
    timed = [cost for cost in held.values() if cost is not None]
    return len(held), len(timed), float(sum(timed))


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
    entries = cached_caption_entries(cache, keys) if cache.enabled else [(None, None)] * len(images)
    found = [caption for caption, _ in entries]
    # key (or, uncached, the row) -> first row needing it
    todo = still_to_compute(keys if cache.enabled else [f"row{i}" for i in range(len(images))], found)
    computed: dict[str, str] = {}
    seconds = 0.0
    if todo:
        pending = list(todo.items())
        bar = _progress(len(pending), "captioning", progress)
        for part in _chunks(pending, settings.batch_size * chunk_batches):
            start = time.perf_counter()
            texts = captioner.caption([images[i] for _, i in part], prompt, settings)
            spent = time.perf_counter() - start
            seconds += spent
            if len(texts) != len(part):
                raise RuntimeError(f"captioner {captioner.name} returned {len(texts)} captions for {len(part)} images")
            for (key, _), text in zip(part, texts):
                computed[key] = text
                if cache.enabled:   # with its share of the batch's time, so a later run can say what it cost
                    cache.put_json(key, {"caption": text, "seconds": spent / len(part)})
            bar.update(len(part))
        bar.close()
    raw = []
    for i, caption in enumerate(found):
        raw.append(caption if caption is not None else computed[keys[i] if cache.enabled else f"row{i}"])
    table = caption_table([image.id for image in images], raw, postprocess=postprocess)
    hits, timed, timed_seconds = hit_costs(keys, entries) if cache.enabled else (0, 0, 0.0)
    distinct = len(set(keys)) if cache.enabled else None
    return CaptionResult(table, Throughput(len(images), hits, len(todo), seconds, distinct, timed, timed_seconds))


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
    from tqdm import tqdm  # plain text: a notebook widget would need JavaScript from a CDN in the book
    return tqdm(total=total, desc=what, unit="item", disable=not enabled, leave=False)


__all__ = ["CAPTION_FORMAT", "CAPTION_NAMESPACE", "EMBEDDING_FORMAT", "EMBEDDING_NAMESPACE", "CaptionResult",
           "FaceImage", "Throughput", "cached_caption_entries", "cached_vectors", "caption_index", "caption_keys", "hit_costs",
           "embed_texts", "embedding_key_parts", "shard", "valid_vector"]

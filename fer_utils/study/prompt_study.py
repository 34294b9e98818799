"""The prompt-ablation notebook's steps (``notebooks/04_vlm_prompts.ipynb``), each usable alone.

:func:`run_prompt` captions every image of the data set with one captioner and prompt, embeds the
captions with one text encoder, and measures what the captions carry:

- the captions themselves: share naming an emotion word, share with repeated phrases, mean
  length in words, share of distinct captions;
- the zero-shot **VLM vote** (the emotion a caption names) against the test labels: coverage,
  accuracy and macro F1, a missing vote counting as wrong;
- a **text-only linear probe** on the embeddings (:func:`fer_utils.study.probe.linear_probe`: trained
  on train, ``C`` chosen on validation, tested once);
- throughput: captions and embeddings computed per second (cache hits excluded).

:func:`save_prompt_run` writes the run record plus ``captions.csv`` (id, split, label, raw and
post-processed caption, vote).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.training import repro
from fer_utils.study.experiment import load_data, record
from fer_utils.labels import EMOTIONS
from fer_utils.study.probe import ProbeResult, linear_probe
from fer_utils.vlm import make_captioner, make_encoder
from fer_utils.vlm.base import Captioner, GenerationSettings, TextEncoder
from fer_utils.vlm.pipeline import CaptionResult, Throughput, caption_index, embed_texts
from fer_utils.vlm.postprocess import vote_scores
from fer_utils.vlm.prompts import resolve_prompt


def settings_of(cfg) -> GenerationSettings:
    """The :class:`GenerationSettings` of a prompt-ablation config."""
    return GenerationSettings(max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                              num_beams=cfg.num_beams, repetition_penalty=float(cfg.repetition_penalty),
                              no_repeat_ngram_size=cfg.no_repeat_ngram_size, batch_size=cfg.caption_batch_size,
                              dtype=cfg.dtype)


def captioner_of(cfg) -> Captioner:
    return make_captioner(cfg.captioner, model_id=cfg.model_id, revision=cfg.revision,
                          captions_file=cfg.captions_file, accuracy=cfg.simulated_accuracy, seed=cfg.seed,
                          device=cfg.device, dtype=cfg.dtype)


def encoder_of(cfg) -> TextEncoder:
    kwargs = {"device": cfg.device}
    if cfg.text_model_id:
        kwargs["model_id"] = cfg.text_model_id
    return make_encoder(cfg.text_encoder, **kwargs)


@dataclass
class PromptRun:
    prompt_name: str
    prompt_text: str
    captioner: Captioner
    encoder: TextEncoder
    index: pd.DataFrame            # the data set, split
    data: dict                     # its data record
    captions: CaptionResult        # one caption per index row, in index order
    embeddings: np.ndarray         # one vector per index row
    embedding_throughput: Throughput
    probe: ProbeResult
    metrics: dict


def caption_stats(table: pd.DataFrame) -> dict:
    """What the captions look like: shares of captions with an emotion word, with repetition,
    distinct; mean length in words."""
    words = table["caption"].fillna("").str.split().str.len()
    return {"n": int(len(table)), "share_emotion_word": float(table["vote"].notna().mean()),
            "share_repetition": float(table["repetition"].mean()), "mean_words": float(words.mean()),
            "share_distinct": float(table["caption"].nunique() / max(len(table), 1))}


def describe_captioner(captioner: Captioner) -> dict:
    return {"name": captioner.name, "meaningful": bool(getattr(captioner, "meaningful", True)),
            "simulated": bool(getattr(captioner, "simulated", False)),
            "cached": bool(getattr(captioner, "cached", True)), "identity": captioner.identity}


def run_prompt(cfg, progress: bool = True) -> PromptRun:
    """Caption, embed and probe the data set of ``cfg`` (a :class:`~fer_utils.study.config.VLMPromptsConfig`)."""
    repro.seed_everything(cfg.seed)
    prompt_name, prompt_text = resolve_prompt(cfg.prompt)
    index, data = load_data(cfg)
    captioner = captioner_of(cfg)
    captions = caption_index(index, captioner, prompt_text, settings_of(cfg), cfg.cache_dir,
                             postprocess=cfg.postprocess, progress=progress)
    encoder = encoder_of(cfg)
    embeddings, embedded = embed_texts(captions.table["caption"], encoder, cfg.cache_dir, progress=progress)
    probe = linear_probe(embeddings, index, cfg.probe_cs, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    test = (index["split"] == "test").to_numpy()
    votes = captions.table["vote"].to_numpy(dtype=object)[test]
    metrics = {
        "prompt": {"name": prompt_name, "text": prompt_text},
        "captioner": describe_captioner(captioner),
        "encoder": {"name": encoder.name, "dim": int(encoder.dim), "identity": encoder.identity},
        "captions": caption_stats(captions.table),
        "vote": vote_scores([None if pd.isna(v) else int(v) for v in votes], index["label"].to_numpy()[test]),
        "probe": probe.metrics,
        "throughput": {"captions": captions.throughput.to_dict(), "embeddings": embedded.to_dict()},
        # the run's headline numbers, flat (collect_runs and the comparison page read these)
        "accuracy": probe.metrics["accuracy"], "macro_f1": probe.metrics["macro_f1"],
        "weighted_f1": probe.metrics["weighted_f1"], "val_macro_f1": probe.val_macro_f1[probe.c],
    }
    return PromptRun(prompt_name, prompt_text, captioner, encoder, index, data, captions, embeddings, embedded,
                     probe, metrics)


def captions_frame(run: PromptRun) -> pd.DataFrame:
    """``captions.csv``: per image id, split, label, the raw and post-processed caption, the vote."""
    table = run.captions.table
    out = pd.DataFrame({"id": table["id"].to_numpy(), "split": run.index["split"].to_numpy(),
                        "label": [EMOTIONS[int(v)] for v in run.index["label"]]})
    for column in ("raw", "caption", "vote_label", "emotion_word", "repetition"):
        out[column] = table[column].to_numpy()
    return out


def save_prompt_run(cfg, run: PromptRun) -> Path:
    """The run record (probe predictions as ``predictions.csv``) plus ``captions.csv``."""
    folder = record(cfg, run.metrics, run.data, predictions=run.probe.predictions)
    captions_frame(run).to_csv(Path(folder) / "captions.csv", index=False)
    return Path(folder)


def examples(run: PromptRun, per_class: int = 2, split: str = "test", seed: int = 0) -> pd.DataFrame:
    """``per_class`` random rows of ``split`` per class (seeded): index row + caption + vote."""
    rng = np.random.default_rng(seed)
    frame = run.index.reset_index(drop=True).copy()
    frame["caption"] = run.captions.table["caption"].to_numpy()
    frame["vote_label"] = run.captions.table["vote_label"].to_numpy()
    picks = []
    for label in range(len(EMOTIONS)):
        rows = frame[(frame["split"] == split) & (frame["label"] == label)]
        picks.append(rows.iloc[rng.permutation(len(rows))[:per_class]])
    return pd.concat(picks, ignore_index=True)


__all__ = ["PromptRun", "caption_stats", "captioner_of", "captions_frame", "describe_captioner", "encoder_of",
           "examples", "run_prompt", "save_prompt_run", "settings_of"]

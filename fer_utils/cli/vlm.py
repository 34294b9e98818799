"""``fer caption`` and ``fer embed``: captions and text embeddings of a data set, into the cache.

Both take the data set folder, the captioner's options and ``--shard i/n`` (every n-th image from
the i-th: shards run on several machines or GPUs write cache entries that simply add up; copy the
cache folders together), or ``--ray [ADDRESS]`` (the work on Ray Data actors, one per GPU: see
:mod:`fer_utils.inference.scale`; the same cache entries). Each ends with a summary on stderr: images, cache
hits, images/s.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from fer_utils.options import TEXT_ENCODERS
from fer_utils.cli.base import flag_errors, project

DEFAULTS = {"captioner": "blip2", "prompt": "original"}


def caption_options(fn):
    """The options that say which captions: captioner, prompt, generation settings, shard, cache."""
    from fer_utils.options import CAPTIONERS

    options = [
        click.argument("data_path", type=click.Path(path_type=Path, exists=True)),
        click.option("--captioner", type=click.Choice(CAPTIONERS), default=DEFAULTS["captioner"], show_default=True,
                     help="blip2 (weights from the Hugging Face cache or a local folder), tiny_blip2 (random "
                          "weights: captions without meaning), precomputed (--captions-file) or simulated "
                          "(--accuracy: a control, not a model)."),
        click.option("--model-id", default="Salesforce/blip2-flan-t5-xl", show_default=True,
                     help="blip2: Hugging Face model id or local folder."),
        click.option("--revision", default="", help="blip2: the revision to load (default: the cached snapshot)."),
        click.option("--captions-file", default="", help="precomputed: CSV or JSONL file of id, caption."),
        click.option("--allow-extra-ids", is_flag=True,
                     help="precomputed: accept captions of ids DATA_PATH lacks (a file made for a larger data "
                          "set; --shard implies it)."),
        click.option("--accuracy", type=float, default=0.8, show_default=True,
                     help="simulated: share of captions naming the true emotion."),
        click.option("--prompt", default=DEFAULTS["prompt"], show_default=True,
                     help="A prompt name (original, emotions, describe, one_word) or the prompt's text."),
        click.option("--max-new-tokens", type=int, default=30, show_default=True),
        click.option("--min-new-tokens", type=int, default=0, show_default=True),
        click.option("--num-beams", type=int, default=1, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--no-repeat-ngram-size", type=int, default=0, show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="auto: bfloat16 on CUDA, float32 on CPU."),
        click.option("--device", default="auto", show_default=True),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="tiny_blip2: weight seed; simulated: draw seed."),
        click.option("--shard", default=None, metavar="I/N", help="Only every N-th image, from the I-th (1-based)."),
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
                     help="Cache folder (default: the project's data/cache)."),
        click.option("--progress/--no-progress", default=True, show_default=True),
        *ray_options(),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def ray_options():
    """``--ray [ADDRESS]`` and ``--concurrency N``: the options of every command that can run on Ray."""
    return [
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Run on Ray Data (optional extra: pip install 'fer_utils[scale]'): --ray alone starts "
                          "or attaches to a local instance, --ray auto joins the cluster of `ray start`, "
                          "--ray ray://HOST:PORT a remote one. One model actor per GPU (CPU actors without GPUs); "
                          "the cache entries are those of a run without --ray. Put it after DATA_PATH."),
        click.option("--concurrency", type=click.IntRange(min=1), default=None,
                     help="--ray: number of model actors (default: one per GPU of the cluster, else one per CPU)."),
    ]


def ray_context(opts: dict):
    """A Ray session for ``--ray`` (a clear error naming the extra when Ray is missing), else nothing."""
    if opts.get("ray_address") is None:
        return contextlib.nullcontext()
    from fer_utils.inference.scale import ray_session

    return ray_session(opts["ray_address"])


def load_shard(opts: dict):
    """The index of ``opts["data_path"]``, only the ``--shard`` part if given (a malformed
    ``--shard`` is a usage error naming the option; any other error passes through as it is)."""
    from fer_utils.data import load_dataset
    from fer_utils.vlm.pipeline import shard

    try:
        return shard(load_dataset(opts["data_path"]), opts["shard"])
    except ValueError as exc:
        if "shard" in str(exc):
            raise click.BadParameter(str(exc), param_hint="--shard") from None
        raise


def _captions(opts: dict):
    """Load the data set, build the captioner, caption the shard; returns (index, CaptionResult, cache)."""
    from fer_utils.vlm import GenerationSettings, make_captioner
    from fer_utils.vlm.pipeline import caption_index
    from fer_utils.vlm.prompts import resolve_prompt

    part = load_shard(opts)
    _, prompt = resolve_prompt(opts["prompt"])
    settings = GenerationSettings(max_new_tokens=opts["max_new_tokens"], min_new_tokens=opts["min_new_tokens"],
                                  num_beams=opts["num_beams"], repetition_penalty=opts["repetition_penalty"],
                                  no_repeat_ngram_size=opts["no_repeat_ngram_size"], batch_size=opts["batch_size"],
                                  dtype=opts["dtype"])
    options = dict(model_id=opts["model_id"], revision=opts["revision"], captions_file=opts["captions_file"],
                   accuracy=opts["accuracy"], seed=opts["seed"], device=opts["device"], dtype=opts["dtype"])
    cache = opts["cache_dir"] or project().cache
    if opts.get("ray_address") is not None and opts["captioner"] not in ("precomputed", "simulated"):
        from fer_utils.inference.scale import CaptionerSpec, caption_index_ray   # (those two read a file or draw: instant, local)

        result = caption_index_ray(part, CaptionerSpec(opts["captioner"], options), prompt, settings, cache,
                                   concurrency=opts["concurrency"])
        return part, result, cache
    captioner = make_captioner(opts["captioner"], **options)
    if (opts["shard"] or opts["allow_extra_ids"]) and hasattr(captioner, "allow_extra"):
        captioner.allow_extra = True   # a shard's file of captions may hold the other shards' ids
    result = caption_index(part, captioner, prompt, settings, cache, progress=opts["progress"])
    return part, result, cache


@click.command("caption")
@caption_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the captions as CSV (id, caption, raw, vote): usable as --captions-file elsewhere. "
                   "Default: stdout.")
@flag_errors
def caption_cmd(**opts):
    """Caption the images of DATA_PATH (into the cache); CSV of id, caption, raw caption, vote."""
    with ray_context(opts):
        _, result, _ = _captions(opts)
    table = result.table[["id", "caption", "raw", "vote_label"]].rename(columns={"vote_label": "vote"})
    if opts["out"] is None:
        table.to_csv(sys.stdout, index=False)
    else:
        table.to_csv(opts["out"], index=False)
    click.echo(f"captions: {result.throughput.summary('images')}", err=True)


@click.command("embed")
@caption_options
@click.option("--encoder", "encoder_name", type=click.Choice(TEXT_ENCODERS), default="minilm", show_default=True,
              help="Text encoder.")
@click.option("--text-model-id", default="", help="The encoder's model (default: its own).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write ids and vectors to this .npz file (arrays ids, embeddings).")
@flag_errors
def embed_cmd(encoder_name, text_model_id, **opts):
    """Embed the captions of DATA_PATH's images (captioning what the cache lacks) into the cache."""
    import numpy as np

    from fer_utils.vlm import make_encoder
    from fer_utils.vlm.pipeline import embed_texts

    kwargs = {"device": opts["device"], **({"model_id": text_model_id} if text_model_id else {})}
    with ray_context(opts):
        _, result, cache = _captions(opts)
        if opts["ray_address"] is not None:
            from fer_utils.inference.scale import EncoderSpec, embed_texts_ray

            spec = EncoderSpec(encoder_name, kwargs)
            encoder = spec.build(device="cpu")   # this process's copy: keys, read-back, the summary
            vectors, embedded = embed_texts_ray(result.table["caption"], spec, cache, batch_size=opts["batch_size"],
                                                concurrency=opts["concurrency"], encoder=encoder)
        else:
            encoder = make_encoder(encoder_name, **kwargs)
            vectors, embedded = embed_texts(result.table["caption"], encoder, cache, batch_size=opts["batch_size"],
                                            progress=opts["progress"])
    if opts["out"] is not None:
        np.savez(opts["out"], ids=result.table["id"].to_numpy(dtype=str), embeddings=vectors)
    click.echo(f"captions: {result.throughput.summary('images')}", err=True)
    click.echo(f"embeddings ({encoder.name}, {encoder.dim}-d): {embedded.summary('captions')}", err=True)


__all__ = ["caption_cmd", "embed_cmd", "load_shard", "ray_context", "ray_options"]

"""Benchmark BLIP-2 captioning: one image at a time (the original study's way) vs batches.

In one process, on the same images and model, it measures images per second of
:meth:`fer_utils.vlm.blip2.Blip2Captioner.caption` (decoding the images, the processor, batched
greedy ``generate``, decoding the text) at batch size 1 and at larger batch sizes, and reports
each as a multiple of batch 1. Every image costs the same number of decoding steps:
``min_new_tokens = max_new_tokens`` (30 by default, the original's ``max_new_tokens``), since
random weights would otherwise stop at random end tokens. Examples::

    python benchmarks/bench_captions.py                                   # tiny BLIP-2 (flan-t5 kind), CPU
    python benchmarks/bench_captions.py --model real-size --dry-run       # architecture and parameter count only
    python benchmarks/bench_captions.py --model real-size --device cuda --json out.json
    python benchmarks/bench_captions.py --model real-size --device cuda --static-cache --compile

``--model tiny``: :func:`~fer_utils.vlm.blip2.tiny_blip2` (a few hundred thousand parameters);
``--model real-size``: random weights in the exact architecture of ``Salesforce/blip2-flan-t5-xl``
(:func:`~fer_utils.vlm.blip2.original_architecture_config`, 3.94 billion parameters; bfloat16 on
CUDA), GPU only, since nothing is downloaded. Speed levers: ``--attn eager|sdpa`` (``--sdpa``; sdpa
is transformers 5.24's default), ``--static-cache`` (``cache_implementation="static"``) and
``--compile`` (``torch.compile`` of the language model's decoding step; transformers does this only
with a static cache, so ``--compile`` needs ``--static-cache``). Runs are interleaved across batch
sizes and the fastest of ``--repeats`` is kept, so all batch sizes see the same background load.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fer_utils.bench import peak_memory_mib
from fer_utils.bench.captions import CPU_BATCHES, GPU_BATCHES, measure_captions
from fer_utils.errors import ConfigError
from fer_utils.models.runtime import resolve_device
from fer_utils.vlm.blip2 import (ORIGINAL_MODEL_ID, TINY_KINDS, original_architecture_config,
                                 original_architecture_model, original_architecture_processor, resolve_dtype)
from fer_utils.vlm.prompts import PROMPTS


def dry_run(args, device: torch.device) -> dict:
    """Build the configuration and a weightless (meta-device) model; print the architecture and its size."""
    if args.model == "tiny":
        from fer_utils.vlm.blip2 import tiny_blip2
        model, _ = tiny_blip2(args.kind)
        config = model.config
    else:
        processor = original_architecture_processor()
        config = original_architecture_config(image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"))
        model = original_architecture_model(config, device="meta")
    dtype = resolve_dtype(args.dtype, device)
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("vision_model", "qformer", "language_projection", "language_model")}
    vision, qformer, text = config.vision_config, config.qformer_config, config.text_config
    result = {
        "model": args.model, "architecture": ORIGINAL_MODEL_ID if args.model == "real-size" else f"tiny-{args.kind}",
        "device": str(device), "weights_device": str(next(model.parameters()).device),
        "parameters": sum(p.numel() for p in model.parameters()), **{f"parameters_{k}": v for k, v in parts.items()},
        "vision": f"{vision.num_hidden_layers} layers, hidden {vision.hidden_size}, "
                  f"{vision.num_attention_heads} heads, "
                  f"mlp {vision.intermediate_size}, patch {vision.patch_size}, image {vision.image_size}",
        "qformer": f"{qformer.num_hidden_layers} layers, hidden {qformer.hidden_size}, {config.num_query_tokens} "
                   f"queries, cross-attention every {qformer.cross_attention_frequency}",
        "text": f"{text.model_type}, {getattr(text, 'num_layers', getattr(text, 'num_hidden_layers', '?'))} layers, "
                f"hidden {getattr(text, 'd_model', getattr(text, 'hidden_size', '?'))}, vocab {text.vocab_size}",
        "batch_sizes": args.batch_sizes, "dtype": str(dtype).removeprefix("torch."),
    }
    result["weights_gib"] = round(result["parameters"] * dtype.itemsize / 2**30, 2)
    result.update(peak_memory_mib(device))
    for key, value in result.items():
        shown = f"{value:.0f}" if isinstance(value, float) and key.startswith("peak") else value
        print(f"{key:>30}: {shown}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """The measurement is :func:`fer_utils.bench.captions.measure_captions` (also ``fer bench
    --only captions``); this script adds the speed levers, ``--dry-run`` and a per-batch table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=("tiny", "real-size"))
    parser.add_argument("--kind", default="t5", choices=TINY_KINDS, help="tiny model's language model (t5 like the "
                        "original's flan-t5, or opt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--batch-sizes", type=int, nargs="+",
                        help=f"default: {' '.join(map(str, CPU_BATCHES))} on CPU, "
                             f"{' '.join(map(str, GPU_BATCHES))} on CUDA")
    parser.add_argument("--n", type=int, help="images per batched measurement (rounded to whole batches; "
                        "default: 64, or the largest batch if larger)")
    parser.add_argument("--naive-n", type=int, help="images for batch size 1 (default: 16 tiny, 8 real-size)")
    parser.add_argument("--new-tokens", type=int, default=30, help="min_new_tokens = max_new_tokens")
    parser.add_argument("--prompt", default="original", help=f"a prompt name ({', '.join(PROMPTS)})")
    parser.add_argument("--image-size", type=int, default=100, help="side of the synthetic input images")
    parser.add_argument("--attn", choices=("eager", "sdpa"), help="attention implementation (default: transformers'")
    parser.add_argument("--sdpa", action="store_true", help="same as --attn sdpa")
    parser.add_argument("--static-cache", action="store_true", help="cache_implementation='static'")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoding step (needs --static-cache)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2, help="time each batch size this often, keep the best")
    parser.add_argument("--dry-run", action="store_true", help="build the config and a meta-device model, print its "
                        "size, allocate no weights, time nothing")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    if args.sdpa:
        if args.attn not in (None, "sdpa"):
            parser.error("--sdpa contradicts --attn " + args.attn)
        args.attn = "sdpa"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.batch_sizes is None:
        args.batch_sizes = list(GPU_BATCHES if device.type == "cuda" else CPU_BATCHES)
    if any(b < 1 for b in args.batch_sizes):
        parser.error("batch sizes must be >= 1")
    args.batch_sizes = sorted({1, *args.batch_sizes})  # 1: the baseline every ratio refers to
    if args.dry_run:
        return dry_run(args, device)
    try:
        result = measure_captions(args.model, args.kind, str(device), args.dtype, args.batch_sizes, args.n,
                                  args.naive_n, args.new_tokens, args.prompt, args.image_size, args.attn,
                                  args.static_cache, args.compile, args.repeats)
    except ConfigError as exc:
        parser.error(str(exc))
    batches, baseline = result["batches"], result["batch1_images_per_s"]
    print(f"model {args.model} ({result['architecture']}, random weights), device {device}, dtype "
          f"{result['dtype']}, torch threads {result['torch_threads']}")
    print(f"attn {result['attn']}, static cache {'yes' if args.static_cache else 'no'}, "
          f"compile {'yes' if args.compile else 'no'}; {args.new_tokens} new tokens per image, prompt {args.prompt!r}")
    print(f"{'batch':>6} {'images':>7} {'seconds':>9} {'images/s':>10} {'x batch 1':>10}")
    for batch, row in batches.items():
        print(f"{batch:>6} {row['images']:>7} {row['seconds']:>9.3f} {row['images_per_s']:>10.2f} "
              f"{row['x_batch1']:>10.2f}")
    for batch, why in result["skipped"].items():
        print(f"{batch:>6} {why}")
    top = result["best_batch"]
    print(f"best: batch {top}, {result['best_images_per_s']:.2f} images/s = {result['best_over_batch1']:.2f} "
          f"x batch 1 ({baseline:.2f} images/s)")
    print(", ".join(f"{k} {v:.0f}" for k, v in result.items() if k.startswith("peak")))
    result["kind"] = args.kind if args.model == "tiny" else None
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

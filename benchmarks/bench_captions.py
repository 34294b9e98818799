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
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fer_utils.errors import ConfigError
from fer_utils.models.runtime import resolve_device
from fer_utils.vlm.base import FaceImage, GenerationSettings
from fer_utils.vlm.blip2 import (ORIGINAL_MODEL_ID, TINY_KINDS, Blip2Captioner, original_architecture_config,
                                 original_architecture_model, original_architecture_processor, resolve_dtype,
                                 tiny_blip2_captioner)
from fer_utils.vlm.prompts import PROMPTS

CPU_BATCHES = (1, 8, 32, 64)
GPU_BATCHES = (1, 8, 32, 64, 128, 256)


def synthetic_faces(n: int, size: int, seed: int = 0) -> list[FaceImage]:
    """``n`` in-memory RGB images (smooth random colour fields plus noise), ``size`` pixels square."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        noisy = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        out.append(FaceImage(id=f"img_{i:05d}", pixels=noisy.astype(np.uint8)))
    return out


def peak_memory_mib(device: torch.device) -> dict:
    """Peak resident memory of this process, and the peak GPU memory allocated by torch."""
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def build_real_size(device: torch.device, dtype: str, levers: dict) -> Blip2Captioner:
    """A random-weight captioner with the exact ``Salesforce/blip2-flan-t5-xl`` architecture on ``device``."""
    processor = original_architecture_processor()
    tokenizer = processor.tokenizer
    config = original_architecture_config(
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    model = original_architecture_model(config, device=device)
    identity = {"backend": "random-blip2", "architecture": ORIGINAL_MODEL_ID, "seed": 0}
    captioner = Blip2Captioner(model, processor, name=f"random {ORIGINAL_MODEL_ID}", identity=identity,
                               device=device, **levers)
    captioner.meaningful = False
    captioner.use_dtype(dtype)  # cast once now rather than inside the first timed call
    return captioner


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
    if args.compile and not args.static_cache:
        parser.error("--compile needs --static-cache: transformers 5.24 compiles the decoding step only with a "
                     "static KV cache (a dynamic cache changes shape every token)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.batch_sizes is None:
        args.batch_sizes = list(GPU_BATCHES if device.type == "cuda" else CPU_BATCHES)
    if any(b < 1 for b in args.batch_sizes):
        parser.error("batch sizes must be >= 1")
    if 1 not in args.batch_sizes:
        args.batch_sizes = [1, *args.batch_sizes]  # the baseline every ratio refers to
    args.batch_sizes = sorted(set(args.batch_sizes))
    if args.dry_run:
        return dry_run(args, device)
    if args.model == "real-size" and device.type != "cuda":
        parser.error("--model real-size times a 3.9-billion-parameter model: run it on CUDA (--device cuda), or "
                     "use --dry-run to check its configuration on the CPU")

    levers = {"attn_implementation": args.attn, "static_cache": args.static_cache, "compile": args.compile}
    try:
        captioner = (build_real_size(device, args.dtype, levers) if args.model == "real-size"
                     else tiny_blip2_captioner(args.kind, device=str(device), **levers))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.compile:
        # one compiled graph per batch shape: leave room for every batch size measured
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(args.batch_sizes))
    prompt = PROMPTS[args.prompt] if args.prompt in PROMPTS else args.prompt
    base = GenerationSettings(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, batch_size=1,
                              dtype=args.dtype)
    n = args.n or max(64, max(args.batch_sizes))
    naive_n = args.naive_n or (16 if args.model == "tiny" else 8)
    faces = synthetic_faces(max(n, naive_n) + max(args.batch_sizes), args.image_size)

    plan = {}
    for batch in args.batch_sizes:
        count = naive_n if batch == 1 else batch * max(1, round(n / batch))
        settings = GenerationSettings(**{**base.to_dict(), "batch_size": batch})
        plan[batch] = (faces[:count], settings)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    skipped = {}
    for batch, (images, settings) in list(plan.items()):  # warm-up: allocator, kernel choice, compiled graphs
        try:
            captioner.caption(images[:batch], prompt, settings)
            sync()
        except torch.OutOfMemoryError:
            skipped[batch] = "out of memory"
            del plan[batch]
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if 1 not in plan:
        raise SystemExit(f"batch size 1, the baseline, failed: {skipped[1]}")
    best = {batch: math.inf for batch in plan}
    for _ in range(args.repeats):
        for batch, (images, settings) in plan.items():
            start = time.perf_counter()
            captions = captioner.caption(images, prompt, settings)
            sync()
            best[batch] = min(best[batch], time.perf_counter() - start)
            assert len(captions) == len(images)
    rates = {batch: len(plan[batch][0]) / best[batch] for batch in plan}
    baseline = rates[1]
    top = max(rates, key=rates.get)

    dtype = str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    print(f"model {args.model} ({ORIGINAL_MODEL_ID if args.model == 'real-size' else 'tiny-' + args.kind}, "
          f"random weights), device {device}, dtype {dtype}, torch threads {torch.get_num_threads()}")
    print(f"attn {captioner.model.config._attn_implementation}, static cache {'yes' if args.static_cache else 'no'}, "
          f"compile {'yes' if args.compile else 'no'}; {args.new_tokens} new tokens per image, prompt {args.prompt!r}")
    print(f"{'batch':>6} {'images':>7} {'seconds':>9} {'images/s':>10} {'x batch 1':>10}")
    for batch in plan:
        print(f"{batch:>6} {len(plan[batch][0]):>7} {best[batch]:>9.3f} {rates[batch]:>10.2f} "
              f"{rates[batch] / baseline:>10.2f}")
    for batch, why in skipped.items():
        print(f"{batch:>6} {why}")
    print(f"best: batch {top}, {rates[top]:.2f} images/s = {rates[top] / baseline:.2f} x batch 1 "
          f"({baseline:.2f} images/s)")
    memory = peak_memory_mib(device)
    print(", ".join(f"{k} {v:.0f}" for k, v in memory.items()))

    result = {
        "model": args.model, "kind": args.kind if args.model == "tiny" else None, "device": str(device),
        "dtype": dtype, "attn": captioner.model.config._attn_implementation, "static_cache": args.static_cache,
        "compile": args.compile, "new_tokens": args.new_tokens, "prompt": args.prompt,
        "torch_threads": torch.get_num_threads(),
        "batches": {str(b): {"images": len(plan[b][0]), "seconds": best[b], "images_per_s": rates[b],
                             "x_batch1": rates[b] / baseline} for b in plan},
        "skipped": {str(b): why for b, why in skipped.items()}, "best_batch": top,
        "best_images_per_s": rates[top], "batch1_images_per_s": baseline,
        "best_over_batch1": rates[top] / baseline, **memory,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

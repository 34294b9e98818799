"""BLIP-2 captioning: one image at a time (the original study's way) vs batches.

:func:`measure_captions` measures, in one process on the same images and model, images per second
of :meth:`fer_utils.vlm.blip2.Blip2Captioner.caption` (decoding the images, the processor,
batched greedy ``generate``, decoding the text) at batch size 1 and at larger batch sizes, and
reports each as a multiple of batch 1. Every image costs the same number of decoding steps:
``min_new_tokens = max_new_tokens`` (30 by default, the original's ``max_new_tokens``), since
random weights would otherwise stop at random end tokens.

``model="tiny"``: :func:`~fer_utils.vlm.blip2.tiny_blip2` (a few hundred thousand parameters);
``model="real-size"``: random weights in the exact architecture of ``Salesforce/blip2-flan-t5-xl``
(3.94 billion parameters; bfloat16 on CUDA), GPU only, since nothing is downloaded. Runs are
interleaved across batch sizes and the fastest of ``repeats`` is kept.
"""
from __future__ import annotations

import math

from fer_utils.bench import best_seconds, cuda_sync, noise_image, peak_memory_mib

CPU_BATCHES = (1, 8, 32, 64)
GPU_BATCHES = (1, 8, 32, 64, 128, 256)
CAPTION_MODELS = ("tiny", "real-size")


def synthetic_faces(n: int, size: int, seed: int = 0) -> list:
    """``n`` in-memory RGB :class:`~fer_utils.vlm.base.FaceImage` s of :func:`~fer_utils.bench.noise_image`."""
    import numpy as np

    from fer_utils.vlm.base import FaceImage

    rng = np.random.default_rng(seed)
    return [FaceImage(id=f"img_{i:05d}", pixels=noise_image(rng, size)) for i in range(n)]


def build_real_size(device, dtype: str, levers: dict):
    """A random-weight captioner with the exact ``Salesforce/blip2-flan-t5-xl`` architecture on ``device``."""
    from fer_utils.vlm.blip2 import (ORIGINAL_MODEL_ID, Blip2Captioner, original_architecture_config,
                                     original_architecture_model, original_architecture_processor)

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


def default_batches(device) -> list[int]:
    return list(GPU_BATCHES if device.type == "cuda" else CPU_BATCHES)


def measure_captions(model: str = "tiny", kind: str = "t5", device: str = "auto", dtype: str = "auto",
                     batch_sizes=None, n: int | None = None, naive_n: int | None = None, new_tokens: int = 30,
                     prompt: str = "original", image_size: int = 100, attn: str | None = None,
                     static_cache: bool = False, compile: bool = False, repeats: int = 2) -> dict:
    """Images/s of captioning at batch 1 and at each of ``batch_sizes`` (1 is always added: the
    baseline), each as a multiple of batch 1. A batch size that runs out of GPU memory is skipped
    and named in ``skipped``. Raises :class:`~fer_utils.errors.ConfigError` for a wrong setting."""
    import torch

    from fer_utils.errors import ConfigError
    from fer_utils.models.runtime import resolve_device
    from fer_utils.vlm.base import GenerationSettings
    from fer_utils.vlm.blip2 import ORIGINAL_MODEL_ID, resolve_dtype, tiny_blip2_captioner
    from fer_utils.vlm.prompts import PROMPTS

    device = resolve_device(device)
    if model not in CAPTION_MODELS:
        raise ConfigError(f"caption model must be one of {', '.join(CAPTION_MODELS)}, got {model!r}")
    if compile and not static_cache:
        raise ConfigError("compile needs static_cache: transformers 5.24 compiles the decoding step only with a "
                          "static KV cache (a dynamic cache changes shape every token)")
    if model == "real-size" and device.type != "cuda":
        raise ConfigError("the real-size captioner is a 3.9-billion-parameter model: time it on CUDA "
                          "(--device cuda), or use the tiny one on the CPU")
    batch_sizes = list(batch_sizes) if batch_sizes else default_batches(device)
    if any(b < 1 for b in batch_sizes):
        raise ConfigError(f"batch sizes must be >= 1, got {batch_sizes}")
    batch_sizes = sorted({1, *batch_sizes})  # 1: the baseline every ratio refers to
    levers = {"attn_implementation": attn, "static_cache": static_cache, "compile": compile}
    captioner = (build_real_size(device, dtype, levers) if model == "real-size"
                 else tiny_blip2_captioner(kind, device=str(device), **levers))
    if compile:
        # one compiled graph per batch shape: leave room for every batch size measured
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(batch_sizes))
    text = PROMPTS[prompt] if prompt in PROMPTS else prompt
    base = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=1, dtype=dtype)
    n = n or max(64, max(batch_sizes))
    naive_n = naive_n or (16 if model == "tiny" else 8)
    faces = synthetic_faces(max(n, naive_n) + max(batch_sizes), image_size)
    plan = {}
    for batch in batch_sizes:
        count = naive_n if batch == 1 else batch * max(1, round(n / batch))
        plan[batch] = (faces[:count], GenerationSettings(**{**base.to_dict(), "batch_size": batch}))
    sync = cuda_sync(device)

    skipped = {}
    for batch, (images, settings) in list(plan.items()):  # warm-up: allocator, kernel choice, compiled graphs
        try:
            captioner.caption(images[:batch], text, settings)
            sync()
        except torch.OutOfMemoryError:
            skipped[batch] = "out of memory"
            del plan[batch]
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if 1 not in plan:
        raise ConfigError(f"batch size 1, the baseline, failed: {skipped[1]}")

    def run(images, settings):
        return lambda: captioner.caption(images, text, settings)

    best = best_seconds({batch: run(*plan[batch]) for batch in plan}, repeats, sync)
    rates = {batch: len(plan[batch][0]) / best[batch] for batch in plan}
    baseline = rates[1]
    top = max(rates, key=rates.get)
    return {
        "model": model, "architecture": ORIGINAL_MODEL_ID if model == "real-size" else f"tiny-{kind}",
        "device": str(device), "dtype": str(resolve_dtype(dtype, device)).removeprefix("torch."),
        "attn": captioner.model.config._attn_implementation, "static_cache": static_cache, "compile": compile,
        "new_tokens": new_tokens, "prompt": prompt, "torch_threads": torch.get_num_threads(),
        "batches": {str(b): {"images": len(plan[b][0]), "seconds": best[b], "images_per_s": rates[b],
                             "x_batch1": rates[b] / baseline} for b in plan},
        "skipped": {str(b): why for b, why in skipped.items()}, "best_batch": top,
        "best_images_per_s": rates[top], "batch1_images_per_s": baseline,
        "best_over_batch1": rates[top] / baseline if math.isfinite(baseline) else None, **peak_memory_mib(device),
    }

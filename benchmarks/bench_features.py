"""Benchmark CNN feature extraction: naive per-image loop vs ``extract_features`` vs pure forward.

In one process, on the same images and model, it measures images per second of

(a) a naive loop: one image at a time, PIL open -> transform -> model forward (under no_grad,
    float32, default memory format, whatever the options);
(b) :func:`fer_utils.features.extract_features` with the cache disabled (DataLoader, batching);
(c) the model's forward pass alone on tensors decoded and transformed beforehand, same batch size,

and reports b/a (what batching and the pipeline buy; target >= 5x) and b/c (how close the
pipeline gets to the forward pass alone; target >= 0.85), plus peak memory. With ``--cache`` it
also times (b) once into an empty per-image cache (cold: compute, hash and write) and once more
(warm: hash and read, nothing computed), in seconds. Examples::

    python benchmarks/bench_features.py --model resnet18 --image-size 100 --n 256 --no-channels-last
    python benchmarks/bench_features.py --data data/rafdb --device cuda --fp16 --json out.json

Without ``--data`` it writes ``--n`` synthetic JPEGs (smooth random colour fields with noise,
``--source-size`` pixels square, RAF-DB's aligned size by default) to a temporary folder.
Weights are random: speed does not depend on their values, and nothing is downloaded.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fer_utils.data import build_transform, load_dataset, open_image
from fer_utils.features import extract_features
from fer_utils.models import create_model, list_models, model_info
from fer_utils.models.runtime import autocast, resolve_device


def synthetic_index(folder: Path, n: int, size: int, seed: int = 0) -> pd.DataFrame:
    """Write ``n`` JPEGs (smooth colour fields plus noise) and return a data index over them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        noisy = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(path, quality=90)
        rows.append({"id": path.stem, "path": str(path), "pixels": None, "label": i % 7,
                     "split": "test", "source": "imagefolder"})
    return pd.DataFrame(rows)


def best_rates(measurements: dict, repeats: int) -> dict:
    """Images per second of the fastest of ``repeats`` runs of each ``name: (fn, n_images)``.

    The runs are interleaved (a, b, c, a, b, c, ...) so that all three see the same background
    load on a shared machine.
    """
    best = {name: float("inf") for name in measurements}
    for _ in range(repeats):
        for name, (fn, _) in measurements.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n / best[name] for name, (_, n) in measurements.items()}


def peak_memory_mib(device: torch.device) -> dict:
    """Peak resident memory of this process and of its largest child (DataLoader workers), and of
    the GPU. tracemalloc would miss torch's allocations. Note that ``import torch`` (CUDA build)
    itself starts a short-lived child of about 620 MiB, which sets the children's floor.
    """
    to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib,
           "peak_rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib}
    if device.type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="densenet121", choices=list_models())
    parser.add_argument("--data", help="a data set folder/file for fer_utils.data.load_dataset (default: synthetic)")
    parser.add_argument("--n", type=int, default=256, help="images (synthetic, or the first N of --data)")
    parser.add_argument("--naive-n", type=int, default=64, help="images for the slow naive loop (a)")
    parser.add_argument("--source-size", type=int, default=100, help="side of the synthetic JPEGs")
    parser.add_argument("--image-size", type=int, default=100, help="model input side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", default="auto", help="DataLoader workers for (b): 'auto' or an int")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fp16", action="store_true", help="autocast (bfloat16, or float16 on older GPUs)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC layout for (b) and (c) (extract_features' default)")
    parser.add_argument("--repeats", type=int, default=3, help="time each measurement this often, keep the best")
    parser.add_argument("--cache", action="store_true", help="also time (b) with a cold and a warm cache")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    num_workers = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
    preprocessing = model_info(args.model).preprocessing.with_size(args.image_size)
    transform = build_transform(preprocessing)
    plain = create_model(args.model).eval().to(device)  # for (a): what a person writes first
    model = copy.deepcopy(plain)  # for (b) and (c), with the --channels-last/--fp16 options
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    with tempfile.TemporaryDirectory() as tmp:
        index = (load_dataset(args.data).head(args.n) if args.data
                 else synthetic_index(Path(tmp), args.n, args.source_size))
        n = len(index)
        rows = [row for _, row in index.iterrows()]
        preloaded = torch.stack([transform(open_image(row)) for row in rows])

        def forward_only():
            with torch.inference_mode(), autocast(device, args.fp16):
                for i in range(0, n, args.batch_size):
                    x = preloaded[i:i + args.batch_size].to(device).contiguous(memory_format=memory_format)
                    model.forward_features(x).float().cpu()

        def pipeline(cache_dir=None):
            extract_features(model, index, preprocessing, batch_size=args.batch_size, num_workers=num_workers,
                             device=str(device), cache_dir=cache_dir, amp=args.fp16, channels_last=args.channels_last)

        naive_rows = rows[: args.naive_n]

        def naive():
            with torch.no_grad():
                for row in naive_rows:
                    x = transform(open_image(row)).unsqueeze(0).to(device)
                    plain.forward_features(x).cpu()

        forward_only()  # warm-ups: allocator, oneDNN/cuDNN kernel choice
        naive()
        rates = best_rates({"c": (forward_only, n), "b": (pipeline, n), "a": (naive, len(naive_rows))},
                           args.repeats)
        rate_a, rate_b, rate_c = rates["a"], rates["b"], rates["c"]
        cache_seconds = {}
        if args.cache:
            for run in ("cold", "warm"):
                start = time.perf_counter()
                pipeline(Path(tmp) / "cache")
                cache_seconds[f"cache_{run}_s"] = time.perf_counter() - start

    result = {
        "model": args.model, "device": str(device), "images": n, "naive_images": len(naive_rows),
        "image_size": args.image_size, "batch_size": args.batch_size, "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(), "fp16": args.fp16, "channels_last": args.channels_last,
        "a_naive_img_s": rate_a, "b_extract_features_img_s": rate_b, "c_forward_only_img_s": rate_c,
        "b_over_a": rate_b / rate_a, "b_over_c": rate_b / rate_c, **cache_seconds, **peak_memory_mib(device),
    }
    for key, value in result.items():
        print(f"{key:>26}: {value:.2f}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

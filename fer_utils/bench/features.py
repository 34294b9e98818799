"""CNN feature extraction: a naive per-image loop vs ``extract_features`` vs the forward pass alone.

In one process, on the same images and model, :func:`measure_features` measures images per
second of

(a) a naive loop: one image at a time, PIL open -> transform -> model forward (under no_grad,
    float32, default memory format, whatever the options);
(b) :func:`fer_utils.training.features.extract_features` with the cache disabled (DataLoader, batching);
(c) the model's forward pass alone on tensors decoded and transformed beforehand, same batch size,

and reports b/a (what batching and the pipeline buy; target >= 5x) and b/c (how close the
pipeline gets to the forward pass alone; target >= 0.85), plus peak memory. With ``cache`` it
also times (b) once into an empty per-image cache (cold: compute, hash and write) and once more
(warm: hash and read, nothing computed), in seconds. Without ``data`` it writes ``n`` synthetic
JPEGs (:func:`~fer_utils.bench.synthetic_index`, ``source_size`` pixels square, RAF-DB's aligned
size by default) to a temporary folder. Weights are random: speed does not depend on their
values, and nothing is downloaded.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

from fer_utils.bench import best_seconds, cuda_sync, peak_memory_mib, synthetic_index


def measure_features(model: str = "densenet121", device: str = "auto", n: int = 256, naive_n: int = 64,
                     image_size: int = 100, source_size: int = 100, batch_size: int = 64,
                     num_workers: int | str = "auto", fp16: bool = False, channels_last: bool = True,
                     repeats: int = 3, cache: bool = False, data: str | Path | None = None) -> dict:
    """Images/s of (a) the naive loop, (b) ``extract_features`` and (c) the forward pass alone, and
    the ratios b/a and b/c (see the module's description)."""
    import torch

    from fer_utils.data import load_dataset, open_image
    from fer_utils.data.tensor_transforms import image_transform
    from fer_utils.training.features import extract_features
    from fer_utils.models import create_model, model_info
    from fer_utils.models.runtime import autocast, resolve_device

    device = resolve_device(device)
    preprocessing = model_info(model).preprocessing.with_size(image_size)
    transform = image_transform(preprocessing)  # the serving path: one image at a time
    plain = create_model(model).eval().to(device)  # for (a): what a person writes first
    tuned = copy.deepcopy(plain)  # for (b) and (c), with the channels_last/fp16 options
    if channels_last:
        tuned.to(memory_format=torch.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    sync = cuda_sync(device)

    with tempfile.TemporaryDirectory(prefix="fer-bench-features-") as tmp:
        index = load_dataset(data).head(n) if data else synthetic_index(Path(tmp), n, source_size)
        count = len(index)
        rows = [row for _, row in index.iterrows()]
        preloaded = torch.stack([transform(open_image(row)) for row in rows])

        def forward_only():
            with torch.inference_mode(), autocast(device, fp16):
                for i in range(0, count, batch_size):
                    x = preloaded[i:i + batch_size].to(device).contiguous(memory_format=memory_format)
                    tuned.forward_features(x).float().cpu()

        def pipeline(cache_dir=None):
            extract_features(tuned, index, preprocessing, batch_size=batch_size, num_workers=num_workers,
                             device=str(device), cache_dir=cache_dir, amp=fp16, channels_last=channels_last)

        naive_rows = rows[:naive_n]

        def naive():
            with torch.no_grad():
                for row in naive_rows:
                    x = transform(open_image(row)).unsqueeze(0).to(device)
                    plain.forward_features(x).cpu()

        forward_only()  # warm-ups: allocator, oneDNN/cuDNN kernel choice
        naive()
        sync()
        seconds = best_seconds({"c": forward_only, "b": pipeline, "a": naive}, repeats, sync)
        rate_a, rate_b, rate_c = len(naive_rows) / seconds["a"], count / seconds["b"], count / seconds["c"]
        cache_seconds = {}
        if cache:
            for run in ("cold", "warm"):
                start = time.perf_counter()
                pipeline(Path(tmp) / "cache")
                cache_seconds[f"cache_{run}_s"] = time.perf_counter() - start

    return {
        "model": model, "device": str(device), "images": count, "naive_images": len(naive_rows),
        "image_size": image_size, "batch_size": batch_size, "num_workers": num_workers,
        "torch_threads": torch.get_num_threads(), "fp16": fp16, "channels_last": channels_last,
        "repeats": repeats, "a_naive_img_s": rate_a, "b_extract_features_img_s": rate_b,
        "c_forward_only_img_s": rate_c, "b_over_a": rate_b / rate_a, "b_over_c": rate_b / rate_c,
        **cache_seconds, **peak_memory_mib(device),
    }

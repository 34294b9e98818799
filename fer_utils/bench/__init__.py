"""``fer bench``: the project's speed, each figure as a ratio against a baseline measured in the
same process on the machine at hand (issue 14).

One module per part, each with a ``measure_*`` function that returns a JSON-ready dict (raw
images/s or latencies and the ratios): :mod:`~fer_utils.bench.features` (naive loop vs
``extract_features`` vs the forward pass alone), :mod:`~fer_utils.bench.training` (``fit`` on
images through the project's data sets vs the same train step on tensors made beforehand),
:mod:`~fer_utils.bench.captions` (BLIP-2 batch 1 vs batched), :mod:`~fer_utils.bench.study`
(the quick study cold vs unchanged again) and :mod:`~fer_utils.bench.web` (``POST /api/predict``
through ``fer serve`` vs the same prediction in process). :func:`machine` describes the machine.
This module imports no torch until a function needs it.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import resource
import time
from pathlib import Path

PARTS = ("features", "training", "captions", "study", "web")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    """The machine the figures were measured on: CPU, cores, RAM, torch/CUDA, GPU, date (UTC)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable, "ram_gib": _ram_gib(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "gpu": None, "gpu_memory_gib": None,
        "load_average": load_average(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return out


def noise_image(rng, size: int):
    """A ``size`` x ``size`` RGB uint8 array: a smooth random colour field plus noise (JPEG-like
    content that compresses and decodes as a photo does, unlike pure noise or a flat colour)."""
    import numpy as np
    from PIL import Image

    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noisy = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
    return noisy.astype(np.uint8)


def synthetic_index(folder: Path, n: int, size: int, seed: int = 0, split: str = "test"):
    """Write ``n`` JPEGs of :func:`noise_image` to ``folder`` (``<split>_00000.jpg``, ...) and
    return a data index over them (labels cycling through the 7 classes; ``split`` for every row)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    Path(folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = Path(folder) / f"{split}_{i:05d}.jpg"
        Image.fromarray(noise_image(rng, size)).save(path, quality=90)
        rows.append({"id": path.stem, "path": str(path), "pixels": None, "label": i % 7,
                     "split": split, "source": "imagefolder"})
    return pd.DataFrame(rows)


def best_seconds(measurements: dict, repeats: int, sync=None) -> dict:
    """Seconds of the fastest of ``repeats`` runs of each ``name: fn``. The runs are interleaved
    (a, b, c, a, b, c, ...) so that all see the same background load on a shared machine;
    ``sync`` (e.g. a CUDA synchronise) runs before each clock stop."""
    best = {name: math.inf for name in measurements}
    for _ in range(max(1, repeats)):
        for name, fn in measurements.items():
            start = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cuda_sync(device):
    """A no-argument function that waits for ``device``'s queued work (a no-op off CUDA)."""
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def peak_memory_mib(device) -> dict:
    """Peak resident memory of this process and of its largest child (DataLoader workers), and
    the peak GPU memory torch allocated. tracemalloc would miss torch's allocations. Note that
    ``import torch`` (CUDA build) itself starts a short-lived child of about 620 MiB, which sets
    the children's floor."""
    import torch

    to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib,
           "peak_rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib}
    if device.type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


__all__ = ["PARTS", "best_seconds", "cuda_sync", "load_average", "machine", "noise_image", "peak_memory_mib",
           "synthetic_index"]

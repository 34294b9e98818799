"""Seeding and provenance: what a run needs to be repeated and traced."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

PROVENANCE_PACKAGES = (
    "fer_utils", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "pillow",
    "transformers", "open_clip_torch", "papermill", "jupyter-book",
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels.

    On CPU this makes training bit-for-bit repeatable; on CUDA some kernels stay
    non-deterministic (``warn_only``), which the provenance record shows through the device.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def git_sha(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the repository holding ``path`` (default: this package), '+dirty' if modified."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions(names=PROVENANCE_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: str | None = None) -> dict:
    """The machine a run used: ``device`` is the resolved device (e.g. ``"cpu"``, ``"cuda:0"``)."""
    import torch

    info = {
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(data: dict | list | None = None, device: str | None = None) -> dict:
    """Where a run's result came from: git sha, package versions, the data it read, the device
    it ran on (resolved, e.g. ``"cpu"``), time. ``data`` is the data record (see
    :func:`fer_utils.data.describe_dataset`), or a list of them for a page that compares runs.
    Hyperparameters belong in the run's ``params.json``, not here."""
    return {
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "data": data,
        "device": device_info(device),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

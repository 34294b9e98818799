"""Shared test set-up: keep every HOME-based cache out of $HOME, and a session synthetic data set."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from fer_utils.study.speed import openmp_waits

_CACHE = Path(tempfile.mkdtemp(prefix="fer-test-cache-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)  # one per pytest process: leave no trace in /tmp
for var, sub in {
    "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime", "IPYTHONDIR": "ipython", "MPLCONFIGDIR": "matplotlib",
    "HF_HOME": "huggingface", "TORCH_HOME": "torch", "XDG_CACHE_HOME": "xdg",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",  # torch.compile's kernels (else /tmp/torchinductor_$USER)
}.items():
    os.environ[var] = str(_CACHE / sub)
    (_CACHE / sub).mkdir(parents=True, exist_ok=True)
os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
openmp_waits()   # as every fer command does, before torch loads: brief OpenMP busy-waits
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: each worker's torch (and the notebook kernels and
    # servers it starts) on one thread, or two workers' thread pools fight over the same cores
    os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synthetic_rafdb(tmp_path_factory) -> Path:
    """A tiny synthetic data set in RAF-DB layout, made once per test session by the real generator."""
    from fer_utils.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("synth") / "rafdb", seed=7, scale=0.01, min_per_class=4)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machines have 2 cores shared by several jobs: tiny models run fastest on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FIRST = ("test_study.py",)
"""Modules that run first: the quick study (test_study.py, about 4 minutes) is the longest chain of
the suite, so under pytest-xdist (`make test`: one worker per core, a module per worker) it starts
at once while the other workers share out the rest."""


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)   # stable: the order within stays

"""The machine's speed at the time: a fixed reference workload and its factor against the
reference machine, so that the study's time budget scales with the host it runs on.

Before each notebook run of the budget's profile (and before the data step and the book build),
``fer study run`` times :data:`WORKLOAD` in its own process, at torch's thread count (the one the
notebooks' kernels start with): training steps of the registry's VGG16 at 32 px, folded as ``fit``
trains it, the default study's largest single cost. It divides the median of :data:`SAMPLES` steps
by :data:`REFERENCE_SECONDS`, the same step on the reference machine. The quotient is the run's
*speed factor*: 1.3 means that this host, at that moment, needed 1.3 times the reference
machine's time. It is stored with the run (its stamp in the executed notebook, and the study's
timing record), so a run skipped as unchanged keeps the factor of the execution that made it, and
``fer study check`` judges each step against ``share x factor x tolerance``
(:mod:`fer_utils.study.check`).

Why this workload: a small convolutional network (tried first) timed the same on an AMD EPYC host
as on the Intel host the shares were set on (factor 0.8-1.1), while VGG16's epochs took 2.9 times
as long there (27 s against 8.3-10 s); what makes a host slow for the study is its dense
arithmetic, which a VGG16 step has. It costs four steps (about 1.5 s on the reference machine,
4.5 s on that AMD host) per measurement, and 0.5 GB for the model, built once per process.

How long an idle OpenMP thread spins (:data:`OPENMP_WAITS`): torch's thread pool is GNU OpenMP,
whose threads busy-wait about 300,000 rounds at every barrier before they sleep. On a host where
another process holds one of the two cores, the spinning thread takes CPU time from its partner,
which then waits for the core at each of a training step's many barriers: the reference step took
1.46 s (quiet: 0.34 s) in a plain process and 2.2 s in a Jupyter kernel, whose extra threads
(IOPub, heartbeat, control) make it worse, and a notebook's VGG16 run slowed 9-fold. Spinning
10,000 rounds keeps the quiet speed (0.347 s) and makes both 0.70 s under the same load, as fast
as one thread, with the same results (the wait is not in the arithmetic). :func:`openmp_waits`
sets it before torch loads: ``fer`` (every command) and ``fer study run``'s kernels, which inherit
the environment, so the factor measured here is the one the notebooks run at. Work made of many
small operations still slows more under such load than this workload does (a DenseNet121 step
3.7-fold, the fusion heads' fits 4.2-fold, against 2.1-fold; notebooks/study.yaml), so a factor
from this workload alone is too strict for those steps on a host with a busy core.

The workload is fixed: changing it changes what a factor means, so a new workload gets a new
:data:`WORKLOAD` name and a new :data:`REFERENCE_SECONDS` measured on the reference machine
(``python -m fer_utils.study.speed`` prints the figure).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import time

WORKLOAD = "vgg16-folded-train-step-32px-b32-v1"
"""Name of the reference workload; a new workload needs a new name and reference figure."""
REFERENCE_SECONDS = 0.38
"""One step of :data:`WORKLOAD` on the reference machine (:data:`REFERENCE_MACHINE`)."""
REFERENCE_MACHINE = ("the 2-core Intel host (AMX) the study's shares were set on, 2026-11-28: "
                     "benchmarks/bench_vgg_fold.py --image-size 32 --batch-size 32, 0.38 s a folded step "
                     "(0.31 s on the same kind of host the day before)")
OPENMP_WAITS = {"GOMP_SPINCOUNT": "10000"}
"""OpenMP's busy-wait before an idle thread sleeps (GNU OpenMP, torch's on Linux), set by
:func:`openmp_waits` unless the environment already has it; read once, when torch loads."""
SAMPLES = 3            # timed steps; the median counts
BATCH, SIZE = 32, 32   # images per step, pixels per side: the default profile's VGG16 setting


@dataclasses.dataclass(frozen=True)
class Speed:
    """One measurement of the reference workload."""

    seconds: float            # median of the samples
    samples: tuple[float, ...]
    threads: int
    factor: float             # seconds / REFERENCE_SECONDS: > 1 is slower than the reference machine

    spincount: str | None = None   # GOMP_SPINCOUNT in this process's environment when measured

    def as_record(self) -> dict:
        return {"workload": WORKLOAD, "seconds": round(self.seconds, 4), "factor": round(self.factor, 3),
                "samples": [round(s, 4) for s in self.samples], "threads": self.threads,
                "gomp_spincount": self.spincount}


def openmp_waits(environ=None) -> dict:
    """Give ``environ`` (default ``os.environ``) :data:`OPENMP_WAITS` where it has no value of its
    own, so that this process (when torch is not yet loaded) and every process it starts after
    (notebook kernels) wait at OpenMP barriers briefly; returns what was set. A value already there
    (the user's) is kept."""
    environ = os.environ if environ is None else environ
    added = {name: value for name, value in OPENMP_WAITS.items() if name not in environ}
    environ.update(added)
    return added


@functools.cache
def _vgg16():
    """The VGG16 of this process, built once (1-2 s, 0.5 GB) and folded for good: it only times steps."""
    import torch

    from fer_utils.models import create_model
    from fer_utils.models.folding import fold_replicated_linear

    torch.manual_seed(0)
    model = create_model("vgg16", num_classes=7)
    if fold_replicated_linear(model, SIZE) is None:
        raise RuntimeError("VGG16 did not fold at 32 px: the reference workload is not what it was")
    return model.train()


def measure(samples: int = SAMPLES) -> Speed:
    """Time the reference workload now and return it with its factor: one training step of the
    registry's VGG16 at 32 px, batch 32, its first dense layer folded (what ``fit`` trains in the
    default profile, the study's largest single cost), Adam with the fused kernels ``fit`` uses;
    after one warm-up step, the median of ``samples`` timed steps."""
    import torch
    from torch.nn import functional as F

    from fer_utils.training.train import TrainConfig, make_optimizer

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    model = _vgg16()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4, device="cpu"))   # fresh state: nothing accumulates
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 7, (BATCH,), generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()                                   # warm-up: allocations, oneDNN's kernel choice
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    optimizer.zero_grad(set_to_none=True)
    del optimizer                            # its state (0.3 GB) goes; the model stays for the next call
    median = statistics.median(timings)
    return Speed(median, tuple(timings), torch.get_num_threads(), median / REFERENCE_SECONDS,
                 os.environ.get("GOMP_SPINCOUNT"))


def check_factor(value, where: str) -> float:
    """A recorded factor as a float; a ValueError naming ``where`` when it is not a positive finite
    number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: a speed factor must be a positive number, got {value!r}")
    return float(value)


if __name__ == "__main__":   # print the figure to put in REFERENCE_SECONDS on a reference machine
    runs = [measure() for _ in range(5)]
    print(f"{WORKLOAD}: median {statistics.median(r.seconds for r in runs):.4f} s "
          f"({', '.join(f'{r.seconds:.4f}' for r in runs)}) at {runs[0].threads} torch threads")

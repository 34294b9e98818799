"""The machine's speed at the time: a fixed reference workload and its factor against the
reference machine, so that the study's time budget scales with the host it runs on.

Before each notebook run of the budget's profile, ``fer study run`` times :data:`WORKLOAD` (a
few training steps of a small convolutional network, in this process, at torch's thread count:
the one the notebooks' kernels start with) and divides the median of :data:`SAMPLES` timings by
:data:`REFERENCE_SECONDS`, the same workload's median on the reference machine. The quotient is
the run's *speed factor*: 1.3 means that this host, at that moment, needed 1.3 times the
reference machine's time. It is stored with the run (its stamp in the executed notebook, and the
study's timing record), so a run skipped as unchanged keeps the factor of the execution that made
it, and ``fer study check`` judges each step against ``share x factor x tolerance``
(:mod:`fer_utils.studycheck`).

The workload is small on purpose (about 0.3 s here) and fixed: changing it changes what a factor
means, so a new workload gets a new :data:`WORKLOAD` name and a new :data:`REFERENCE_SECONDS`
measured on the reference machine (``python -m fer_utils.speed`` prints the figure).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time

WORKLOAD = "conv-train-step-v1"
"""Name of the reference workload; a new workload needs a new name and reference figure."""
REFERENCE_SECONDS = 0.155
"""The median of :func:`measure` on the reference machine (:data:`REFERENCE_MACHINE`)."""
REFERENCE_MACHINE = ("the project's 2-core build machine on 2026-12-07, nothing else running, 2 torch threads "
                     "(python -m fer_utils.speed: medians 0.154 and 0.166 s; with a busy loop on one of the "
                     "two cores, 0.514 s: factor 3.3)")
SAMPLES = 3          # timings; the median counts
STEPS = 4            # training steps per timing
BATCH, SIZE = 32, 48  # images per step, pixels per side


@dataclasses.dataclass(frozen=True)
class Speed:
    """One measurement of the reference workload."""

    seconds: float            # median of the samples
    samples: tuple[float, ...]
    threads: int
    factor: float             # seconds / REFERENCE_SECONDS: > 1 is slower than the reference machine

    def as_record(self) -> dict:
        return {"workload": WORKLOAD, "seconds": round(self.seconds, 4), "factor": round(self.factor, 3),
                "samples": [round(s, 4) for s in self.samples], "threads": self.threads}


def _model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 7))


def measure(samples: int = SAMPLES) -> Speed:
    """Time the reference workload now (median of ``samples`` timings of :data:`STEPS` Adam
    training steps on a fixed batch, after one warm-up step) and return it with its factor."""
    import torch

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 7, (BATCH,), generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    step()                                   # warm-up: allocations, first-call dispatch
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        timings.append(time.perf_counter() - start)
    median = statistics.median(timings)
    return Speed(median, tuple(timings), torch.get_num_threads(), median / REFERENCE_SECONDS)


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

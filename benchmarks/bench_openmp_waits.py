"""Benchmark OpenMP's busy-wait (fer_utils.study.speed.OPENMP_WAITS) against GNU OpenMP's default,
quiet and with another process holding one core.

It times the study's reference workload (:func:`fer_utils.study.speed.measure`: VGG16 training
steps at 32 px, batch 32, at torch's thread count) in fresh processes, because OpenMP reads its
settings once, when torch loads: a plain Python process and a Jupyter kernel executed by
papermill (what ``fer study run`` does), each with ``GOMP_SPINCOUNT`` unset (GNU OpenMP's default,
about 300,000 rounds) and with the project's value. With ``--burner`` it then repeats every
measurement while a busy loop pinned to the last core (``os.sched_setaffinity``) runs, and stops
the loop afterwards. Each figure is the median step in seconds; the ratios are against the quiet
default measured in the same run. Example::

    python benchmarks/bench_openmp_waits.py --burner --json out.json

It needs two cores or more for the burner to leave one free.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fer_utils.study import speed

PROBE = "from fer_utils.study import speed; print(speed.measure({samples}).seconds)"


def _spin():
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    while True:
        pass


@contextlib.contextmanager
def burner(on: bool):
    """A busy loop on the last core while the block runs (nothing when ``on`` is false)."""
    if not on:
        yield
        return
    process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join()


def environment(spincount: str | None) -> dict:
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    return env


def plain(spincount: str | None, samples: int) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE.format(samples=samples)], env=environment(spincount),
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def kernel(spincount: str | None, samples: int) -> float:
    """The same measurement in a notebook executed by papermill, the kernel started as the study
    runner starts it (its environment inherited from this process)."""
    import nbformat
    import papermill as pm

    from fer_utils.study.runner import kernel_config

    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder, "probe.ipynb"), Path(folder, "out.ipynb")
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(PROBE.format(samples=samples))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, source)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environment(spincount))
        try:
            pm.execute_notebook(str(source), str(output), kernel_name="python3", progress_bar=False,
                                config=kernel_config(folder))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return float(nbformat.read(output, as_version=4).cells[0].outputs[0]["text"].split()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="timed steps per measurement (median kept)")
    parser.add_argument("--burner", action="store_true", help="also measure with one core busy")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.burner and len(os.sched_getaffinity(0)) < 2:
        parser.error("--burner needs two cores or more")
    ours = speed.OPENMP_WAITS["GOMP_SPINCOUNT"]
    rows = []
    for load in ["quiet"] + (["one core busy"] if args.burner else []):
        with burner(load != "quiet"):
            for where, measure in (("plain process", plain), ("papermill kernel", kernel)):
                for label, spincount in (("default", None), (ours, ours)):
                    rows.append({"load": load, "where": where, "GOMP_SPINCOUNT": label,
                                 "seconds": measure(spincount, args.samples)})
    base = rows[0]["seconds"]
    print(f"reference step ({speed.WORKLOAD}), median of {args.samples}; ratio against the quiet default "
          f"in a plain process ({base:.3f} s)")
    for row in rows:
        row["ratio"] = row["seconds"] / base
        print(f"  {row['load']:14} {row['where']:17} GOMP_SPINCOUNT {row['GOMP_SPINCOUNT']:8} "
              f"{row['seconds']:6.3f} s  x{row['ratio']:.2f}")
    result = {"workload": speed.WORKLOAD, "samples": args.samples, "cores": len(os.sched_getaffinity(0)), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

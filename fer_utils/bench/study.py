"""The study cold vs warm: :func:`fer_utils.study.runner.run_study` in a new, temporary project folder, then
again with nothing changed.

:func:`measure_study` sets up a scratch project as the test suite's quick study does: a copy of the
project's ``_config.yml``, ``book/`` (without executed pages) and ``notebooks/`` in a temporary
folder named by ``$FER_HOME`` (every other folder the project's default inside it, so the runs,
caches and bundles start empty), and a small synthetic data set in RAF-DB layout made by
:func:`fer_utils.data.synthetic.generate`. It times ``run_study(profile)`` there (cold: every
notebook executes, every cache fills), then the same call again (warm). Where the study skips runs
whose inputs have not changed (``fer_utils.study.freshness``) the warm run is only the check; where it
does not, the warm run re-executes every notebook on warm caches, and the ratio is near 1.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

QUICK_ONLY = ("01_data",)
"""The notebooks ``fer bench --quick`` times: the data overview alone (seconds, not minutes)."""


def _scratch_project(source: Path, root: Path) -> None:
    shutil.copy(source / "_config.yml", root / "_config.yml")
    shutil.copytree(source / "book", root / "book", ignore=shutil.ignore_patterns("experiments", "generated"))
    shutil.copytree(source / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


def measure_study(profile: str = "quick", only=None, scale: float = 0.01, min_per_class: int = 4, seed: int = 7,
                  source: str | Path | None = None, echo=print) -> dict:
    """Wall seconds of the cold and the warm ``run_study``, their ratio warm / cold, and the runs
    each executed (``run_study``'s answer: a runner that skips unchanged runs executes fewer the
    second time); ``only`` limits the notebooks as ``fer study run --only`` does."""
    from fer_utils.data import synthetic
    from fer_utils.paths import ENV_DIRS, ENV_HOME, project_paths
    from fer_utils.study.runner import run_study

    source = Path(source) if source else project_paths().root
    saved = {var: os.environ.get(var) for var in (ENV_HOME, *ENV_DIRS.values())}
    result = {"profile": profile, "only": list(only) if only else None}
    with tempfile.TemporaryDirectory(prefix="fer-bench-study-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        _scratch_project(source, root)
        start = time.perf_counter()
        data = synthetic.generate(Path(tmp) / "synth" / "rafdb", seed=seed, scale=scale, min_per_class=min_per_class,
                                  progress=False)
        result["synthetic_data_s"] = time.perf_counter() - start
        try:
            for var in ENV_DIRS.values():
                os.environ.pop(var, None)
            os.environ[ENV_HOME] = str(root)
            for run in ("cold", "warm"):
                echo(f"study ({profile}) {run} ...")
                start = time.perf_counter()
                done = run_study(profile=profile, data_path=data, only=only, echo=echo)
                result[f"{run}_s"] = time.perf_counter() - start
                result[f"{run}_runs"] = len(done)
                result[f"{run}_run_seconds"] = {f"{r.notebook}/{r.name}": round(s, 2) for r, s in done}
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
    result["warm_over_cold"] = result["warm_s"] / result["cold_s"]
    return result

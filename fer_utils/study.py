"""The study manifest (``notebooks/study.yaml``) -> papermill runs -> Jupyter Book build.

Manifest shape::

    profiles: [quick, default, full]          # the profiles that exist
    notebooks:
      01_data:                                # notebooks/01_data.ipynb
        title: Data set overview
        runs:                                 # one executed copy per run
          default: {}
        profiles:                             # per-profile overrides of every run's parameters
          quick: {samples_per_class: 2}
        seeds: {full: [1, 2, 3]}              # optional: one run per seed in a profile

Every parameter is validated against the notebook's config (``fer_utils.config``) before anything
runs; the runner injects ``data_path`` and ``run_dir`` (and ``runs_root``/``cache_dir`` where the
config has them). Executed notebooks land in ``<out>/<notebook>/<run>.ipynb``; run records in
``<runs>/<notebook>/<run>/``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from .config import config_for
from .errors import ConfigError, FERError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT / "notebooks" / "study.yaml"
DEFAULT_DATA = REPO_ROOT / "data" / "synthetic"
DEFAULT_RUNS = REPO_ROOT / "data" / "runs"
DEFAULT_CACHE = REPO_ROOT / "data" / "cache"
DEFAULT_OUT = REPO_ROOT / "book" / "experiments"
INJECTED = ("data_path", "run_dir", "runs_root", "cache_dir")


class StudyRunError(FERError):
    """A notebook of the study failed; the message names it and its executed copy."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    notebook: str          # stem, e.g. "01_data"
    name: str              # run name, e.g. "resnet18-s1"
    params: dict[str, Any]
    source: Path           # notebooks/<stem>.ipynb
    output: Path           # <out>/<stem>/<name>.ipynb


def load_manifest(path: str | Path = DEFAULT_MANIFEST) -> dict:
    path = Path(path)
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study manifest not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("notebooks"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'notebooks' mapping")
    extra = set(manifest) - {"profiles", "notebooks"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(sorted(extra))}")
    for stem, spec in manifest["notebooks"].items():
        unknown = set(spec or {}) - {"title", "runs", "profiles", "seeds"}
        if unknown:
            raise ConfigError(f"{path}: notebook {stem!r}: unknown key(s) {', '.join(sorted(unknown))}")
    return manifest


def _selects(name: str, stem: str) -> bool:
    """``--only NAME`` selects a notebook by its stem (01_data), number (01) or name (data)."""
    return stem == name or stem.startswith(name + "_") or stem.split("_", 1)[-1] == name


def plan(manifest: dict, profile: str, data_path: str | Path, runs_root: str | Path,
         out_dir: str | Path, cache_dir: str | Path, only: Iterable[str] | None = None,
         notebooks_dir: str | Path | None = None) -> list[PlannedRun]:
    """Expand the manifest for ``profile`` into validated runs (nothing is executed)."""
    profiles = manifest.get("profiles", ["quick", "default", "full"])
    if profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(profiles)}")
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else DEFAULT_MANIFEST.parent
    only = list(only or [])
    stems = list(manifest["notebooks"])
    for name in only:
        if not any(_selects(name, s) for s in stems):
            raise ConfigError(f"--only {name!r} matches no notebook; known: {', '.join(stems)}")
    planned = []
    for stem, spec in manifest["notebooks"].items():
        spec = spec or {}
        if only and not any(_selects(n, stem) for n in only):
            continue
        cfg = config_for(stem)
        where = f"study manifest, notebook {stem!r}"
        overrides = cfg.from_params((spec.get("profiles") or {}).get(profile) or {},
                                    partial=True, where=f"{where}, profile {profile!r}")
        seeds = (spec.get("seeds") or {}).get(profile)
        for run_name, run_params in (spec.get("runs") or {"default": {}}).items():
            base = cfg.from_params(run_params or {}, partial=True, where=f"{where}, run {run_name!r}")
            for seed in (seeds or [None]):
                name = run_name if seed is None else f"{run_name}-s{seed}"
                params = {**base, **overrides}
                if seed is not None:
                    params["seed"] = seed
                inject = {"data_path": str(data_path), "run_dir": str(Path(runs_root) / stem / name),
                          "runs_root": str(runs_root), "cache_dir": str(cache_dir)}
                params.update({k: v for k, v in inject.items() if k in cfg.field_names()})
                cfg.from_params(params, where=f"{where}, run {name!r}")  # full validation
                planned.append(PlannedRun(stem, name, params, notebooks_dir / f"{stem}.ipynb",
                                          Path(out_dir) / stem / f"{name}.ipynb"))
    return planned


def execute(run: PlannedRun, kernel: str = "python3", cwd: str | Path | None = None,
            log_output: bool = False) -> float:
    """Execute one planned run with papermill; returns seconds. Raises on a failing cell."""
    import papermill as pm

    run.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(run.source), str(run.output), parameters=run.params,
                            kernel_name=kernel, cwd=str(cwd or REPO_ROOT), log_output=log_output,
                            progress_bar=False)
    except pm.PapermillExecutionError as exc:
        raise StudyRunError(f"{run.source.name} (run {run.name!r}) failed in cell {exc.exec_count}: "
                            f"{exc.ename}: {exc.evalue}. The executed notebook with the full "
                            f"traceback is {run.output}") from None
    if run.name != "default":
        _title_with_run_name(run.output, run.name)
    return time.perf_counter() - start


def _title_with_run_name(path: Path, name: str) -> None:
    """Append the run name to the page title (first markdown heading) of an executed notebook,
    so that several runs of one notebook are told apart in the book's navigation."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            first, _, rest = cell.source.partition("\n")
            cell.source = f"{first}: {name}" + (f"\n{rest}" if rest else "")
            nbformat.write(nb, path)
            return


def run_study(profile: str = "default", data_path: str | Path = DEFAULT_DATA,
              runs_root: str | Path = DEFAULT_RUNS, out_dir: str | Path = DEFAULT_OUT,
              cache_dir: str | Path = DEFAULT_CACHE, only: Iterable[str] | None = None,
              manifest_path: str | Path = DEFAULT_MANIFEST, echo=print) -> list[tuple[PlannedRun, float]]:
    manifest = load_manifest(manifest_path)
    runs = plan(manifest, profile, Path(data_path).resolve(), Path(runs_root).resolve(),
                Path(out_dir).resolve(), Path(cache_dir).resolve(), only,
                notebooks_dir=Path(manifest_path).parent)
    done = []
    for i, run in enumerate(runs, 1):
        echo(f"[{i}/{len(runs)}] {run.notebook} / {run.name} ...")
        seconds = execute(run)
        echo(f"[{i}/{len(runs)}] {run.notebook} / {run.name} done in {seconds:.1f} s -> {run.output}")
        done.append((run, seconds))
    return done


def build_book(root: str | Path = REPO_ROOT, strict: bool = True) -> Path:
    """Build the Jupyter Book at ``root`` (``_config.yml``/``_toc.yml`` there) into ``_build/html``.

    Runs with warnings as errors (``-W --keep-going``). Raises CalledProcessError on failure.
    """
    root = Path(root).resolve()
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if exe is None:
        raise ConfigError("jupyter-book is not installed (pip install 'fer_utils[book]')")
    missing = [p for p in ("_config.yml", "_toc.yml") if not (root / p).exists()]
    if missing:
        raise ConfigError(f"{root}: missing {', '.join(missing)}")
    cmd = [exe, "build", str(root)] + (["-W", "-n", "--keep-going"] if strict else [])
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return root / "_build" / "html"

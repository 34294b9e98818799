"""The study manifest (``notebooks/study.yaml``) -> papermill runs -> Jupyter Book build.

Manifest shape::

    profiles: [quick, default, full]          # the profiles that exist (this list when absent)
    requires_data: [full]                     # profiles that never fall back to the synthetic data
    checks:                                   # what `fer study check` holds the study to
      profile: default                        # the profile `make study` runs
      minutes: 20                             # its time budget, cold, on 2 CPU cores
      shares: {data: 0.5, 02_cnn_baselines: 7, book: 1}   # minutes per notebook or step
      min_gain_over_majority: 0.2             # every trained model's test macro F1 over the
                                              # majority-class baseline's
    book:                                     # the table of contents (see render_toc)
      root: book/intro                        # the landing page
      caption: The study                      # caption of the part holding the pages below
      pages: [book/original_study]            # hand-written chapters, before the experiments
    notebooks:
      01_data:                                # notebooks/01_data.ipynb
        title: Data set overview
        runs:                                 # named runs (absent: one run named "default")
          default: {}
        profiles:                             # per-profile overrides of every run's parameters
          quick: {samples_per_class: 2}       # (one run's: default: {runs: {name: {...}}};
                                              # runs left out: default: {skip: [name]})
        seeds: {full: [1, 2, 3]}              # optional: one run per seed in a profile
      04_augmentation:
        grid:                                 # one run per cell of the cartesian product
          augmentation: [none, hflip, rrc]
          class_weights: [none, inverse]
        profiles:                             # a profile's grid: subsets of the grid's lists
          quick: {epochs: 2, grid: {augmentation: [hflip], class_weights: [none, inverse]}}
          default: {grid: {augmentation: [none, hflip]}}
        book: {parent: 03_cnn_compare}        # pages are sections of 03's page; or {part: Caption}
      03_cnn_compare:
        needs: [02_cnn_baselines]             # notebooks whose run records it reads (absent: every
                                              # earlier one if its config has runs_root, else none)

The runs of a notebook in a profile are ``runs`` x ``grid`` (narrowed by the profile's ``grid``)
x ``seeds``, named ``<run>-<cell>-s<seed>`` with the parts that exist: ``vgg16``, ``vgg16-s1``,
``hflip-inverse``, ``vgg16-hflip-inverse-s2``. A cell is named by its values in grid order: a
string by itself, a bool by the parameter (``pretrained`` / ``no-pretrained``), a number or null by
parameter and value with ``.`` as ``p`` (``lr0p001``, ``val_fractionnone``); characters other than
letters, digits, ``_`` and ``-`` become ``_``. Names must be unique within a notebook.

Rules, all checked before anything runs (:class:`~fer_utils.errors.ConfigError` naming the place):
every key under a notebook's ``profiles:`` and ``seeds:`` is one of ``profiles``; a profile's
``grid`` names only grid parameters, with values from the notebook's grid (the ``full`` profile
conventionally keeps the whole grid, ``default`` a reduced one); the ``quick`` profile runs at most
two cells of every grid; a grid parameter is set by no run, no profile override and (``seed``) no
``seeds``. Every parameter and grid value is validated against the notebook's config
(``fer_utils.study.config``); the runner injects ``data_path`` and ``run_dir`` (and
``runs_root``/``cache_dir`` where the config has them). Executed notebooks land in
``<out>/<notebook>/<run>.ipynb``; run records in ``<runs>/<notebook>/<run>/``. Default folders come
from :func:`fer_utils.paths.project_paths`, except that a profile listed in ``requires_data`` (the
real study) never defaults to the synthetic data: a plan of it that reads a data set needs one
given. :func:`run_study` also checks the data set (layout, labels, every image) before the first
notebook runs (:func:`check_data`), so that bad input writes nothing.

Warm re-runs: every executed notebook is stamped with a fingerprint of its notebook, parameters,
the code, its data set and the stamps of the notebooks it ``needs``; a run whose stamp still
matches (and whose run record is there) is skipped (:mod:`fer_utils.study.freshness`; ``force`` re-runs).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from fer_utils.study import freshness
from fer_utils.cache import write_if_changed
from fer_utils.study.config import config_for
from fer_utils.errors import ConfigError, DataError, FERError
from fer_utils.options import display_name
from fer_utils.paths import BOOK_OUT, MANIFEST, project_paths

DEFAULT_PROFILES = ["quick", "default", "full"]
QUICK_PROFILE, QUICK_MAX_CELLS = "quick", 2
NOTEBOOK_KEYS = {"title", "runs", "grid", "profiles", "seeds", "book", "needs"}
BOOK_KEYS = {"root", "caption", "pages", "planned"}         # the manifest's book:
PAGE_KEYS = {"parent", "part"}                   # a notebook's book:
CHECK_KEYS = {"profile", "minutes", "shares", "tolerance", "min_gain_over_majority"}   # the manifest's checks:
STUDY_STEPS = ("data", "book")                   # steps of `make study` besides the notebooks
PROFILE_KEYS = {"grid", "runs", "skip"}                  # a notebook's profile entry keys that are not parameters
PAGES = BOOK_OUT.as_posix()
PATH_PARAMETERS = ("data_path", "run_dir", "runs_root", "cache_dir")
"""Parameters the runner fills in with folders."""
TOC_HEADER = ("# Generated by `fer book build` from notebooks/study.yaml (fer_utils.study.runner.render_toc):\n"
              "# edit the manifest, not this file. Pages under book/experiments/ are executed notebooks\n"
              "# written by `fer study run`; run it before `fer book build`.\n")


class StudyRunError(FERError):
    """A notebook of the study failed; the message names it and its executed copy."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    notebook: str          # stem, e.g. "01_data"
    name: str              # run name, e.g. "resnet18-s1"
    params: dict[str, Any]
    source: Path           # notebooks/<stem>.ipynb
    output: Path           # <out>/<stem>/<name>.ipynb
    needs: tuple[str, ...] = ()   # notebooks whose run records this run reads (manifest ``needs``)


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What :func:`execute_study` did with one planned run."""

    run: PlannedRun
    seconds: float         # spent now: executing it, or finding it unchanged
    executed: bool         # False: unchanged since its last execution, skipped
    run_seconds: float     # the execution that made the notebook now in place (the cold cost)
    factor: float | None = None   # the host's speed factor measured before that execution (fer_utils.study.speed)


@dataclasses.dataclass(frozen=True)
class _Run:
    """One run of a notebook before profile overrides, validation and path injection."""

    name: str
    run: str               # the entry of ``runs`` it comes from ("" for a grid without runs)
    params: dict[str, Any]  # the run's parameters
    cell: dict[str, Any]   # the grid cell's parameters
    seed: int | None


def load_manifest(path: str | Path | None = None) -> dict:
    """Read and check the manifest at ``path`` (None: the project's ``notebooks/study.yaml``)."""
    path = Path(path) if path is not None else project_paths().manifest
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study manifest not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    check_manifest(manifest, source=str(path))
    return manifest


def _unknown(keys: Iterable, known: Iterable, where: str, what: str = "key") -> None:
    extra = sorted(map(str, set(keys) - set(known)))
    if extra:
        raise ConfigError(f"{where}: unknown {what}(s) {', '.join(extra)}; known: {', '.join(map(str, known))}")


def _profiles(manifest: dict) -> list[str]:
    return manifest.get("profiles") or DEFAULT_PROFILES


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _profile_spec(spec: dict, profile: str) -> dict:
    """A notebook's entry under ``profiles:`` for ``profile``: overrides and a ``grid``."""
    return (spec.get("profiles") or {}).get(profile) or {}


def _overrides(spec: dict, profile: str) -> dict:
    """The profile's parameter overrides of a notebook (its ``grid`` and ``runs`` keys excluded)."""
    return {k: v for k, v in _profile_spec(spec, profile).items() if k not in PROFILE_KEYS}


def _run_overrides(spec: dict, profile: str, run: str) -> dict:
    """The profile's overrides of one named run (``profiles: {<profile>: {runs: {<run>: {...}}}}``)."""
    return (_profile_spec(spec, profile).get("runs") or {}).get(run) or {}


def _page(manifest: dict, stem: str) -> dict:
    """A notebook's ``book:`` entry (``parent``/``part``)."""
    return (manifest["notebooks"][stem] or {}).get("book") or {}


def _grid(spec: dict, profile: str) -> dict[str, list]:
    """The notebook's grid as narrowed by the profile's ``grid``."""
    narrowed = _profile_spec(spec, profile).get("grid") or {}
    return {k: narrowed.get(k, values) for k, values in (spec.get("grid") or {}).items()}


def check_manifest(manifest: Any, source: str = "study manifest") -> None:
    """Check the manifest's structure (not parameter values: :func:`plan` does that)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("notebooks"), dict):
        raise ConfigError(f"{source}: expected a mapping with a 'notebooks' mapping")
    _unknown(manifest, ("profiles", "requires_data", "book", "checks", "notebooks"), source, "top-level key")
    book = _mapping(manifest.get("book"), f"{source}: book")
    _unknown(book, BOOK_KEYS, f"{source}: book")
    if not isinstance(book.get("pages", []), list):
        raise ConfigError(f"{source}: book: 'pages' must be a list of pages, got {book['pages']!r}")
    profiles = _profiles(manifest)
    requires = manifest.get("requires_data", [])
    if not isinstance(requires, list):
        raise ConfigError(f"{source}: requires_data: expected a list of profiles, got {requires!r}")
    _unknown(requires, profiles, f"{source}: requires_data", "profile")
    for stem, spec in manifest["notebooks"].items():
        where = f"{source}: notebook {stem!r}"
        spec = _mapping(spec, where)
        _unknown(spec, NOTEBOOK_KEYS, where)
        for key in ("profiles", "seeds"):
            _unknown(_mapping(spec.get(key), f"{where}, {key}"), profiles, f"{where}, {key}", "profile")
        for key in ("runs", "profiles"):
            for name, value in _mapping(spec.get(key), f"{where}, {key}").items():
                _mapping(value, f"{where}, {key}: {name!r}")
        for profile, seeds in (spec.get("seeds") or {}).items():
            if not isinstance(seeds, list):
                raise ConfigError(f"{where}, seeds: {profile!r} needs a list of seeds, got {seeds!r}")
        _check_grid(spec, profiles, where)
        for profile in profiles:
            at = f"{where}, profile {profile!r}, runs"
            named = _mapping(_profile_spec(spec, profile).get("runs"), at)
            _unknown(named, spec.get("runs") or {}, at, "run")
            for run, params in named.items():
                _mapping(params, f"{at}: {run!r}")
            skip = _profile_spec(spec, profile).get("skip") or []
            if not isinstance(skip, list):
                raise ConfigError(f"{where}, profile {profile!r}, skip: expected a list of run names, got {skip!r}")
            _unknown(skip, spec.get("runs") or {}, f"{where}, profile {profile!r}, skip", "run")
        for profile in profiles:
            names = [r.name for r in _expand(spec, profile)]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{where}, profile {profile!r}: several runs named {', '.join(twice)}")
        page = _mapping(spec.get("book"), f"{where}, book")
        _unknown(page, PAGE_KEYS, f"{where}, book")
        if "parent" in page and "part" in page:
            raise ConfigError(f"{where}, book: 'parent' and 'part' exclude each other")
    for stem in manifest["notebooks"]:
        _check_parents(manifest, stem, f"{source}: notebook {stem!r}")
        _check_needs(manifest, stem, f"{source}: notebook {stem!r}")
    _check_checks(manifest, profiles, source)


def _check_needs(manifest: dict, stem: str, where: str) -> None:
    needs = (manifest["notebooks"][stem] or {}).get("needs")
    if needs is None:
        return
    earlier = list(manifest["notebooks"])[:list(manifest["notebooks"]).index(stem)]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise ConfigError(f"{where}, needs: expected a list of notebooks, got {needs!r}")
    for name in needs:
        if name not in earlier:
            raise ConfigError(f"{where}, needs: {name!r} is not a notebook listed before it "
                              f"(earlier notebooks: {', '.join(earlier) or 'none'})")


def _needs(manifest: dict, stem: str, cfg) -> tuple[str, ...]:
    """The notebooks whose run records ``stem`` reads: the manifest's ``needs``, else every earlier
    notebook when its config reads a runs folder (``runs_root``), else none."""
    spec = manifest["notebooks"][stem] or {}
    if spec.get("needs") is not None:
        return tuple(spec["needs"])
    stems = list(manifest["notebooks"])
    return tuple(stems[:stems.index(stem)]) if "runs_root" in cfg.field_names() else ()


def _check_checks(manifest: dict, profiles: list[str], source: str) -> None:
    where = f"{source}: checks"
    checks = _mapping(manifest.get("checks"), where)
    _unknown(checks, CHECK_KEYS, where)
    if not checks:
        return
    if checks.get("profile") not in profiles:
        raise ConfigError(f"{where}: 'profile' must be one of {', '.join(profiles)}, got {checks.get('profile')!r}")
    shares = _mapping(checks.get("shares"), f"{where}, shares")
    _unknown(shares, [*STUDY_STEPS, *manifest["notebooks"]], f"{where}, shares", "step")
    numbers = {"minutes": checks.get("minutes"), **{f"shares: {k}": v for k, v in shares.items()}}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{where}, {key}: expected a positive number of minutes, got {value!r}")
    if sum(shares.values()) > checks["minutes"] + 1e-9:
        raise ConfigError(f"{where}: the shares add up to {sum(shares.values()):g} minutes, more than "
                          f"'minutes' ({checks['minutes']:g})")
    tol = checks.get("tolerance", 1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 1 <= tol <= 3:
        raise ConfigError(f"{where}, tolerance: expected a number from 1 to 3 (the slack on top of each share "
                          f"x the host's speed factor), got {tol!r}")
    gain = checks.get("min_gain_over_majority", 0)
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 <= gain < 1:
        raise ConfigError(f"{where}, min_gain_over_majority: expected a number in [0, 1), got {gain!r}")


def _check_grid(spec: dict, profiles: list[str], where: str) -> None:
    grid = _mapping(spec.get("grid"), f"{where}, grid")
    for param, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}, grid: {param!r} needs a non-empty list of values, got {values!r}")
        setters = [f"run {run!r}" for run, params in (spec.get("runs") or {}).items() if param in (params or {})]
        setters += [f"profile {p!r}" for p in profiles if param in _overrides(spec, p)
                    or any(param in (v or {}) for v in (_profile_spec(spec, p).get("runs") or {}).values())]
        setters += ["seeds"] if param == "seed" and spec.get("seeds") else []
        if setters:
            raise ConfigError(f"{where}: grid parameter {param!r} is also set by {', '.join(setters)}; "
                              f"narrow the grid in a profile's 'grid' instead")
    for profile in profiles:
        at = f"{where}, profile {profile!r}, grid"
        narrowed = _mapping(_profile_spec(spec, profile).get("grid"), at)
        _unknown(narrowed, grid, at, "grid parameter")
        for param, values in narrowed.items():
            if not isinstance(values, list) or not values or any(v not in grid[param] for v in values):
                raise ConfigError(f"{at}: {param!r} must be a non-empty subset of the notebook's grid "
                                  f"{grid[param]!r}; got {values!r}")
    cells = math.prod(len(v) for v in _grid(spec, QUICK_PROFILE).values()) if QUICK_PROFILE in profiles else 0
    if cells > QUICK_MAX_CELLS:
        raise ConfigError(f"{where}: profile {QUICK_PROFILE!r} runs {cells} cells of the grid; at most "
                          f"{QUICK_MAX_CELLS} (narrow it under profiles: {QUICK_PROFILE}: grid:)")


def _check_parents(manifest: dict, stem: str, where: str) -> None:
    """A parent is another notebook with a single page, and parents form no cycle."""
    seen = [stem]
    while "parent" in _page(manifest, seen[-1]):
        parent = _page(manifest, seen[-1])["parent"]
        if parent not in manifest["notebooks"]:
            raise ConfigError(f"{where}, book: parent {parent!r} is not a notebook of the manifest")
        if parent in seen:
            raise ConfigError(f"{where}, book: parents form a cycle {' -> '.join(seen + [parent])}")
        if len(_page_names(manifest, parent)) != 1:
            raise ConfigError(f"{where}, book: parent {parent!r} has several runs; a parent needs one page")
        seen.append(parent)


def _slug(param: str, value: Any) -> str:
    if isinstance(value, bool):
        text = param if value else f"no-{param}"
    elif isinstance(value, str):
        text = value
    else:
        text = f"{param}{'none' if value is None else value}".replace(".", "p")
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _expand(spec: dict, profile: str) -> Iterator[_Run]:
    """The runs of a notebook in ``profile``: runs x grid cells x seeds, named."""
    grid = _grid(spec, profile)
    cells = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    runs = spec.get("runs") or {("" if grid else "default"): {}}
    skipped = set(_profile_spec(spec, profile).get("skip") or [])
    runs = {name: params for name, params in runs.items() if name not in skipped}
    seeds = (spec.get("seeds") or {}).get(profile) or [None]
    for (run, params), cell, seed in itertools.product(runs.items(), cells, seeds):
        name = "-".join(filter(None, [run, *(_slug(k, v) for k, v in cell.items())]))
        yield _Run(name if seed is None else f"{name}-s{seed}", run, params or {}, cell, seed)


def _page_names(manifest: dict, stem: str) -> set[str]:
    """The run names (book pages) of a notebook over all profiles."""
    spec = manifest["notebooks"][stem] or {}
    return {run.name for profile in _profiles(manifest) for run in _expand(spec, profile)}


def _selects(name: str, stem: str) -> bool:
    """``--only NAME`` selects a notebook by its stem (01_data), number (01) or name (data)."""
    return stem == name or stem.startswith(name + "_") or stem.split("_", 1)[-1] == name


def plan(manifest: dict, profile: str = "default", data_path: str | Path | None = None,
         runs_root: str | Path | None = None, out_dir: str | Path | None = None,
         cache_dir: str | Path | None = None, only: Iterable[str] | None = None,
         notebooks_dir: str | Path | None = None) -> list[PlannedRun]:
    """Expand the manifest for ``profile`` into validated runs (nothing is executed).

    A folder left None is the project's (:func:`fer_utils.paths.project_paths`): data
    ``<data>/synthetic``, runs, ``book/experiments``, cache and ``notebooks``; but a profile listed
    in the manifest's ``requires_data`` whose runs read a data set needs ``data_path``.
    """
    check_manifest(manifest)
    profiles = _profiles(manifest)
    if profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(profiles)}")
    data_required = data_path is None and profile in manifest.get("requires_data", [])
    if None in (data_path, runs_root, out_dir, cache_dir, notebooks_dir):
        paths = project_paths()
        data_path, runs_root, out_dir, cache_dir, notebooks_dir = (
            given if given is not None else default for given, default in
            [(data_path, paths.synthetic), (runs_root, paths.runs), (out_dir, paths.book_out),
             (cache_dir, paths.cache), (notebooks_dir, paths.notebooks)])
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
        overrides = cfg.from_params(_overrides(spec, profile), partial=True, where=f"{where}, profile {profile!r}")
        for param, values in (spec.get("grid") or {}).items():  # every value, not only this profile's
            for value in values:
                cfg.from_params({param: value}, partial=True, where=f"{where}, grid")
        for run in _expand(spec, profile):
            base = cfg.from_params(run.params, partial=True, where=f"{where}, run {run.run!r}")
            cell = cfg.from_params(run.cell, partial=True, where=f"{where}, grid")
            only_this = cfg.from_params(_run_overrides(spec, profile, run.run), partial=True,
                                        where=f"{where}, profile {profile!r}, run {run.run!r}")
            params = {**base, **cell, **overrides, **only_this}
            if run.seed is not None:
                params["seed"] = run.seed
            inject = dict(zip(PATH_PARAMETERS, (str(data_path), str(Path(runs_root) / stem / run.name),
                                                str(runs_root), str(cache_dir))))
            params.update({k: v for k, v in inject.items() if k in cfg.field_names()})
            cfg.from_params(params, where=f"{where}, run {run.name!r}")  # full validation
            planned.append(PlannedRun(stem, run.name, params, Path(notebooks_dir) / f"{stem}.ipynb",
                                      Path(out_dir) / stem / f"{run.name}.ipynb", _needs(manifest, stem, cfg)))
    if data_required and data_sets(planned):
        raise ConfigError(f"profile {profile!r} is the real study and never runs on the synthetic data: "
                          f"pass --data /path/to/RAF-DB (check it first with `fer data check /path/to/RAF-DB`)")
    return planned


QUIET_HUB = "HF_HUB_DISABLE_PROGRESS_BARS"


def kernel_config(sockets: str | Path):
    """The kernel manager's configuration for a notebook run: the kernel talks to papermill over
    Unix sockets in the private folder ``sockets`` (IPC transport) rather than over plain-text TCP
    on the loopback, which ipykernel warns about on every start. The kernel's own log shows only
    critical messages: jupyter_client interrupts a kernel (SIGINT) before every shutdown, and an
    idle kernel then logs "KeyboardInterrupt caught in kernel." on the run's stderr, now and then;
    what a cell does wrong reaches papermill as the cell's error, not through that log."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")},
                   "NotebookClient": {"extra_arguments": ["--IPKernelApp.log_level=CRITICAL"]}})


def execute(run: PlannedRun, kernel: str = "python3", cwd: str | Path | None = None,
            log_output: bool = False, fingerprint: str | None = None, speed: dict | None = None) -> float:
    """Execute one planned run with papermill in ``cwd`` (None: the project folder); returns
    seconds. Raises on a failing cell. With ``fingerprint`` (:func:`run_fingerprint`), the executed
    notebook is stamped with it (:mod:`fer_utils.study.freshness`), so that an unchanged re-run skips it,
    and with ``speed`` (:meth:`fer_utils.study.speed.Speed.as_record`: the host's speed measured before
    it), so that a skipped run keeps the factor of the execution that made it."""
    import papermill as pm

    run.output.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path(cwd or project_paths().root).resolve()
    # papermill writes as it goes: into a hidden file beside the page (the book ignores it), which
    # replaces the page only when every cell ran, so that a failed run never overwrites a good page
    running, failed = (run.output.with_name(f".{run.output.stem}.{what}.ipynb") for what in ("running", "failed"))
    start = time.perf_counter()
    # The kernel inherits this process's environment: with Hugging Face's progress bars off, loading a
    # model (transformers' "Loading weights") draws no Jupyter widget, whose page in the book would
    # load require.js and the widget manager from a CDN to show an empty bar.
    saved = os.environ.get(QUIET_HUB)
    os.environ[QUIET_HUB] = "1"
    sockets = tempfile.mkdtemp(prefix="fer-kernel-")   # private (0700), short: a socket path has ~100 bytes
    try:
        pm.execute_notebook(str(run.source), str(running), parameters=_relative_paths(run.params, cwd),
                            kernel_name=kernel, cwd=str(cwd), log_output=log_output, progress_bar=False,
                            config=kernel_config(sockets))
    except pm.PapermillExecutionError as exc:
        os.replace(running, failed)
        kept = f"; the page from its last good run is unchanged ({run.output})" if run.output.exists() else ""
        raise StudyRunError(f"{run.source.name} (run {run.name!r}) failed in cell {exc.exec_count}: "
                            f"{exc.ename}: {exc.evalue}. The executed notebook with the full "
                            f"traceback is {failed}{kept}") from None
    except BaseException:
        running.unlink(missing_ok=True)     # interrupted or papermill itself failed: no half page
        raise
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        if saved is None:
            os.environ.pop(QUIET_HUB, None)
        else:
            os.environ[QUIET_HUB] = saved
    seconds = time.perf_counter() - start
    _finish_notebook(running, None if run.name == "default" else run.name,
                     None if fingerprint is None else freshness.new_stamp(fingerprint, seconds, speed))
    os.replace(running, run.output)
    failed.unlink(missing_ok=True)          # an earlier failure's traceback is out of date now
    return seconds


def _relative_paths(params: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """``params`` with the folders inside ``cwd`` (where the notebook runs) written relative to
    it, so that a page of the book shows ``data/runs/...`` and never the build machine's absolute
    paths; folders elsewhere stay absolute."""
    out = dict(params)
    for key in PATH_PARAMETERS:
        if key in out and Path(out[key]).is_relative_to(cwd):
            out[key] = Path(out[key]).relative_to(cwd).as_posix() or "."
    return out


def display_run_name(name: str) -> str:
    """A run name as a page title writes it: architecture names as the text names them
    (``resnet18-s1`` -> ``ResNet18-s1``), everything else as it is."""
    return "-".join(map(display_name, name.split("-")))


def _finish_notebook(path: Path, name: str | None, stamp: dict | None) -> None:
    """Append the run ``name`` (None: leave it) to the page title (first markdown heading) of an
    executed notebook, so that several runs of one notebook are told apart in the book's
    navigation, and store ``stamp`` (None: none) in its metadata."""
    import nbformat

    if name is None and stamp is None:
        return
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells if name is not None else []:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            first, _, rest = cell.source.partition("\n")
            cell.source = f"{first}: {display_run_name(name)}" + (f"\n{rest}" if rest else "")
            break
    if stamp is not None:
        nb.metadata[freshness.STAMP_KEY] = stamp
    nbformat.write(nb, path)


def plan_study(profile: str = "default", data_path: str | Path | None = None,
               runs_root: str | Path | None = None, out_dir: str | Path | None = None,
               cache_dir: str | Path | None = None, only: Iterable[str] | None = None,
               manifest_path: str | Path | None = None) -> list[PlannedRun]:
    """Load the manifest and :func:`plan` its runs for ``profile``; writes nothing.

    Raises :class:`~fer_utils.errors.ConfigError` for a missing project folder or manifest, an
    unknown profile or ``only`` name, a bad parameter, or no ``data_path`` for a profile of the
    manifest's ``requires_data``. A path left None is the project's
    (:func:`fer_utils.paths.project_paths`); a relative path is taken from the current folder.
    """
    manifest = load_manifest(manifest_path)
    resolved = [None if p is None else Path(p).resolve() for p in (data_path, runs_root, out_dir, cache_dir)]
    return plan(manifest, profile, *resolved, only=only,
                notebooks_dir=Path(manifest_path).resolve().parent if manifest_path is not None else None)


def budget_profile(manifest_path: str | Path | None = None) -> str | None:
    """The profile the manifest's time budget (``checks``) applies to; None without a budget."""
    return (load_manifest(manifest_path).get("checks") or {}).get("profile")


def data_sets(runs: Iterable[PlannedRun]) -> list[Path]:
    """The data sets the runs read (the ``data_path`` of those that have one), each once."""
    return list(dict.fromkeys(Path(run.params["data_path"]) for run in runs if "data_path" in run.params))


def check_data(runs: Iterable[PlannedRun], data_fingerprints: dict[Path, str] | None = None) -> None:
    """Check every data set the runs read (:func:`data_sets`) as ``fer data check`` does, before any
    notebook runs: a wrong ``--data`` or a damaged data set is reported with all its problems (up
    to 20 of each kind, each naming its file and line), rather than as the first one in a failed
    page. Raises :class:`~fer_utils.errors.DataError`.

    The layout is checked every time (it reads the folder only). The content (labels, every image
    decoded) is checked once per content: a data set whose fingerprint
    (:func:`fer_utils.study.freshness.tree_fingerprint`) passed before is not decoded again, so an
    unchanged re-run stays cheap. ``data_fingerprints`` memoises the fingerprints over one study.
    """
    from fer_utils.data import check_dataset, detect_format  # torch and pandas: only when a study runs

    runs = list(runs)
    memo = data_fingerprints if data_fingerprints is not None else {}
    for path in data_sets(runs):
        detect_format(path)
        params = next(run.params for run in runs if Path(run.params.get("data_path", "")) == path)
        cache = Path(params.get("cache_dir") or project_paths().cache) / "study"
        if path not in memo:
            memo[path] = freshness.tree_fingerprint(path, cache / "data-fingerprints.json")
        passed = cache / "data-checked.json"
        known = _read_json_dict(passed)
        fmt, variant = params.get("data_format", "auto"), params.get("variant", "aligned")
        key = f"{memo[path]}:{fmt}:{variant}"     # RAF-DB's aligned and original images are two checks
        if key in known:
            continue
        report = check_dataset(path, fmt=fmt, variant=variant)
        if not report.ok:
            raise DataError(f"the data set {path} has problems; no notebook was run:\n"
                            f"{report.format(max_messages=20)}\n(`fer data check {path}` lists them all)")
        known[key] = {"path": str(path), "images_checked": report.images_checked}
        cache.mkdir(parents=True, exist_ok=True)
        passed.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")


def _read_json_dict(path: Path) -> dict:
    """A JSON object from ``path``; empty when the file is absent or not such an object (a cache)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_fingerprint(run: PlannedRun, data_fingerprints: dict[Path, str] | None = None,
                    cwd: str | Path | None = None) -> str:
    """The fingerprint of ``run`` as it would execute now (:func:`fer_utils.study.freshness.run_fingerprint`):
    its notebook, its parameters as the notebook sees them, the code, its data set's content and
    the stamps of the executed runs of the notebooks it ``needs``. ``data_fingerprints`` memoises
    the data sets' fingerprints over one study."""
    cwd = Path(cwd or project_paths().root).resolve()
    data = None
    if "data_path" in run.params:
        path = Path(run.params["data_path"])
        memo = data_fingerprints if data_fingerprints is not None else {}
        if path not in memo:
            cache = run.params.get("cache_dir") or project_paths().cache
            memo[path] = freshness.tree_fingerprint(path, Path(cache) / "study" / "data-fingerprints.json")
        data = memo[path]
    upstream = freshness.upstream_stamps(run.output.parent.parent, run.needs)
    return freshness.run_fingerprint(run.source, _relative_paths(run.params, cwd), data, upstream)


def execute_study(runs: list[PlannedRun], echo=print, force: bool = False,
                  measure_speed: bool = False) -> list[RunOutcome]:
    """Execute planned runs in order, after :func:`check_data`; returns one :class:`RunOutcome`
    per run.

    A run whose executed notebook carries the fingerprint it would have now (its notebook,
    parameters, the code, its data and what it reads are unchanged: :mod:`fer_utils.study.freshness`) and
    whose run record is there is skipped, unless ``force``. Nothing is written when the data check
    fails; a failing notebook stops the study (:class:`StudyRunError`), leaving the page of its last
    good run as it was and its executed copy with the traceback in a hidden file beside it
    (:func:`execute`); it executes again next time.

    With ``measure_speed`` (the budget's profile), the host's speed is measured before each run that
    executes (:func:`fer_utils.study.speed.measure`: four VGG16 training steps, 1.5-5 s) and stored in its stamp; a skipped run
    keeps the factor of the execution that made it.
    """
    from fer_utils.study.speed import openmp_waits

    data_fingerprints: dict[Path, str] = {}
    check_data(runs, data_fingerprints)
    openmp_waits()   # the kernels inherit it (``fer`` has set it already, before torch loaded)
    done = []
    for i, run in enumerate(runs, 1):
        start = time.perf_counter()
        fingerprint = run_fingerprint(run, data_fingerprints)
        stamp = None if force else freshness.is_current(run.output, fingerprint, run.params.get("run_dir"))
        if stamp is not None:
            seconds = time.perf_counter() - start
            factor = (stamp.get("speed") or {}).get("factor")
            echo(f"[{i}/{len(runs)}] {run.notebook} / {run.name} unchanged since {stamp.get('finished', '?')[:16]} "
                 f"UTC (it ran in {stamp.get('seconds', 0):.1f} s"
                 + (f" at speed factor {factor:.2f}" if factor is not None else "") + "): skipped")
            done.append(RunOutcome(run, seconds, False, float(stamp.get("seconds", 0.0)), factor))
            continue
        speed = None
        if measure_speed:
            from fer_utils.study import speed as speed_module   # torch: only when the budget's profile runs

            speed = speed_module.measure().as_record()
        echo(f"[{i}/{len(runs)}] {run.notebook} / {run.name} ..."
             + (f" (speed factor {speed['factor']:.2f})" if speed else ""))
        seconds = execute(run, fingerprint=fingerprint, speed=speed)
        echo(f"[{i}/{len(runs)}] {run.notebook} / {run.name} done in {seconds:.1f} s -> {run.output}")
        done.append(RunOutcome(run, time.perf_counter() - start, True, seconds, speed and speed["factor"]))
    return done


def run_study(profile: str = "default", data_path: str | Path | None = None,
              runs_root: str | Path | None = None, out_dir: str | Path | None = None,
              cache_dir: str | Path | None = None, only: Iterable[str] | None = None,
              manifest_path: str | Path | None = None, echo=print, force: bool = False) -> list[RunOutcome]:
    """Plan and execute the manifest's runs for ``profile``; a path left None is the project's
    (:func:`fer_utils.paths.project_paths`). Notebooks execute in the project folder; unchanged
    runs are skipped unless ``force`` (:func:`execute_study`).

    Every run is planned, every pretrained model it needs looked up
    (:func:`fer_utils.study.weights.check_present`) and the data set checked before the first one
    executes (:func:`plan_study`, :func:`check_data`): an error there writes nothing. In the profile of the
    manifest's time budget (``checks.profile``), the host's speed is measured before each executed
    run (:func:`execute_study`).
    """
    from fer_utils.study.weights import check_present

    runs = plan_study(profile, data_path, runs_root, out_dir, cache_dir, only, manifest_path)
    check_present(runs, profile)   # every pretrained model the plan needs is here, or nothing runs
    return execute_study(runs, echo, force, measure_speed=budget_profile(manifest_path) == profile)


def render_toc(manifest: dict) -> str:
    """The Jupyter Book ``_toc.yml`` (format ``jb-book``) for the manifest.

    The root and the hand-written ``pages`` come from the manifest's ``book``; then every notebook
    in manifest order is a chapter of the part ``book.caption`` (or of its own ``book.part``),
    except that a notebook with ``book.parent`` is a section of its parent's page. A notebook with
    one page in every profile is listed as ``book/experiments/<stem>/<run>``; one with several runs
    as the glob ``book/experiments/<stem>/*``, which keeps only the pages that exist.
    """
    check_manifest(manifest)
    book = manifest.get("book") or {}
    if "root" not in book:
        raise ConfigError("study manifest: book: 'root' (the landing page) is missing")
    caption = book.get("caption", "The study")
    parts = {caption: [{"file": page} for page in book.get("pages") or []]}
    for stem in manifest["notebooks"]:
        page = _page(manifest, stem)
        if "parent" not in page:
            parts.setdefault(page.get("part", caption), []).append(_toc_entry(manifest, stem))
    toc = {"format": "jb-book", "root": book["root"],
           "parts": [{"caption": c, "chapters": chapters} for c, chapters in parts.items() if chapters]}
    return TOC_HEADER + yaml.safe_dump(toc, sort_keys=False)


def _toc_entry(manifest: dict, stem: str) -> dict:
    names = _page_names(manifest, stem)
    if len(names) > 1:
        return {"glob": f"{PAGES}/{stem}/*"}
    entry: dict[str, Any] = {"file": f"{PAGES}/{stem}/{names.pop()}"}
    children = [_toc_entry(manifest, child) for child in manifest["notebooks"]
                if _page(manifest, child).get("parent") == stem]
    if children:
        entry["sections"] = children
    return entry


def build_book(root: str | Path | None = None, strict: bool = True, runs_root: str | Path | None = None) -> Path:
    """Build the Jupyter Book at ``root`` (None: the project folder) into ``_build/html``.

    Writes ``<root>/_toc.yml`` from ``<root>/notebooks/study.yaml`` (:func:`render_toc`) and the
    status section of the introduction from the run records under ``runs_root`` (None: the
    project's; :func:`fer_utils.study.status.write_status`) first.
    Runs with warnings as errors (``-W --keep-going``). Raises CalledProcessError on failure.
    """
    root = Path(root).resolve() if root is not None else project_paths().root
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if exe is None:
        raise ConfigError("jupyter-book is not installed (pip install 'fer_utils[book]')")
    if not (root / "_config.yml").exists():
        raise ConfigError(f"{root}: missing _config.yml")
    from fer_utils.study.status import write_status  # pandas: only when a book is built

    manifest = load_manifest(root / MANIFEST)
    write_if_changed(root / "_toc.yml", render_toc(manifest))
    write_status(root, manifest, project_paths(cwd=root).runs if runs_root is None else runs_root)
    cmd = [exe, "build", str(root)] + (["-W", "-n", "--keep-going"] if strict else [])
    subprocess.run(cmd, check=True)
    return root / "_build" / "html"

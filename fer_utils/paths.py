"""Where a project's files live: one place that decides, from settings and environment variables.

A *project folder* holds the study manifest ``notebooks/study.yaml``. It is ``$FER_HOME`` when
that is set, else the current folder when it holds the manifest. Everything the study writes
lives under it unless its own variable says otherwise::

    FER_HOME          project folder                   (else the current folder)
    FER_DATA_DIR      data sets, runs, caches          <project>/data
    FER_RUNS_DIR      run records                      <data>/runs
    FER_CACHE_DIR     the content-addressed cache      <data>/cache
    FER_BUNDLES_DIR   where model bundles are found    <runs>  (a bundle lives in its run record)
    FER_INSTANCE_DIR  a server's database and uploads  <data>/instance

Nothing here walks up from ``__file__``, so an installed (non-editable) package works on any
project folder. Relative values are taken relative to the current folder. Torch-free.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fer_utils.errors import ConfigError

MANIFEST = Path("notebooks") / "study.yaml"
BOOK_OUT = Path("book") / "experiments"
"""Where ``fer study run`` writes executed notebooks, relative to the project folder."""
ENV_HOME = "FER_HOME"
ENV_DIRS = {
    "data": "FER_DATA_DIR",
    "runs": "FER_RUNS_DIR",
    "cache": "FER_CACHE_DIR",
    "bundles": "FER_BUNDLES_DIR",
    "instance": "FER_INSTANCE_DIR",
}


@dataclass(frozen=True)
class ProjectPaths:
    """The folders of one project (absolute paths; nothing is created here)."""

    root: Path
    data: Path
    runs: Path
    cache: Path
    bundles: Path
    instance: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def notebooks(self) -> Path:
        return self.manifest.parent

    @property
    def book_out(self) -> Path:
        """Where ``fer study run`` writes executed notebooks (pages of the book)."""
        return self.root / BOOK_OUT

    @property
    def synthetic(self) -> Path:
        """The embedded default data set (written by ``fer data synth``)."""
        return self.data / "synthetic"


def _absolute(value: str, cwd: Path) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else cwd / path).resolve()


def find_project(env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> Path:
    """The project folder: ``$FER_HOME``, else the current folder if it holds the manifest.

    Raises :class:`~fer_utils.errors.ConfigError` saying how to name one otherwise.
    """
    env = os.environ if env is None else env
    cwd = Path(cwd or os.getcwd()).resolve()
    home = env.get(ENV_HOME)
    if home:
        root = _absolute(home, cwd)
        if not (root / MANIFEST).is_file():
            raise ConfigError(f"{ENV_HOME}={home}: {root / MANIFEST} not found (not a project folder)")
        return root
    if (cwd / MANIFEST).is_file():
        return cwd
    raise ConfigError(f"no project folder: {cwd} holds no {MANIFEST}; run from the project folder "
                      f"or set {ENV_HOME} (the FER_*_DIR variables move a project's folders, they do not "
                      "make one; fer caption, embed and features also run anywhere with --cache DIR)")


def project_paths(env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> ProjectPaths:
    """All folders of the current project, with environment overrides applied."""
    env = os.environ if env is None else env
    cwd = Path(cwd or os.getcwd()).resolve()
    root = find_project(env, cwd)

    def pick(name: str, default: Path) -> Path:
        value = env.get(ENV_DIRS[name])
        return _absolute(value, cwd) if value else default

    data = pick("data", root / "data")
    runs = pick("runs", data / "runs")
    return ProjectPaths(root=root, data=data, runs=runs, cache=pick("cache", data / "cache"),
                        bundles=pick("bundles", runs), instance=pick("instance", data / "instance"))

"""Warm re-runs of the study: a notebook run whose inputs and code did not change is not executed.

Every run ``fer study run`` executes is stamped, in the executed notebook's metadata
(``metadata.fer_study``), with a *fingerprint* of everything that determines what it computes, the
time it finished and its seconds. The next ``fer study run`` computes the fingerprint again and
skips the run when the executed notebook carries the same one and its run record is still there.
The fingerprint (:func:`run_fingerprint`) covers

- the source notebook's bytes and the run's parameters (folders as the notebook sees them);
- the code: every file of the ``fer_utils`` package and the name and version of every installed
  distribution (:func:`code_fingerprint`), so an edit of the package or an upgrade re-runs all;
- the data set's content (:func:`tree_fingerprint`: every file's path and bytes), when the run
  reads one;
- for a notebook that reads other notebooks' run records (the manifest's ``needs``), the stamps of
  those notebooks' executed runs: a re-executed upstream run has a new stamp, so what reads it runs
  again, transitively.

Nothing else is consulted, so a change the fingerprint does not cover (an edited file outside the
package that a notebook reads, a different GPU) is re-run with ``fer study run --force``. The
caches of features, captions and embeddings are keyed by content themselves, so a run that does
execute again still finds the expensive parts computed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fer_utils.cache import atomic_write

STAMP_KEY = "fer_study"
"""Key of the stamp in an executed notebook's metadata."""
STAMP_VERSION = 1
"""Part of every fingerprint: a new version of the rules re-runs everything once."""
PACKAGE = Path(__file__).resolve().parent
IGNORED_SUFFIXES = {".pyc", ".pyo", ".mo"}   # compiled files follow from the sources


def _sha256_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (hidden and ``__pycache__`` folders excluded), sorted;
    ``root`` itself when it is a file (a FER2013 ``.csv`` data set)."""
    if root.is_file():
        return [root]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        found += [Path(folder) / name for name in names
                  if not name.startswith(".") and Path(name).suffix not in IGNORED_SUFFIXES]
    return sorted(found)


def _relative(path: Path, root: Path) -> str:
    return path.name if path == root else path.relative_to(root).as_posix()


def _content_digest(root: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(_relative(path, root).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the ``fer_utils`` package's files (path and bytes) and of the installed
    distributions' names and versions, and the Python version. Computed once per process."""
    installed = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                        if d.metadata["Name"]})
    return _sha256_json({"package": _content_digest(PACKAGE, _files(PACKAGE)), "installed": installed,
                         "python": platform.python_version()})


def tree_fingerprint(root: str | os.PathLike, memo_file: str | os.PathLike | None = None) -> str:
    """sha256 over every file under ``root`` (relative path and bytes; hidden files excluded), or
    over the file ``root`` (its name and bytes).

    With ``memo_file`` (a small JSON file in the cache), the content digest is remembered against a
    digest of the files' paths, sizes and modification times: an untouched data set is then not
    read again (RAF-DB's 15k faces read in about a second, AffectNet's 290k images would not).
    """
    root = Path(root).resolve()
    files = _files(root)
    stats = [(_relative(p, root), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]]
    stat_digest = _sha256_json(stats)
    memo: dict = {}
    if memo_file is not None:
        try:
            memo = json.loads(Path(memo_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        entry = memo.get(str(root))
        if isinstance(entry, dict) and entry.get("stat") == stat_digest and isinstance(entry.get("content"), str):
            return entry["content"]
    content = _content_digest(root, files)
    if memo_file is not None:
        memo[str(root)] = {"stat": stat_digest, "content": content}
        Path(memo_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(memo_file), json.dumps(memo, indent=1))
    return content


def read_stamp(notebook: str | os.PathLike) -> dict | None:
    """The stamp of an executed notebook, or None (no file, not JSON, never stamped)."""
    try:
        nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stamp = nb.get("metadata", {}).get(STAMP_KEY) if isinstance(nb, dict) else None
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("fingerprint"), str) else None


def new_stamp(fingerprint: str, seconds: float, speed: Mapping | None = None) -> dict:
    """The stamp of a run that just finished in ``seconds``; ``speed``: the host's speed measured
    before it (:mod:`fer_utils.study.speed`), kept so that a skipped run keeps its factor."""
    stamp = {"version": STAMP_VERSION, "fingerprint": fingerprint, "seconds": round(float(seconds), 2),
             "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
    if speed is not None:
        stamp["speed"] = dict(speed)
    return stamp


def upstream_stamps(out_dir: str | os.PathLike, needs: Iterable[str]) -> list:
    """``[notebook/run, fingerprint, finished]`` of every executed run of the ``needs`` notebooks
    found in ``out_dir`` (``[notebook, None, None]`` for a notebook with none)."""
    found = []
    for stem in needs:
        notebooks = sorted((Path(out_dir) / stem).glob("*.ipynb"))
        if not notebooks:
            found.append([stem, None, None])
        for path in notebooks:
            stamp = read_stamp(path) or {}
            found.append([f"{stem}/{path.stem}", stamp.get("fingerprint"), stamp.get("finished")])
    return found


def run_fingerprint(source: str | os.PathLike, params: Mapping[str, Any], data: str | None,
                    upstream: list) -> str:
    """The fingerprint of one run (see the module docstring)."""
    return _sha256_json({"version": STAMP_VERSION, "notebook": hashlib.sha256(Path(source).read_bytes()).hexdigest(),
                         "params": dict(params), "code": code_fingerprint(), "data": data, "upstream": upstream})


def is_current(output: str | os.PathLike, fingerprint: str, run_dir: str | os.PathLike | None) -> dict | None:
    """The stamp of ``output`` when it records ``fingerprint`` and the run record ``run_dir`` (if
    the run has one) is still there; else None (the run must execute)."""
    stamp = read_stamp(output)
    if stamp is None or stamp.get("fingerprint") != fingerprint:
        return None
    if run_dir is not None and not all((Path(run_dir) / name).is_file() for name in ("params.json", "metrics.json")):
        return None
    return stamp

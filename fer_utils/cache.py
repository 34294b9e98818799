"""The one content-addressed cache of the package, and its one atomic file write. Torch-free.

Everything expensive (CNN features, captions, text embeddings, trained heads) is cached here,
one entry per item (per image, say), under a key made from *named parts*: everything that
determines the entry, plus a namespace and a format version::

    cache = Cache(paths.cache, "features", version=2)
    key = cache.key(image=image_sha256, weights=weights_sha256, layer="forward_features")
    row = cache.get_array(key)            # None: absent, unreadable or corrupt (a miss)
    if row is None:
        cache.put_array(key, compute())

An entry lives at ``root/namespace/<key[:2]>/<key>.<ext>`` (``.npy`` arrays, ``.json`` JSON
and tables). Because entries are per item and named by their content, work split into shards
or run on several machines writes entries that simply add up (copy the folders together), and
a larger data set reuses the entries it shares with a smaller one. Writes are atomic
(:func:`atomic_write`): a reader sees the old entry, the new one, or none, never half a file;
two writers of one key write the same content, and the last one wins. ``root=None`` disables a
cache: every get misses, every put does nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_utils.errors import DataError

Writer = Callable[[Path], object]
"""Writes a whole file at the path it is given (a temporary path next to the target)."""

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """:func:`atomic_write` ``text`` to ``path`` unless the file already holds exactly that; True
    when written. An untouched file keeps its modification time, so that an incremental build
    (Sphinx) does not rebuild a page whose source did not change."""
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text)
    return True


def atomic_write(path: str | os.PathLike, data: bytes | str | Writer) -> Path:
    """Write ``data`` to ``path`` so that no reader ever sees a partial file; returns the path.

    ``data`` is ``bytes``, a ``str`` (written as UTF-8) or a callable ``writer(tmp_path)`` that
    writes the whole file at ``tmp_path``. The content goes to a temporary file in the same
    folder (named per process and thread, so concurrent writers never share one), which then
    replaces ``path`` in one step (:func:`os.replace`). If writing fails, the exception
    propagates, an existing ``path`` is left untouched and the temporary file is removed.
    Missing parent folders are created. The replacement is atomic for readers and survives the
    writing process crashing; it is not flushed to disk (no fsync), so it is not promised to
    survive a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isinstance(data, (bytes, bytearray, memoryview)):
            with open(tmp, "xb") as handle:
                handle.write(data)
        elif callable(data):
            data(tmp)
            if not tmp.is_file():
                raise OSError(f"{path}: the writer did not write its temporary file {tmp.name}")
        else:
            raise TypeError(f"atomic_write needs bytes, str or a writer(tmp_path) callable, got {type(data).__name__}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_part(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is plain JSON data (str, int, float, bool, None, lists, dicts)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_part(f"{name}[{i}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cache key part {name}: dict keys must be str, got {type(key).__name__} {key!r}")
            _check_part(f"{name}[{key!r}]", item)
        return
    raise TypeError(f"cache key part {name} has type {type(value).__name__}; a part must be str, int, float, "
                    "bool, None, or a list/dict of those (convert it, e.g. Preprocessing.to_dict())")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks; a missing/unreadable file raises DataError."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read file for hashing ({exc.strerror or exc})") from None


def cache_key(namespace: str, version: int | str, **parts: Any) -> str:
    """Hex SHA-256 over the canonical JSON (sorted keys) of ``namespace``, ``version`` and ``parts``.

    A part is str, int, float, bool, None, or a list (tuples count as lists) or str-keyed dict of
    those; anything else raises TypeError naming the part. Equal inputs give equal keys in any
    process and on any machine; a change of any part, of the namespace or of the version gives
    another key (``1``, ``1.0`` and ``True`` are three different values).
    """
    _check_part("namespace", namespace)
    _check_part("version", version)
    for name, value in parts.items():
        _check_part(name, value)
    payload = {"namespace": namespace, "version": version, "parts": parts}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- entry formats: file extension, write (value -> writer or bytes), read (path -> value) -------

def _write_array(array: np.ndarray) -> Writer:
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"cannot cache an array of dtype {array.dtype} (object arrays need pickle)")

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as handle:
            np.save(handle, array, allow_pickle=False)
    return write


def _read_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _write_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


def _write_table(frame: pd.DataFrame) -> bytes:
    """A DataFrame as JSON: its columns, their dtypes and the values column by column.

    Python's JSON writes floats exactly (shortest repr) and NaN as ``NaN``, so numbers, booleans,
    strings and missing values round-trip with their dtypes; column names are stored as strings
    and the frame's index is not stored (keep what matters in columns). Other values (timestamps, arrays) raise TypeError.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"a table entry is a pandas DataFrame, got {type(frame).__name__}")
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"a table entry needs unique column names, got {names}")
    table = {"columns": names, "dtypes": [str(t) for t in frame.dtypes],
             "data": [frame[c].tolist() for c in frame.columns]}
    return json.dumps(table, ensure_ascii=False).encode("utf-8")


def _read_table(path: Path) -> pd.DataFrame:
    table = _read_json(path)
    columns, dtypes, data = table["columns"], table["dtypes"], table["data"]
    if not len(columns) == len(dtypes) == len(data):
        raise ValueError(f"{path}: columns, dtypes and data differ in length")
    return pd.DataFrame({c: pd.Series(v, dtype=t) for c, t, v in zip(columns, dtypes, data)}, columns=columns)


_FORMATS: dict[str, tuple[str, Callable[[Any], bytes | Writer], Callable[[Path], Any]]] = {
    "array": ("npy", _write_array, _read_array),
    "json": ("json", _write_json, _read_json),
    "table": ("table.json", _write_table, _read_table),
}
"""kind -> (file extension, what to hand atomic_write for a value, reader of a file)."""


def still_to_compute(keys: Sequence[str], found: Sequence[Any]) -> dict[str, int]:
    """The keys whose ``found`` entry is None, each with the position of its first row, in order:
    what a cached computation has left to do (a key that appears twice is computed once)."""
    todo: dict[str, int] = {}
    for position, (key, entry) in enumerate(zip(keys, found)):
        if entry is None:
            todo.setdefault(key, position)
    return todo


class Cache:
    """Content-addressed entries under ``root/namespace/``; see the module docstring.

    ``version`` is the format version of this namespace's entries: bump it when the code that
    makes them changes meaning, and every old entry misses (its key differs). ``root=None``
    disables the cache. Gets never raise: an absent, unreadable or corrupt entry is ``None``.
    Puts are atomic and raise what writing raises (a full disk, say) and TypeError for a value
    the format cannot store.
    """

    def __init__(self, root: str | os.PathLike | None, namespace: str, version: int | str):
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"cache namespace must be a folder name of letters, digits, '_', '.', '-'; "
                             f"got {namespace!r}")
        self.root = None if root is None else Path(root)
        self.namespace = namespace
        self.version = version

    def __repr__(self) -> str:
        return f"Cache({self.root!r}, {self.namespace!r}, version={self.version!r})"

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, **parts: Any) -> str:
        """:func:`cache_key` of this cache's namespace and version and ``parts``."""
        return cache_key(self.namespace, self.version, **parts)

    def path(self, key: str, kind: str = "array") -> Path | None:
        """Where the entry ``key`` of ``kind`` (``array``, ``json``, ``table``) lives; None if disabled."""
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a cache key (64 hex digits): {key!r}")
        if kind not in _FORMATS:
            raise ValueError(f"unknown cache entry kind {kind!r}; expected one of {', '.join(_FORMATS)}")
        if self.root is None:
            return None
        return self.root / self.namespace / key[:2] / f"{key}.{_FORMATS[kind][0]}"

    def get(self, key: str, kind: str = "array") -> Any | None:
        """The entry, or None when the cache is disabled or the entry absent, unreadable or corrupt."""
        path = self.path(key, kind)
        if path is None:
            return None
        try:
            return _FORMATS[kind][2](path)
        except Exception:  # absent or corrupt: bad bytes raise OSError, ValueError, EOFError,
            return None    # KeyError, even numpy's header tokenizer errors: all are misses

    def put(self, key: str, value: Any, kind: str = "array") -> Path | None:
        """Store ``value`` atomically as the entry ``key`` of ``kind``; returns its path (None if disabled)."""
        path = self.path(key, kind)
        if path is None:
            return None
        return atomic_write(path, _FORMATS[kind][1](value))

    def get_many(self, keys: Sequence[str], kind: str = "array") -> list[Any | None]:
        """:meth:`get` of each key, in order (None for each miss)."""
        return [self.get(key, kind) for key in keys]

    def put_many(self, keys: Sequence[str], values: Iterable[Any], kind: str = "array") -> None:
        """:meth:`put` of each ``(key, value)`` pair; ``keys`` and ``values`` must be as long."""
        values = list(values)
        if len(values) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(values)} values to cache")
        for key, value in zip(keys, values):
            self.put(key, value, kind)

    # named forms of the kinds, for readable call sites

    def get_array(self, key: str) -> np.ndarray | None:
        return self.get(key, "array")

    def put_array(self, key: str, array: np.ndarray) -> Path | None:
        return self.put(key, array, "array")

    def get_arrays(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """One array (or None) per key: e.g. the cached rows of a feature matrix, one per image."""
        return self.get_many(keys, "array")

    def put_arrays(self, keys: Sequence[str], rows: Iterable[np.ndarray]) -> None:
        """One entry per ``(key, row)``: e.g. each row of a feature matrix under its image's key."""
        self.put_many(keys, rows, "array")

    def lookup_arrays(self, keys: Sequence[str], usable: Callable[[np.ndarray], bool] = lambda row: True
                      ) -> tuple[list[np.ndarray | None], dict[str, int]]:
        """``(rows, todo)`` for ``keys``: each key's cached array when present and ``usable`` (else
        None), and the keys still to compute, each with the position of its first row (a key that
        appears twice is computed once). The one "what is cached, what is left" of the package."""
        rows = [row if row is not None and usable(row) else None for row in self.get_arrays(keys)]
        return rows, still_to_compute(keys, rows)

    def get_json(self, key: str) -> Any | None:
        return self.get(key, "json")

    def put_json(self, key: str, obj: Any) -> Path | None:
        return self.put(key, obj, "json")

    def get_table(self, key: str) -> pd.DataFrame | None:
        return self.get(key, "table")

    def put_table(self, key: str, frame: pd.DataFrame) -> Path | None:
        return self.put(key, frame, "table")


__all__ = ["Cache", "atomic_write", "cache_key"]

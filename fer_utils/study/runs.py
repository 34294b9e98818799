"""Run records: one folder per run with params, metrics, predictions, history and provenance.

Book pages read run records; they never re-train. ``collect_runs`` turns a tree of records into a
table (one row per run, flat ``param.*`` and metric columns).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_utils.cache import atomic_write
from fer_utils.errors import DataError

RECORD_FILES = ("params.json", "metrics.json", "predictions.csv", "history.csv", "provenance.json")
REQUIRED_FILES = ("params.json", "metrics.json", "provenance.json")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically (:func:`~fer_utils.cache.atomic_write`).

    NumPy values, tuples and paths are converted; NaN and infinities become ``null``.
    """
    return atomic_write(path, json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def save_run(run_dir: str | Path, params: dict, metrics: dict, provenance: dict,
             predictions: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> Path:
    """Write a run record atomically file by file (:func:`~fer_utils.cache.atomic_write`); returns the folder.

    A failing write leaves that file as it was (a previous record's, or absent).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "params.json", params)
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "provenance.json", provenance)
    for name, frame in (("predictions.csv", predictions), ("history.csv", history)):
        if frame is not None:
            atomic_write(run_dir / name, frame.to_csv(index=False))
    return run_dir


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Read a record; missing required files or bad JSON raise DataError naming the file."""
    run_dir = Path(run_dir)
    out: dict[str, Any] = {"run_dir": run_dir}
    for name in RECORD_FILES:
        path = run_dir / name
        key = name.split(".")[0]
        if not path.exists():
            if name in REQUIRED_FILES:
                raise DataError(f"{path}: run record file missing")
            out[key] = None
            continue
        try:
            out[key] = json.loads(path.read_text(encoding="utf-8")) if name.endswith(".json") \
                else pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot be read ({exc})") from None
    return out


def _flatten(prefix: str, obj: Any, into: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, into)
    elif not isinstance(obj, list):
        into[prefix] = obj


def collect_runs(root: str | Path, notebook: str | None = None) -> pd.DataFrame:
    """One row per run record under ``root`` (recursively): run name, notebook, params, scalars.

    Scalar metrics become columns as they are (nested dicts flattened with dots, lists such as
    confusion matrices left out); parameters are prefixed with ``param.``.
    """
    root = Path(root)
    rows = []
    for params_file in sorted(root.rglob("params.json")):
        record = load_run(params_file.parent)
        params = record["params"]
        if notebook is not None and params.get("notebook") != notebook:
            continue
        row = {"run": params_file.parent.name, "run_dir": str(params_file.parent),
               "notebook": params.get("notebook")}
        row.update({f"param.{k}": v for k, v in params.items()
                    if k != "notebook" and not isinstance(v, (list, dict))})
        _flatten("", record["metrics"], row)
        rows.append(row)
    return pd.DataFrame(rows)

"""The study held to its own promises: time shares, every planned page, no collapsed model.

``fer study run`` writes a timing record (:data:`TIMES_FILE` in the runs folder: the seconds of
the data step and of every notebook run) and prints each notebook's time against its share of the
manifest's ``checks`` budget (:func:`budget_lines`); ``fer book build`` adds the book's seconds.
``fer study check`` (:func:`check_study`, run by ``.ci/run`` after ``make study``) then checks
that every planned run left an executed notebook, a run record and a page of the built book, that
no trained model collapsed (one class predicted, or test macro F1 less than
``min_gain_over_majority`` above the majority-class baseline's), and that each step kept within
its share. Torch-free: it reads JSON and CSV files only.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .cache import atomic_write
from .errors import DataError

TIMES_FILE = "study_times.json"
"""The timing record of the last ``fer study run``, in the runs folder."""


def seconds_per_step(data_seconds: float | None, notebook_seconds: Iterable[tuple[str, float]],
                     book_seconds: float | None = None) -> dict[str, float]:
    """Seconds per budget step: ``data``, each notebook (its runs' ``(notebook, seconds)`` added
    up), ``book``."""
    out: dict[str, float] = {}
    if data_seconds is not None:
        out["data"] = float(data_seconds)
    for notebook, seconds in notebook_seconds:
        out[notebook] = out.get(notebook, 0.0) + float(seconds)
    if book_seconds is not None:
        out["book"] = float(book_seconds)
    return out


def write_times(runs_root: str | Path, profile: str, data_seconds: float | None, runs: Iterable[Any]) -> Path:
    """Write the timing record of a study run (replacing the last one) and return its path.

    ``runs`` are :class:`fer_utils.study.RunOutcome`: each run's ``seconds`` in the record are
    those of the execution that made its notebook (a skipped run keeps its cold time, so the budget
    check stays a check of the cold study); ``executed`` and ``now_seconds`` say what this
    invocation did."""
    runs = list(runs)
    record = {"profile": profile, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "data_seconds": data_seconds,
              "runs": [{"notebook": o.run.notebook, "run": o.run.name, "seconds": round(o.run_seconds, 2),
                        "executed": o.executed, "now_seconds": round(o.seconds, 2)} for o in runs]}
    path = Path(runs_root) / TIMES_FILE
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def read_times(runs_root: str | Path) -> dict:
    path = Path(runs_root) / TIMES_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no timing record; run `fer study run` first") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def previous_data_seconds(runs_root: str | Path, profile: str) -> float | None:
    """The data step's seconds in the last timing record of ``profile`` (None: no such record)."""
    try:
        times = read_times(runs_root)
    except DataError:
        return None
    return times.get("data_seconds") if times.get("profile") == profile else None


def add_book_seconds(runs_root: str | Path, seconds: float) -> Path | None:
    """Add the book build's seconds to the timing record, if a study run left one."""
    path = Path(runs_root) / TIMES_FILE
    if not path.exists():
        return None
    record = read_times(runs_root)
    record["book_seconds"] = round(seconds, 2)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def step_seconds(times: Mapping) -> dict[str, float]:
    """Seconds per step of a timing record (:func:`seconds_per_step`)."""
    return seconds_per_step(times.get("data_seconds"), [(r["notebook"], r["seconds"]) for r in times.get("runs", [])],
                            times.get("book_seconds"))


def budget_lines(checks: Mapping | None, profile: str, seconds: Mapping[str, float]) -> list[str]:
    """One line per step: its seconds and, in the budget's profile, its share (``OVER`` when past it)."""
    shares = (checks or {}).get("shares") or {} if (checks or {}).get("profile") == profile else {}
    lines = []
    for step, spent in seconds.items():
        if step in shares:
            limit = shares[step] * 60
            flag = "ok" if spent <= limit else "OVER"
            lines.append(f"  {step:<24} {spent:7.1f} s of its {limit:5.0f} s share ({spent / limit:4.0%}) {flag}")
        else:
            lines.append(f"  {step:<24} {spent:7.1f} s")
    if shares:
        total = sum(seconds.values())
        lines.append(f"  {'total':<24} {total:7.1f} s of {checks['minutes'] * 60:5.0f} s")
    return lines


def over_budget(checks: Mapping, seconds: Mapping[str, float]) -> list[str]:
    """Problems: each step past its share, and the total past ``minutes``."""
    problems = [f"{step} took {seconds[step]:.0f} s, over its share of {share:g} min ({share * 60:.0f} s)"
                for step, share in (checks.get("shares") or {}).items()
                if step in seconds and seconds[step] > share * 60]
    total = sum(seconds.values())
    if total > checks["minutes"] * 60:
        problems.append(f"the study took {total:.0f} s, over its budget of {checks['minutes']:g} min")
    return problems


def collapsed(record: Mapping, min_gain: float) -> str | None:
    """Why a trained run's model counts as collapsed, or None: it predicts one class for every
    test image, or its test macro F1 is less than ``min_gain`` above the majority-class baseline's.

    A probe on captions that carry no meaning by construction (the tiny BLIP-2's: the record's
    ``metrics.captioner.meaningful`` is false) is exempt: scoring at the floor is its expected
    result, which its page says."""
    from .compare import always_predicting  # pandas: only when checking run records

    predictions = record.get("predictions")
    if predictions is None:
        return None
    captioner = record["metrics"].get("captioner")
    if isinstance(captioner, Mapping) and captioner.get("meaningful") is False:
        return None
    name = Path(record["run_dir"]).name
    classes = predictions["predicted"].nunique()
    if classes <= 1:
        return f"{name} predicts one class for all {len(predictions)} test images"
    _, base = always_predicting(predictions["true"])
    gain = record["metrics"]["macro_f1"] - base["macro_f1"]
    if gain < min_gain:
        return (f"{name}: test macro F1 {record['metrics']['macro_f1']:.3f} is only {gain:+.3f} above the "
                f"majority-class baseline's {base['macro_f1']:.3f} (at least {min_gain:g} required)")
    return None


def check_study(planned: list, manifest: Mapping, profile: str, runs_root: str | Path,
                html_root: str | Path, book_out: str | Path) -> list[str]:
    """Problems of a finished study (empty: all invariants hold) for the ``planned`` runs of
    ``profile``: a missing executed notebook, run record or book page; a collapsed model
    (:func:`collapsed`, in the ``checks`` profile); a step over its time share."""
    from .runs import load_run

    problems = []
    checks = manifest.get("checks") or {}
    in_budget_profile = checks.get("profile") == profile
    html_root, book_out = Path(html_root), Path(book_out)
    if not (html_root / "index.html").exists():
        problems.append(f"{html_root / 'index.html'}: the book was not built (`fer book build`)")
    for run in planned:
        if not run.output.exists():
            problems.append(f"{run.notebook} / {run.name}: no executed notebook {run.output}")
            continue
        try:
            page = run.output.relative_to(book_out.parent.parent).with_suffix(".html")
        except ValueError:
            page = None
        if page is not None and (html_root / "index.html").exists() and not (html_root / page).exists():
            problems.append(f"{run.notebook} / {run.name}: no page {html_root / page} in the built book")
        run_dir = run.params.get("run_dir")
        if run_dir is None:
            continue
        try:
            record = load_run(run_dir)
        except DataError as exc:
            problems.append(f"{run.notebook} / {run.name}: {exc}")
            continue
        if in_budget_profile:
            why = collapsed(record, float(checks.get("min_gain_over_majority", 0)))
            if why:
                problems.append(f"{run.notebook}: {why}")
    if in_budget_profile:
        try:
            times = read_times(runs_root)
        except DataError as exc:
            return [*problems, str(exc)]
        if times.get("profile") != profile:
            problems.append(f"the timing record {Path(runs_root) / TIMES_FILE} is of profile "
                            f"{times.get('profile')!r}, not {profile!r}")
        else:
            seconds = step_seconds(times)
            if "book" not in seconds:
                problems.append("the timing record has no book build time (`fer book build` after the study)")
            problems += over_budget(checks, seconds)
    return problems

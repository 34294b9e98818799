"""The study held to its own promises: time shares, every planned page, no collapsed model.

``fer study run`` writes a timing record (:data:`TIMES_FILE` in the runs folder: the seconds of
the data step and of every notebook run, each with the speed factor measured just before it,
:mod:`fer_utils.study.speed`) and prints each step's time, factor and limit (:func:`budget_lines`);
``fer book build`` adds the book's seconds and factor. ``fer study check`` (:func:`check_study`,
run by ``.ci/run`` after ``make study``) then checks that every planned run left an executed
notebook, a run record and a page of the built book, that no trained model collapsed (one class
predicted, or test macro F1 less than ``min_gain_over_majority`` above the majority-class
baseline's), and that each step kept within its limit: its share of the manifest's ``checks``
budget (in reference-machine minutes) x the speed factor of the host at the time x the stated
``tolerance``, the whole study within ``minutes`` scaled the same way. A slower host gets
proportionally more time; a step that got slower by itself does not. Torch-free: it reads JSON
and CSV files only.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fer_utils.cache import atomic_write
from fer_utils.errors import DataError
from fer_utils.study.speed import WORKLOAD, check_factor

TIMES_FILE = "study_times.json"
"""The timing record of the last ``fer study run``, in the runs folder."""


@dataclasses.dataclass(frozen=True)
class StepTime:
    """The time of one budget step: its seconds here, and the same work in reference-machine
    seconds (each run's seconds divided by the speed factor measured before it,
    :mod:`fer_utils.study.speed`)."""

    seconds: float
    at_reference: float
    unmeasured: int = 0      # runs of the step with no recorded factor (counted at factor 1)

    @property
    def factor(self) -> float:
        """The step's speed factor: its runs' factors weighted by their seconds (harmonically)."""
        return self.seconds / self.at_reference if self.at_reference > 0 else 1.0

    def __add__(self, other: StepTime) -> StepTime:
        return StepTime(self.seconds + other.seconds, self.at_reference + other.at_reference,
                        self.unmeasured + other.unmeasured)


def _timed(seconds: float, factor, where: str) -> StepTime:
    if factor is None:
        return StepTime(float(seconds), float(seconds), 1)
    return StepTime(float(seconds), float(seconds) / check_factor(factor, where))


def seconds_per_step(data: tuple[float, float | None] | None,
                     notebook_runs: Iterable[tuple[str, float, float | None]],
                     book: tuple[float, float | None] | None = None) -> dict[str, StepTime]:
    """:class:`StepTime` per budget step: ``data`` and ``book`` as ``(seconds, factor)`` (None: no
    such step), each notebook from its runs' ``(notebook, seconds, factor)`` added up. A factor of
    None (not measured) counts as 1."""
    out: dict[str, StepTime] = {}
    if data is not None and data[0] is not None:
        out["data"] = _timed(data[0], data[1], "data step")
    for notebook, seconds, factor in notebook_runs:
        step = _timed(seconds, factor, notebook)
        out[notebook] = out[notebook] + step if notebook in out else step
    if book is not None and book[0] is not None:
        out["book"] = _timed(book[0], book[1], "book step")
    return out


def write_times(runs_root: str | Path, profile: str, data: tuple[float, float | None] | None,
                runs: Iterable[Any]) -> Path:
    """Write the timing record of a study run (replacing the last one) and return its path.

    ``data`` is the data step's ``(seconds, factor)`` (None: no data step). ``runs`` are
    :class:`fer_utils.study.runner.RunOutcome`: each run's ``seconds`` and ``factor`` in the record are
    those of the execution that made its notebook (a skipped run keeps its cold time and the speed
    factor measured before it, so the budget check stays a check of the cold study); ``executed``
    and ``now_seconds`` say what this invocation did. The last book build's time is kept when this
    invocation executed nothing (the book built from those notebooks is still current)."""
    runs = list(runs)
    path = Path(runs_root) / TIMES_FILE
    record = {"profile": profile, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workload": WORKLOAD,
              "data_seconds": None if data is None else data[0],
              "data_factor": None if data is None else data[1],
              "runs": [{"notebook": o.run.notebook, "run": o.run.name, "seconds": round(o.run_seconds, 2),
                        "factor": o.factor, "executed": o.executed, "now_seconds": round(o.seconds, 2)}
                       for o in runs]}
    try:
        last = read_times(runs_root)
    except DataError:
        last = {}
    if (not any(o.executed for o in runs) and last.get("profile") == profile and "book_seconds" in last
            and {(r["notebook"], r["run"]) for r in last.get("runs", [])}
            == {(o.run.notebook, o.run.name) for o in runs}):
        record.update({k: last[k] for k in ("book_seconds", "book_factor", "book_built") if k in last})
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def read_times(runs_root: str | Path) -> dict:
    path = Path(runs_root) / TIMES_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no timing record; run `fer study run` first") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def previous_data_step(runs_root: str | Path, profile: str) -> tuple[float, float | None] | None:
    """The data step's ``(seconds, factor)`` in the last timing record of ``profile`` (None: no
    such record or step)."""
    try:
        times = read_times(runs_root)
    except DataError:
        return None
    if times.get("profile") != profile or times.get("data_seconds") is None:
        return None
    return times["data_seconds"], times.get("data_factor")


def timing_profile(runs_root: str | Path) -> str | None:
    """The profile of the last timing record (None: there is none)."""
    try:
        return read_times(runs_root).get("profile")
    except DataError:
        return None


def add_book_seconds(runs_root: str | Path, seconds: float, factor: float | None = None) -> Path | None:
    """Add the book build's seconds (and the speed factor measured before it) to the timing
    record, if a study run left one."""
    path = Path(runs_root) / TIMES_FILE
    if not path.exists():
        return None
    record = read_times(runs_root)
    record.update(book_seconds=round(seconds, 2), book_factor=factor,
                  book_built=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def step_seconds(times: Mapping) -> dict[str, StepTime]:
    """:class:`StepTime` per step of a timing record (:func:`seconds_per_step`)."""
    data = (times["data_seconds"], times.get("data_factor")) if times.get("data_seconds") is not None else None
    book = (times["book_seconds"], times.get("book_factor")) if times.get("book_seconds") is not None else None
    try:
        return seconds_per_step(data, [(r["notebook"], r["seconds"], r.get("factor")) for r in times.get("runs", [])],
                                book)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the timing record {TIMES_FILE} is damaged ({exc}); run `fer study run` again") from None


def tolerance(checks: Mapping | None) -> float:
    """The budget's tolerance on top of the scaled shares (the manifest's ``checks.tolerance``; 1
    when absent)."""
    return float((checks or {}).get("tolerance", 1.0))


def step_limit(checks: Mapping, step: str, time_: StepTime) -> float | None:
    """The step's limit in seconds here: its share (reference-machine minutes) x its speed factor x
    the tolerance; None when the step has no share."""
    share = (checks.get("shares") or {}).get(step)
    return None if share is None else share * 60 * time_.factor * tolerance(checks)


def budget_lines(checks: Mapping | None, profile: str, steps: Mapping[str, StepTime],
                 total: bool = True) -> list[str]:
    """One line per step: its seconds and, in the budget's profile, its speed factor and limit
    (share x factor x tolerance; ``OVER`` when past it); then, with ``total`` (not for a part of
    the study), the whole study against the scaled budget."""
    checks = checks or {}
    budgeted = checks.get("profile") == profile and bool(checks.get("shares"))
    lines = []
    for step, spent in steps.items():
        limit = step_limit(checks, step, spent) if budgeted else None
        unmeasured = " (no factor recorded: 1 assumed)" if spent.unmeasured else ""
        if limit is not None:
            flag = "ok" if spent.seconds <= limit else "OVER"
            lines.append(f"  {step:<20} {spent.seconds:7.1f} s  factor {spent.factor:4.2f}  limit {limit:6.0f} s "
                         f"({checks['shares'][step]:g} min x {spent.factor:.2f} x {tolerance(checks):g}) "
                         f"{spent.seconds / limit:4.0%} {flag}{unmeasured}")
        else:
            lines.append(f"  {step:<20} {spent.seconds:7.1f} s" + (f"  factor {spent.factor:4.2f}"
                                                                 if budgeted else ""))
    if budgeted and steps and total:
        whole = sum(steps.values(), StepTime(0.0, 0.0))
        limit = checks["minutes"] * 60 * whole.factor * tolerance(checks)
        lines.append(f"  {'total':<20} {whole.seconds:7.1f} s  factor {whole.factor:4.2f}  limit {limit:6.0f} s "
                     f"({checks['minutes']:g} min x {whole.factor:.2f} x {tolerance(checks):g}) "
                     f"{whole.seconds / limit:4.0%} {'ok' if whole.seconds <= limit else 'OVER'}")
    return lines


def over_budget(checks: Mapping, steps: Mapping[str, StepTime]) -> list[str]:
    """Problems: each step past its limit (share x its speed factor x tolerance), and the total past
    ``minutes`` scaled the same way."""
    tol = tolerance(checks)
    problems = []
    for step, share in (checks.get("shares") or {}).items():
        if step in steps and steps[step].seconds > (limit := step_limit(checks, step, steps[step])):
            problems.append(f"{step} took {steps[step].seconds:.0f} s, over its limit of {limit:.0f} s (its share "
                            f"{share:g} min x speed factor {steps[step].factor:.2f} x tolerance {tol:g})")
    if steps:
        total = sum(steps.values(), StepTime(0.0, 0.0))
        limit = checks["minutes"] * 60 * total.factor * tol
        if total.seconds > limit:
            problems.append(f"the study took {total.seconds:.0f} s, over its limit of {limit:.0f} s (its budget "
                            f"{checks['minutes']:g} min x speed factor {total.factor:.2f} x tolerance {tol:g})")
    return problems


def collapsed(record: Mapping, min_gain: float) -> str | None:
    """Why a trained run's model counts as collapsed, or None: it predicts one class for every
    test image, or its test macro F1 is less than ``min_gain`` above the majority-class baseline's.

    A probe on captions that carry no meaning by construction (the tiny BLIP-2's: the record's
    ``metrics.captioner.meaningful`` is false) is exempt: scoring at the floor is its expected
    result, which its page says."""
    from fer_utils.study.compare import always_predicting  # pandas: only when checking run records

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
    from fer_utils.study.runs import load_run

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
            steps = step_seconds(times)
            if "book" not in steps:
                problems.append(f"the book was not built after the last `fer study run` ({times.get('finished')}): "
                                f"run `fer book build`, then `fer study check` again")
            problems += over_budget(checks, steps)
    return problems

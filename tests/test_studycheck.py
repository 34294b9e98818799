"""`fer study check`'s invariants on real run records and timing records written by the package."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import pytest

from fer_utils.training import repro
from fer_utils.study import check, runner, runs
from fer_utils.errors import DataError
from fer_utils.training.evaluate import evaluate, predictions_frame
from fer_utils.study.runner import PlannedRun

REPO = Path(__file__).resolve().parent.parent
CHECKS = {"profile": "default", "minutes": 2, "shares": {"data": 0.5, "02_cnn_baselines": 1},
          "min_gain_over_majority": 0.2}


def _record(folder: Path, y_true, y_pred) -> dict:
    proba = np.eye(7)[y_pred]
    runs.save_run(folder, {"notebook": "02_cnn_baselines", "model": "resnet18", "run_dir": str(folder)},
                  evaluate(y_true, proba), repro.provenance(data={"name": "d", "fingerprint": "f"}),
                  predictions=predictions_frame([f"i{k}" for k in range(len(y_true))], y_true, proba))
    return runs.load_run(folder)


def test_a_collapsed_or_barely_learning_model_is_named(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 210)
    one_class = _record(tmp_path / "a", y, np.full_like(y, 3))
    assert "a predicts one class for all 210 test images" in check.collapsed(one_class, 0.2)
    weak = _record(tmp_path / "b", y, np.where(rng.random(210) < 0.05, y, 3))
    assert "above the majority-class baseline" in check.collapsed(weak, 0.2)
    good = _record(tmp_path / "c", y, np.where(rng.random(210) < 0.8, y, 3))
    assert check.collapsed(good, 0.2) is None
    assert check.collapsed({"predictions": None}, 0.2) is None   # a page that trains nothing


def _steps(seconds: dict, factor: float | None = None) -> dict:
    return {step: check.StepTime(s, s if factor is None else s / factor, int(factor is None))
            for step, s in seconds.items()}


def test_each_step_is_held_to_its_share_and_the_total_to_the_budget():
    steps = _steps({"data": 20.0, "02_cnn_baselines": 70.0, "book": 40.0}, factor=1.0)
    assert check.over_budget(CHECKS, steps) == [
        "02_cnn_baselines took 70 s, over its limit of 60 s (its share 1 min x speed factor 1.00 x tolerance 1)",
        "the study took 130 s, over its limit of 120 s (its budget 2 min x speed factor 1.00 x tolerance 1)"]
    lines = check.budget_lines(CHECKS, "default", steps)
    assert "02_cnn_baselines" in lines[1] and "OVER" in lines[1] and lines[0].endswith("ok")
    assert "factor 1.00" in lines[1] and "limit     60 s (1 min x 1.00 x 1)" in lines[1]
    assert "limit" not in lines[2]          # no share given to the book here
    assert lines[3].startswith("  total") and lines[3].endswith("OVER")
    assert check.budget_lines(CHECKS, "default", steps, total=False) == lines[:3]   # fer study run --only
    assert all("limit" not in line for line in check.budget_lines(CHECKS, "quick", steps))


def _timing_record(runs_root: Path, seconds: dict, factors: dict) -> dict:
    """A timing record as `fer study run` and `fer book build` write it, with the given seconds and
    speed factor per step (one run per notebook)."""
    planned = [PlannedRun(step, "default", {}, Path("nb.ipynb"), Path(f"{step}.ipynb"))
               for step in seconds if step not in ("data", "book")]
    outcomes = [runner.RunOutcome(run, seconds[run.notebook], True, seconds[run.notebook], factors[run.notebook])
                for run in planned]
    check.write_times(runs_root, "default", (seconds["data"], factors["data"]), outcomes)
    check.add_book_seconds(runs_root, seconds["book"], factors["book"])
    return check.read_times(runs_root)


def test_the_budget_scales_with_the_speed_measured_at_the_time(tmp_path):
    """Records made for the purpose, against the project's own budget: the study using every share
    in full on the reference machine passes; the same study on a host 1.3x slower, with 1.3x factors
    measured, passes too (it would not, were the shares fixed seconds); one step that doubled by
    itself on an unchanged host fails, naming the step."""
    checks = runner.load_manifest(REPO / "notebooks" / "study.yaml")["checks"]
    assert checks["tolerance"] == 1.25
    reference = {step: share * 60 for step, share in checks["shares"].items()}
    ones = dict.fromkeys(reference, 1.0)
    steps = check.step_seconds(_timing_record(tmp_path, reference, ones))
    assert check.over_budget(checks, steps) == []

    slower = {step: s * 1.3 for step, s in reference.items()}
    steps = check.step_seconds(_timing_record(tmp_path, slower, dict.fromkeys(reference, 1.3)))
    assert {step: round(t.factor, 6) for step, t in steps.items()} == dict.fromkeys(reference, 1.3)
    assert check.over_budget(checks, steps) == []
    # without the scaling (factor 1: what fixed shares did), every step is over
    unscaled = check.over_budget(checks, check.step_seconds(_timing_record(tmp_path, slower, ones)))
    assert len(unscaled) == len(reference) + 1 and "the study took" in unscaled[-1]

    doubled = {**reference, "06_fusion": reference["06_fusion"] * 2}
    problems = check.over_budget(checks, check.step_seconds(_timing_record(tmp_path, doubled, ones)))
    share = checks["shares"]["06_fusion"]
    assert problems == [f"06_fusion took {share * 120:.0f} s, over its limit of {share * 75:.0f} s "
                        f"(its share {share:g} min x speed factor 1.00 x tolerance 1.25)"]
    # a step's factor is its runs' factors weighted by their seconds: 100 s at 2.0 and 100 s at 1.0
    # are 50 + 100 reference seconds, factor 200 / 150
    two = check.seconds_per_step(None, [("02", 100.0, 2.0), ("02", 100.0, 1.0)])["02"]
    assert two.at_reference == 150.0 and two.factor == pytest.approx(4 / 3)


def test_a_missing_or_damaged_factor_is_said(tmp_path):
    steps = check.seconds_per_step((5.0, None), [("02_cnn_baselines", 30.0, 1.5)])
    assert steps["data"].unmeasured == 1 and steps["data"].factor == 1.0
    assert "no factor recorded: 1 assumed" in check.budget_lines(CHECKS, "default", steps)[0]
    with pytest.raises(ValueError, match="02_cnn_baselines: a speed factor must be a positive number, got -1"):
        check.seconds_per_step(None, [("02_cnn_baselines", 30.0, -1)])
    record = {"profile": "default", "runs": [{"notebook": "02_cnn_baselines", "run": "a", "seconds": 3,
                                              "factor": "fast"}]}
    with pytest.raises(DataError, match="timing record study_times.json is damaged .* run `fer study run` again"):
        check.step_seconds(record)


def test_check_study_reports_what_is_missing_or_broken(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 100)
    runs_root, book_out, html = tmp_path / "runs", tmp_path / "book" / "experiments", tmp_path / "_build" / "html"
    good, broken = runs_root / "02_cnn_baselines" / "good", runs_root / "02_cnn_baselines" / "broken"
    _record(good, y, np.where(rng.random(100) < 0.9, y, 0))
    _record(broken, y, np.zeros_like(y))
    planned = [PlannedRun("02_cnn_baselines", name, {"run_dir": str(folder)}, Path("nb.ipynb"),
                          book_out / "02_cnn_baselines" / f"{name}.ipynb") for name, folder in
               (("good", good), ("broken", broken), ("never", runs_root / "02_cnn_baselines" / "never"))]
    for run in planned[:2]:
        run.output.parent.mkdir(parents=True, exist_ok=True)
        run.output.write_text("{}")
    manifest = {"checks": CHECKS, "notebooks": {"02_cnn_baselines": {}}}

    problems = check.check_study(planned, manifest, "default", runs_root, html, book_out)
    text = "\n".join(problems)
    assert "the book was not built" in text
    assert "broken predicts one class" in text and "good" not in text.replace("good.", "")
    assert "02_cnn_baselines / never: no executed notebook" in text
    assert "no timing record" in text

    # a run skipped as unchanged (0.1 s now) counts with the seconds of the execution that made it
    outcomes = [runner.RunOutcome(planned[0], 0.1, False, 30.0, 1.0), runner.RunOutcome(planned[1], 45.0, True, 45.0, 1.0)]
    check.write_times(runs_root, "default", (10.0, 1.0), outcomes)
    problems = check.check_study(planned, manifest, "default", runs_root, html, book_out)
    assert any("02_cnn_baselines took 75 s, over its limit of 60 s" in p for p in problems)
    assert any("the book was not built after the last `fer study run`" in p and "run `fer book build`" in p
               for p in problems)
    check.add_book_seconds(runs_root, 5.0, 1.0)
    assert {k: v.seconds for k, v in check.step_seconds(check.read_times(runs_root)).items()} == {
        "data": 10.0, "02_cnn_baselines": 75.0, "book": 5.0}
    # a warm re-run that executed nothing keeps the book's time (the book is still current) ...
    skipped = [runner.RunOutcome(o.run, 0.1, False, o.run_seconds, o.factor) for o in outcomes]
    check.write_times(runs_root, "default", (10.0, 1.0), skipped)
    assert check.read_times(runs_root)["book_seconds"] == 5.0
    # ... one that executed a run asks for a new build
    check.write_times(runs_root, "default", (10.0, 1.0), [skipped[0], outcomes[1]])
    assert "book_seconds" not in check.read_times(runs_root)
    # another profile: presence only, neither shares nor collapse
    problems = check.check_study(planned[:1], manifest, "quick", runs_root, html, book_out)
    assert problems == [f"{html / 'index.html'}: the book was not built (`fer book build`)"]


def test_openmp_waits_are_set_where_the_environment_has_none():
    """fer and the study runner give OpenMP a short busy-wait (fer_utils.study.speed.OPENMP_WAITS)
    unless the user chose one: a value already in the environment is kept."""
    from fer_utils.study import speed

    environ = {}
    assert speed.openmp_waits(environ) == speed.OPENMP_WAITS == environ
    mine = {"GOMP_SPINCOUNT": "300000"}
    assert speed.openmp_waits(mine) == {} and mine == {"GOMP_SPINCOUNT": "300000"}


def test_every_fer_command_sets_the_openmp_waits(monkeypatch):
    """The fer group sets the wait before its command runs (and loads torch)."""
    import os

    from click.testing import CliRunner

    from fer_utils.cli import main
    from fer_utils.study import speed

    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert CliRunner().invoke(main, ["study", "check", "--help"]).exit_code == 0
    assert os.environ["GOMP_SPINCOUNT"] == speed.OPENMP_WAITS["GOMP_SPINCOUNT"]

"""`fer study check`'s invariants on real run records and timing records written by the package."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_utils import repro, runs, study, studycheck
from fer_utils.evaluate import evaluate, predictions_frame
from fer_utils.study import PlannedRun

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
    assert "a predicts one class for all 210 test images" in studycheck.collapsed(one_class, 0.2)
    weak = _record(tmp_path / "b", y, np.where(rng.random(210) < 0.05, y, 3))
    assert "above the majority-class baseline" in studycheck.collapsed(weak, 0.2)
    good = _record(tmp_path / "c", y, np.where(rng.random(210) < 0.8, y, 3))
    assert studycheck.collapsed(good, 0.2) is None
    assert studycheck.collapsed({"predictions": None}, 0.2) is None   # a page that trains nothing


def test_each_step_is_held_to_its_share_and_the_total_to_the_budget():
    seconds = {"data": 20.0, "02_cnn_baselines": 70.0, "book": 40.0}
    assert studycheck.over_budget(CHECKS, seconds) == ["02_cnn_baselines took 70 s, over its share of 1 min (60 s)",
                                                       "the study took 130 s, over its budget of 2 min"]
    lines = studycheck.budget_lines(CHECKS, "default", seconds)
    assert "02_cnn_baselines" in lines[1] and "OVER" in lines[1] and lines[0].endswith("ok")
    assert "of its" not in lines[2]          # no share given to the book here
    assert all("share" not in line for line in studycheck.budget_lines(CHECKS, "quick", seconds))


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

    problems = studycheck.check_study(planned, manifest, "default", runs_root, html, book_out)
    text = "\n".join(problems)
    assert "the book was not built" in text
    assert "broken predicts one class" in text and "good" not in text.replace("good.", "")
    assert "02_cnn_baselines / never: no executed notebook" in text
    assert "no timing record" in text

    # a run skipped as unchanged (0.1 s now) counts with the seconds of the execution that made it
    studycheck.write_times(runs_root, "default", 10.0, [study.RunOutcome(planned[0], 0.1, False, 30.0),
                                                        study.RunOutcome(planned[1], 45.0, True, 45.0)])
    problems = studycheck.check_study(planned, manifest, "default", runs_root, html, book_out)
    assert any("02_cnn_baselines took 75 s, over its share" in p for p in problems)
    assert any("no book build time" in p for p in problems)
    studycheck.add_book_seconds(runs_root, 5.0)
    assert studycheck.step_seconds(studycheck.read_times(runs_root)) == {
        "data": 10.0, "02_cnn_baselines": 75.0, "book": 5.0}
    # another profile: presence only, neither shares nor collapse
    problems = studycheck.check_study(planned[:1], manifest, "quick", runs_root, html, book_out)
    assert problems == [f"{html / 'index.html'}: the book was not built (`fer book build`)"]

"""Comparison tables on real run records written by fer_utils.runs."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fer_utils import compare, repro, runs
from fer_utils.evaluate import evaluate, predictions_frame
from fer_utils.stats import paired_bootstrap


def _record(tmp_path, name, y_true, y_pred, seed=1):
    proba = np.eye(7)[y_pred]
    folder = runs.save_run(tmp_path / name, {"notebook": "02_cnn_baselines", "model": name, "seed": seed},
                           evaluate(y_true, proba), repro.provenance(data={"name": "d", "fingerprint": "f"}),
                           predictions=predictions_frame([f"i{k}" for k in range(len(y_true))], y_true, proba))
    return runs.load_run(folder)


@pytest.fixture
def records(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    good = np.where(rng.random(300) < 0.8, y, rng.integers(0, 7, 300))
    poor = np.where(rng.random(300) < 0.5, y, rng.integers(0, 7, 300))
    return y, good, poor, {"good": _record(tmp_path, "good", y, good), "poor": _record(tmp_path, "poor", y, poor)}


def test_pairwise_tests_report_the_macro_f1_difference_with_a_paired_interval(records):
    y, good, poor, recs = records
    table = compare.pairwise_tests(recs, n_bootstrap=500, seed=3)
    (row,) = table.to_dict(orient="records")
    expected = f1_score(y, good, average="macro") - f1_score(y, poor, average="macro")
    assert row["macro F1 A − B"] == pytest.approx(expected)
    assert row["95% CI low"] < expected < row["95% CI high"] and row["95% CI low"] > 0
    assert row["A right, B wrong"] > row["A wrong, B right"]
    # the notebook's n_bootstrap and seed are what decide the interval
    other = compare.pairwise_tests(recs, n_bootstrap=500, seed=4).iloc[0]
    assert other["95% CI low"] != row["95% CI low"]
    assert "macro F1 A − B" not in compare.pairwise_tests(recs, n_bootstrap=0).columns


def test_paired_bootstrap_of_identical_models_is_zero_and_narrower_than_separate_intervals(records):
    y, good, poor, _ = records
    assert paired_bootstrap(y, good, good, n_boot=200) == (0.0, 0.0, 0.0)
    diff, low, high = paired_bootstrap(y, good, poor, "accuracy", n_boot=400, seed=0)
    assert diff == pytest.approx((good == y).mean() - (poor == y).mean())
    assert low < diff < high


def test_tables_of_one_run(records):
    _, _, _, recs = records
    table = compare.ci_table({"good": recs["good"]})
    assert list(table["model"]) == ["good"]
    per_class = compare.per_class_table(recs["good"]["metrics"])
    assert list(per_class.index) == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert {"precision", "recall", "f1"} <= set(per_class.columns)
    assert compare.data_records(recs) == [{"name": "d", "fingerprint": "f"}]
    assert isinstance(compare.per_class_f1(recs), pd.DataFrame)


def test_pairwise_summary_is_one_readable_row_per_pair(records):
    *_, recs = records
    tests = compare.pairwise_tests(recs, n_bootstrap=200, seed=0)
    (row,) = compare.pairwise_summary(tests).to_dict(orient="records")
    d, lo, hi = tests.iloc[0][["macro F1 A − B", "95% CI low", "95% CI high"]]
    assert row["macro F1 A − B [95% CI]"] == f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    assert row["McNemar p"].endswith("(chi-square)") and (row["A"], row["B"]) == ("good", "poor")
    assert "macro F1 A − B [95% CI]" not in compare.pairwise_summary(compare.pairwise_tests(recs, n_bootstrap=0))


def test_failure_notes_name_collapsed_and_sub_baseline_runs(tmp_path, records):
    y, good, _, recs = records
    majority = np.bincount(y).argmax()
    collapsed = _record(tmp_path, "collapsed", y, np.full_like(y, majority))
    rng = np.random.default_rng(1)
    weak = _record(tmp_path, "weak", y, rng.integers(0, 7, len(y)))       # chance: below the majority share
    notes = compare.failure_notes({"good": recs["good"], "collapsed": collapsed, "weak": weak})
    assert len(notes) == 2
    assert notes[0].startswith("collapsed (run collapsed) predicts") and f"all {len(y)} test images" in notes[0]
    assert notes[1].startswith("weak (run weak) is not above the majority-class baseline")
    assert compare.failure_notes({"good": recs["good"]}) == []
    report = compare.failure_report({"collapsed": collapsed})
    assert report.startswith("**Read these numbers as failures") and "- collapsed (run collapsed)" in report
    assert compare.failure_report({"good": recs["good"]}) == ""

"""Comparison tables on real run records written by fer_utils.study.runs."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fer_utils.study import compare, runs
from fer_utils.training import repro
from fer_utils.errors import ConfigError
from fer_utils.training.evaluate import evaluate, predictions_frame
from fer_utils.labels import EMOTIONS
from fer_utils.training.stats import holm, paired_bootstrap


def _record(tmp_path, name, y_true, y_pred, seed=1, fingerprint="f", **params):
    """A run record as 02_cnn_baselines writes it (``params`` default to model = ``name``)."""
    proba = np.eye(7)[y_pred]
    folder = tmp_path / name
    params = {"notebook": "02_cnn_baselines", "model": name, "seed": seed, "run_dir": str(folder), **params}
    metrics = {**evaluate(y_true, proba), "val_macro_f1": 0.7}
    runs.save_run(folder, params, metrics, repro.provenance(data={"name": "d", "fingerprint": fingerprint}),
                  predictions=predictions_frame([f"i{k}" for k in range(len(y_true))], y_true, proba))
    return runs.load_run(folder)


def _majority_label(y):
    return f"majority class (always {EMOTIONS[np.bincount(y).argmax()]})"


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
    y, *_ = records
    table = compare.ci_table({"good": recs["good"]})
    assert list(table["model"]) == ["good", _majority_label(y)]
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
    assert row["McNemar p, Holm-adjusted"] == f"{tests.iloc[0]['p_value']:.3g}"   # one pair: unchanged
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


def test_summary_shows_validation_and_a_majority_class_row(tmp_path, records):
    y, *_ = records
    table, recs = compare.load_records(tmp_path, "02_cnn_baselines")
    shown = compare.beside_original(compare.summarize(table), recs)
    label = _majority_label(y)
    assert list(shown.index) == ["good", "poor", label]
    baseline = evaluate(y, np.full_like(y, np.bincount(y).argmax()))
    assert shown.loc[label, "accuracy (ours / original)"] == f"{np.mean(y == np.bincount(y).argmax()):.3f}"
    for metric in ("accuracy", "macro_f1", "weighted_f1"):
        assert shown.loc[label, f"{metric} (ours / original)"] == f"{baseline[metric]:.3f}"
    assert (shown.loc[label, "val_macro_f1"], shown.loc[label, "runs"]) == ("", "")
    assert (shown.loc["good", "val_macro_f1"], shown.loc["good", "runs"]) == ("0.700", 1)
    # the baseline is the bar: both models clear it here
    assert (shown["accuracy (ours / original)"].iloc[:2] > shown.loc[label, "accuracy (ours / original)"]).all()


def test_summarize_refuses_to_average_runs_of_another_setting_or_data_set(tmp_path):
    y = np.random.default_rng(0).integers(0, 7, 50)
    for name, seed, size in (("dn-224", 1, 224), ("dn-48", 2, 48)):
        _record(tmp_path / "size", name, y, y, seed=seed, model="densenet121", image_size=size)
    table, _ = compare.load_records(tmp_path / "size", "02_cnn_baselines")
    with pytest.raises(ConfigError, match=r"param.model = 'densenet121' \(runs dn-224, dn-48\) differ in "
                                          r"image_size: dn-224=224, dn-48=48"):
        compare.summarize(table)
    assert len(compare.summarize(table, by=["param.model", "param.image_size"])) == 2
    for name, seed, fingerprint in (("a-s1", 1, "f1"), ("a-s2", 2, "f2")):
        _record(tmp_path / "data", name, y, y, seed=seed, fingerprint=fingerprint, model="a")
    table, _ = compare.load_records(tmp_path / "data", "02_cnn_baselines")
    with pytest.raises(ConfigError, match=r"differ in data.fingerprint: a-s1='f1', a-s2='f2'"):
        compare.summarize(table)


def test_repeats_that_differ_only_in_seed_are_averaged_and_the_page_says_how_many(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    for seed in (1, 2):
        for model, share in (("a", 0.9), ("b", 0.5)):
            _record(tmp_path, f"{model}-s{seed}", y, np.where(rng.random(200) < share, y, 0), seed=seed, model=model)
    _record(tmp_path, "a-s3", y, y, seed=3, model="a", cache_dir="/elsewhere/cache")  # another machine's cache
    table, recs = compare.load_records(tmp_path, "02_cnn_baselines")
    table = table[table["run"] != "a-s3"]
    assert list(compare.summarize(compare.load_records(tmp_path, "02_cnn_baselines")[0])[("runs", "n")]) == [3, 2]
    summary = compare.summarize(table)
    assert list(summary[("runs", "n")]) == [2, 2]
    assert " ± " in compare.mean_pm_std(summary).loc["a", "accuracy"]
    assert compare.runs_note(table) == ("**2 runs (seeds 1, 2) per model**. Numbers are mean ± standard "
                                        "deviation over a model's runs.")
    one = table[table["param.seed"] == 1]
    note = compare.runs_note(one)
    assert note.startswith("**1 run (seed 1) per model**: every number is a single run, not a mean ± standard")
    assert "±" not in compare.mean_pm_std(compare.summarize(one)).to_string()
    mixed = compare.runs_note(table[(table["param.seed"] == 1) | (table["param.model"] == "a")])
    assert mixed.startswith("**Runs per model**: a 2 runs (seeds 1, 2), b 1 run (seed 1). Numbers are mean ± ")
    assert mixed.endswith("where it has several, the single run's value where it has one.")


def test_pairwise_p_values_are_holm_adjusted_within_each_seed(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    recs = {f"{m}-s{seed}": _record(tmp_path, f"{m}-s{seed}", y, np.where(rng.random(300) < share, y, 0),
                                    seed=seed, model=m)
            for seed, models in ((1, (("a", 0.8), ("b", 0.7), ("c", 0.6))), (2, (("a", 0.8), ("b", 0.7))))
            for m, share in models}
    tests = compare.pairwise_tests(recs, n_bootstrap=0)
    assert list(tests["seed"]) == [1, 1, 1, 2]
    first = tests[tests["seed"] == 1]
    assert list(first["p_holm"]) == pytest.approx(holm(first["p_value"]))
    assert (first["p_holm"] >= first["p_value"]).all() and (first["p_holm"] > first["p_value"]).any()
    assert tests.loc[tests["seed"] == 2, "p_holm"].item() == tests.loc[tests["seed"] == 2, "p_value"].item()
    shown = compare.pairwise_summary(tests)
    assert list(shown["McNemar p, Holm-adjusted"]) == [f"{p:.3g}" for p in tests["p_holm"]]


def test_paired_macro_f1_difference_counts_a_class_absent_from_the_test_set(tmp_path):
    """The difference is that of the reported macro F1s (over 7 classes), not over the 6 present."""
    rng = np.random.default_rng(2)
    present = [0, 2, 3, 4, 5, 6]
    y = rng.choice(present, 300)
    a, b = (np.where(rng.random(300) < share, y, rng.choice(present, 300)) for share in (0.9, 0.6))
    recs = {"a": _record(tmp_path, "a", y, a), "b": _record(tmp_path, "b", y, b)}
    row = compare.pairwise_tests(recs, n_bootstrap=300).iloc[0]
    expected = evaluate(y, a)["macro_f1"] - evaluate(y, b)["macro_f1"]
    assert row["macro F1 A − B"] == pytest.approx(expected)
    assert row["95% CI low"] <= expected <= row["95% CI high"]


def test_tables_show_empty_cells_not_nan_and_whole_supports(records):
    *_, recs = records
    table, _ = pd.DataFrame([{"run": r, "param.model": r, "param.seed": 1, "accuracy": 0.5, "macro_f1": 0.4,
                              "weighted_f1": 0.5, "val_macro_f1": 0.4} for r in recs]), None
    shown = compare.beside_original(compare.summarize(table), recs)
    assert not shown.isin(["nan", "NaN"]).any().any() and not shown.isna().any().any()
    assert shown.loc["good", "accuracy (ours / original)"] == "0.500"       # the original has no "good"
    named = compare.beside_original(compare.summarize(table.assign(**{"param.model": ["resnet18", "vgg16"]})), recs)
    assert named.loc["resnet18", "accuracy (ours / original)"] == "0.500 / 0.746"
    assert named.loc["vgg16", "macro_f1 (ours / original)"] == "0.400"        # it reported no macro F1
    assert compare.per_class_table(recs["good"]["metrics"])["support"].dtype.kind == "i"


ORIGINAL = {"subset": 0.5, "val_fraction": 0.1, "augmentation": "hflip_always", "monitor": "val_acc",
            "restore_best": False}


def test_the_original_protocol_is_split_off_and_set_beside_the_reported_numbers(tmp_path):
    rng = np.random.default_rng(1)
    y_full, y_half = rng.integers(0, 7, 200), rng.integers(0, 7, 100)
    recs = {
        "densenet121": _record(tmp_path, "densenet121", y_full, np.where(rng.random(200) < 0.7, y_full, 0)),
        "resnet18": _record(tmp_path, "resnet18", y_full, np.where(rng.random(200) < 0.6, y_full, 0)),
        "densenet121-original": _record(tmp_path, "densenet121-original", y_half,
                                        np.where(rng.random(100) < 0.4, y_half, 0), model="densenet121",
                                        **ORIGINAL),
    }
    assert [compare.protocol_of(r["params"]) for r in recs.values()] == ["corrected", "corrected", "original"]
    assert compare.protocol_of({**ORIGINAL, "restore_best": True}) == "corrected"  # every flaw, or none
    table = runs.collect_runs(tmp_path)
    with pytest.raises(ConfigError, match="cannot average"):   # one model, two protocols: never averaged
        compare.summarize(table)
    protocols = compare.split_protocols(table, recs)
    assert list(protocols) == ["corrected", "original"]
    assert set(protocols["original"][1]) == {"densenet121-original"}
    assert set(protocols["corrected"][0]["run"]) == {"densenet121", "resnet18"}

    repro_table = compare.reproduction_table(protocols)
    rows = repro_table.set_index(["model", "numbers from"])
    reported = rows.loc[("densenet121", "the original study (reported, RAF-DB)")]
    assert reported["accuracy"] == "0.770" and reported["test images"] == 1533
    ours = rows.loc[("densenet121", "ours, the original's protocol")]
    assert ours["macro_f1"] == f"{recs['densenet121-original']['metrics']['macro_f1']:.3f}"
    assert ours["test images"] == 100
    assert rows.loc[("densenet121", "ours, corrected protocol"), "test images"] == 200
    assert "resnet18" not in rows.index.get_level_values(0)     # no original-protocol run of it
    baselines = repro_table[repro_table["numbers from"].str.endswith("test set")]
    assert len(baselines) == 2 and all(baselines["model"].str.startswith("majority class"))

    from fer_utils.study import report
    text = report.reproduction_interpretation(protocols)
    gap = recs["densenet121"]["metrics"]["macro_f1"] - recs["densenet121-original"]["metrics"]["macro_f1"]
    assert f"{abs(gap):.3f} macro F1 for the corrected protocol" in text and "different test sets" in text
    assert "ResNet18 was not trained the original's way in this run of the study" in text

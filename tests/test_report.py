"""Page text (fer_utils.study.report) on real run records written by fer_utils.study.experiment.record, as the
notebooks write them: the synthetic-data banner, the settings a run used and the interpretation."""
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

from fer_utils.study import compare, experiment, report, runs
from fer_utils.study.config import CNNBaselineConfig, DataOverviewConfig
from fer_utils.training.evaluate import predictions_frame
from fer_utils.labels import EMOTIONS
from fer_utils.training.train import TrainConfig

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
REAL = {"name": "RAF-DB", "fingerprint": "r", "synthetic": False}
SYNTHETIC = {"name": "synthetic", "fingerprint": "s", "synthetic": True}


def _run(root, model, y_true, y_pred, val=0.5, data=REAL, metrics=None, **params):
    """The run record of a 02_cnn_baselines run that predicted ``y_pred`` (training facts made up)."""
    cfg = CNNBaselineConfig.from_params({"model": model, "run_dir": str(root / model), **params})
    proba = np.eye(len(EMOTIONS))[y_pred]
    scores = {**experiment.score_test(y_true, proba, n_bootstrap=200), "best_epoch": 2, "epochs_run": 4,
              "stopped_early": True, "val_macro_f1": val, **(metrics or {})}
    ids = [f"i{k}" for k in range(len(y_true))]
    folder = experiment.record(cfg, scores, data, predictions=predictions_frame(ids, y_true, proba),
                               training=experiment.training_config(cfg))
    return runs.load_run(folder)


def _labels(seed=0, n=300, fear=None):
    """Test labels with every class; ``fear`` images of class fear when given."""
    y = np.random.default_rng(seed).integers(0, len(EMOTIONS), n)
    if fear is not None:
        y[y == EMOTIONS.index("fear")] = EMOTIONS.index("happiness")
        y[:fear] = EMOTIONS.index("fear")
    return y


def _noisy(y, right, seed=1):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(y)) < right, y, rng.integers(0, len(EMOTIONS), len(y)))


# --- the synthetic-data banner ---------------------------------------------------------------

def test_banner_is_shown_iff_the_loaded_data_set_is_synthetic(synthetic_rafdb, tmp_path):
    _, data = experiment.load_data(DataOverviewConfig(data_path=str(synthetic_rafdb)))
    banner = report.data_banner(data)
    assert banner.startswith("```{admonition} Synthetic data\n:class: warning\n") and banner.endswith("```\n")
    assert data["fingerprint"] in banner and "nothing about emotion recognition on real faces" in banner
    real = shutil.copytree(synthetic_rafdb, tmp_path / "real", ignore=shutil.ignore_patterns("synthetic.json"))
    _, data = experiment.load_data(DataOverviewConfig(data_path=str(real)))
    assert data["synthetic"] is False and report.data_banner(data) == ""


def test_banner_of_compared_runs_counts_their_synthetic_data_sets(tmp_path):
    y = _labels()
    recs = {"a": _run(tmp_path, "vgg16", y, y, data=SYNTHETIC), "b": _run(tmp_path, "resnet18", y, y)}
    mixed = report.data_banner(compare.data_records(recs))
    assert "**1 of the 2 data sets**" in mixed and "fingerprint `s`" in mixed and "fingerprint `r`" not in mixed
    assert "This page is built from" in report.data_banner([SYNTHETIC])
    assert report.data_banner([REAL, REAL]) == report.data_banner(None) == report.data_banner([None]) == ""


# --- the settings a run used -----------------------------------------------------------------

def test_settings_show_the_run_values_and_where_they_differ_from_the_original():
    cfg = CNNBaselineConfig(image_size=48, epochs=10, patience=3, lr=0.01, model="resnet18")
    text = report.settings_markdown(cfg, experiment.training_config(cfg))
    for line in ("- model: ResNet18", "- image size: 48 px (*original: 224 px*)",
                 "- epochs at most: 10 (*original: 30*)", "- early-stopping patience: 3 epochs (*original: 5 epochs*)",
                 "- learning rate: 0.01 (*original: 0.001*)", "- initial weights: random (*original: ImageNet-pretrained*)",
                 "- batch size: 64", "- normalisation: half (mean 0.5, std 0.5)",
                 "- validation split: 20% of train (*original: 10% of train*)"):
        assert line in text.splitlines()
    assert "- image size: 224" not in text and "- epochs at most: 30" not in text and "- data set: data/synthetic" in text
    assert "in 10 of the 14 it is compared on" in text
    # the resolved training settings win over the parameters they came from
    text = report.settings_markdown(cfg.to_dict(), TrainConfig(batch_size=8, optimizer="sgd", epochs=10, patience=3))
    assert "- batch size: 8 (*original: 64*)" in text and "- optimizer: SGD (momentum 0.9) (*original: Adam*)" in text
    original = CNNBaselineConfig(pretrained=True, subset=0.5, val_fraction=0.1, augmentation="hflip_always",
                                 monitor="val_acc", restore_best=False)
    text = report.settings_markdown(original, experiment.training_config(original))
    assert "the original study's in every setting compared" in text and "*original:" not in text


def test_settings_table_shows_each_compared_run_from_its_record_beside_the_original(tmp_path):
    y = _labels()
    recs = {"small": _run(tmp_path, "vgg16", y, y, image_size=32, epochs=2, metrics={"epochs_run": 2}),
            "big": _run(tmp_path, "densenet121", y, y, image_size=224, pretrained=True, seed=3, lr=0.01)}
    table = report.settings_table(recs)
    assert list(table.columns) == ["small", "big", "original study"]
    rows = ["model", "initial weights", "image size", "epochs at most", "epochs run", "learning rate", "seed"]
    assert table.loc[rows].values.tolist() == [
        ["VGG16", "DenseNet121", ""], ["random", "ImageNet-pretrained", "ImageNet-pretrained"],
        ["32 px", "224 px", "224 px"], ["2", "30", "30"], ["2", "4", ""], ["0.001", "0.01", "0.001"], ["42", "3", ""]]
    assert list(table.index).index("epochs run") == list(table.index).index("epochs at most") + 1


def test_show_displays_markdown_and_nothing_for_empty_text(capsys):
    report.show("")
    assert capsys.readouterr().out == ""      # not "<IPython.core.display.Markdown object>" on the page
    report.show("**x**")
    assert "Markdown" in capsys.readouterr().out


# --- interpretations -------------------------------------------------------------------------

def test_interpretation_reads_its_numbers_from_the_run(tmp_path):
    y = _labels(fear=7)
    rec = _run(tmp_path, "resnet18", y, _noisy(y, 0.6))
    text = report.interpretation({"resnet18": rec})
    m = rec["metrics"]
    low, high = m["ci95"]["macro_f1"]
    assert f"ResNet18 reached macro F1 {m['macro_f1']:.3f} [{low:.3f}, {high:.3f}]" in text
    assert f"on {len(y)} test images" in text and "always predicting happiness" in text
    assert "selected at epoch 2 of the 4 it ran (validation macro F1 0.500)" in text
    assert "The class fear has only 7 test images" in text and "One training run (seed 42)" in text
    assert "failure" not in text.lower()
    # other input, other text: a larger smallest class, another seed, a run cut off by its epoch limit
    y = _labels(n=700, fear=40)
    rec = _run(tmp_path / "other", "resnet18", y, _noisy(y, 0.6), seed=5, epochs=4, metrics={"stopped_early": False})
    text = report.interpretation({"resnet18": rec})
    assert "The smallest class, fear, has 40 test images (one image moves its recall by 0.025)" in text
    assert "(seed 5)" in text and "on 700 test images" in text
    assert "stopped by its epoch limit" in text


def test_interpretation_names_a_collapsed_model(tmp_path):
    y = _labels(fear=3)
    majority = EMOTIONS[np.bincount(y).argmax()]
    rec = _run(tmp_path, "vgg16", y, np.full_like(y, np.bincount(y).argmax()))
    text = report.interpretation({"vgg16": rec})
    assert f"predicts {majority!r} for all {len(y)} test images" in text and "it learned nothing" in text
    assert "The class fear has only 3 test images" in text


def test_interpretation_names_the_classes_a_model_never_gets_right(tmp_path):
    y = _labels(fear=9)
    pred = _noisy(y, 0.7)
    fear, disgust, anger = (EMOTIONS.index(name) for name in ("fear", "disgust", "anger"))
    pred[y == fear] = anger                   # every fear image called anger
    pred[y == disgust] = fear                 # disgust predicted, but never rightly
    text = report.interpretation({"vgg16": _run(tmp_path, "vgg16", y, pred)})
    assert "It recognises none of the test images of fear or disgust (2 of 7 classes at F1 0" in text
    pred[y == disgust] = disgust              # one class missed
    text = report.interpretation({"vgg16": _run(tmp_path / "b", "vgg16", y, pred)})
    assert "none of the test images of fear (1 of 7 classes" in text and "learned that class" in text
    assert "recognises none" not in report.interpretation({"vgg16": _run(tmp_path / "c", "vgg16", y, y)})


@pytest.fixture
def three_models(tmp_path):
    y = _labels(fear=12)
    runs_ = {"densenet121": (_noisy(y, 0.9), 0.6), "resnet18": (_noisy(y, 0.5, seed=2), 0.4),
             "vgg16": (np.full_like(y, np.bincount(y).argmax()), 0.2)}
    for model, (pred, val) in runs_.items():
        _run(tmp_path, model, y, pred, val=val)
    table, recs = compare.load_records(tmp_path, "02_cnn_baselines")
    return compare.summarize(table), compare.pairwise_tests(recs, n_bootstrap=200), recs


def test_comparison_interpretation_reads_validation_tests_failures_and_limits(three_models):
    summary, tests, recs = three_models
    text = report.comparison_interpretation(summary, tests, recs)
    best = summary.loc["densenet121", ("mean", "macro_f1")]
    assert (f"**Best on validation**: DenseNet121 (validation macro F1 0.600; ResNet18 0.400; VGG16 0.200). "
            f"On the test split: macro F1 DenseNet121 {best:.3f}.") in text
    row = tests[(tests["A"] == "densenet121") & (tests["B"] == "resnet18")].iloc[0]
    assert (f"- DenseNet121 vs ResNet18: significant by both tests (McNemar p = {row['p_holm']:.3g} after Holm; "
            f"difference in macro F1 {row['macro F1 A − B']:+.3f}") in text
    assert "vgg16 (run vgg16) predicts" in text                      # compare.failure_notes
    assert "The class fear has only 12 test images" in text and "One training run per model (seed 42)" in text


def test_comparison_interpretation_follows_its_input(three_models, tmp_path):
    summary, tests, recs = three_models
    summary.loc["resnet18", ("mean", "val_macro_f1")] = 0.9
    assert "**Best on validation**: ResNet18 (validation macro F1 0.900" in report.comparison_interpretation(
        summary, tests, recs)
    y = _labels()
    same = {m: _run(tmp_path / "same", m, y, _noisy(y, 0.7)) for m in ("resnet18", "vgg16")}
    table, _ = compare.load_records(tmp_path / "same", "02_cnn_baselines")
    summary = compare.summarize(table)
    text = report.comparison_interpretation(summary, compare.pairwise_tests(same, n_bootstrap=200), same)
    assert "a tie at validation macro F1 0.500" in text
    assert "- ResNet18 vs VGG16: not significant (McNemar p = 1 after Holm; difference in macro F1 +0.000" in text
    assert "no paired test" in report.comparison_interpretation(summary, tests.iloc[:0], same)


# --- the notebooks use them ------------------------------------------------------------------

def _code_cells(stem):
    return [c for c in nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("stem, calls", [
    ("01_data", ["report.data_banner("]),
    ("02_cnn_baselines", ["report.data_banner(", "report.settings_markdown(", "report.interpretation("]),
    ("03_cnn_compare", ["report.data_banner(", "report.settings_table(", "report.comparison_interpretation("]),
])
def test_every_page_shows_its_banner_settings_and_interpretation_from_report(stem, calls):
    cells = _code_cells(stem)
    for call in calls:
        assert any(call in c.source for c in cells), f"{stem} does not call {call}"
    for cell in cells:
        if "report.data_banner(" in cell.source:   # rendered as MyST, so the admonition is a box
            assert cell.metadata.get("mystnb") == report.BANNER_CELL_METADATA["mystnb"], stem
    text = "".join(c.source for c in nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4).cells
                   if c.cell_type == "markdown")
    assert "{admonition} Synthetic data" not in text and "batch 64" not in text

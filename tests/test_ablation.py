"""The ablation studies (fer_utils.study.ablation_study) and their pages (fer_utils.study.ablation): every
augmentation setting in a tiny real fit, the imbalance treatments on constructed cached features
against a recorded fusion run, and the statistics and text on constructed predictions."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fer_utils.study import ablation, ablation_study, runs
from fer_utils.study.ablation_study import SettingRun
from fer_utils.study.config import AugmentationConfig, ClassImbalanceConfig
from fer_utils.errors import ConfigError, DataError
from fer_utils.training.evaluate import evaluate
from fer_utils.options import AUGMENTATION_SETTINGS, IMBALANCE_TREATMENTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_augmentation_setting_trains_in_a_tiny_fit_and_lands_in_one_record(synthetic_rafdb, tmp_path,
                                                                                 monkeypatch):
    from fer_utils.study import experiment

    made = []
    real = experiment.make_datasets

    def spy(index, prep, augmentation="none", rrc_scale=(0.8, 1.0), rotate_degrees=15, **kwargs):
        made.append((augmentation, rrc_scale[0], rotate_degrees))
        return real(index, prep, augmentation, rrc_scale, rotate_degrees, **kwargs)

    monkeypatch.setattr(experiment, "make_datasets", spy)
    cfg = AugmentationConfig(data_path=str(synthetic_rafdb), image_size=32, epochs=1, patience=1, batch_size=16,
                             n_bootstrap=30, seeds=[1], rotate_degrees=10.0, run_dir=str(tmp_path / "aug"),
                             cache_dir=str(tmp_path / "cache"))
    run = ablation_study.run_augmentation(cfg, echo=lambda *_: None)
    # every preset was built with its own settings, in the config's order
    expected = [(preset, scale if scale is not None else 1.0, 10.0) for preset, scale in AUGMENTATION_SETTINGS.values()]
    assert made == expected
    assert [r.setting for r in run.runs] == list(AUGMENTATION_SETTINGS) and {r.epochs_run for r in run.runs} == {1}

    rec = runs.load_run(ablation_study.save_ablation_run(cfg, run))
    m, pred = rec["metrics"], rec["predictions"]
    n_test = m["n"]
    assert len(pred) == len(AUGMENTATION_SETTINGS) * n_test
    assert set(pred.columns) >= {"group", "setting", "seed", "id", "true", "predicted"}
    assert set(rec["history"]["setting"]) == set(AUGMENTATION_SETTINGS)
    assert rec["params"]["notebook"] == "07_augmentation" and rec["params"]["training"]["loss"] == "cross_entropy"
    assert rec["provenance"]["data"]["synthetic"]
    assert [c["setting"] for c in m["comparisons"]] == list(AUGMENTATION_SETTINGS)[1:]   # all but "none"
    assert m["adoption"]["cnn"]["adopted"] in AUGMENTATION_SETTINGS
    assert m["macro_f1"] == pytest.approx(next(r["macro_f1"] for r in m["runs"]
                                              if r["setting"] == m["adoption"]["cnn"]["adopted"]))
    assert m["minority_classes"] and set(m["minority_classes"]) <= {"fear", "disgust", "anger", "surprise"}

    # the page: one seed -> n = 1 and single values, never a mean ± std
    table = ablation.results_table(m, "cnn")
    assert list(table.columns[:2]) == ["val macro F1", "test macro F1"]
    assert "fear recall" in table.columns and "disgust recall" in table.columns
    assert len(table) == len(AUGMENTATION_SETTINGS) + 1 and table.index[-1] == "always happiness (majority)"
    assert not table.astype(str).apply(lambda col: col.str.contains("±")).any().any()
    assert set(table["n"].iloc[:-1]) == {1}
    assert "n = 1 per setting" in ablation.seeds_note(m)
    scope = ablation.scope_note(cfg)
    assert "1 of the 3 seeds (2, 3 left out)" in scope and "at most 1 epoch of training instead of 30" in scope
    assert "32 px images instead of 224 px" in scope and "settings" not in scope
    assert len(ablation.tests_table(m, "cnn")) == len(AUGMENTATION_SETTINGS) - 1
    assert ablation.adoption_text(m, "cnn").startswith("**Adopted: ")
    assert "crop 0.6–1" in ablation.recall_table(m, "cnn").index
    legend = ablation.settings_legend(m, "cnn")
    assert "- **always flip (p=1)**: `RandomHorizontalFlip(p=1.0)`" in legend and "60 to 100 %" in legend
    assert list(ablation.history_of(rec["history"], m, "cnn")["setting"].unique()) == [
        ablation.setting_label(s, m) for s in AUGMENTATION_SETTINGS]
    assert "fear" in ablation.conclusion(m)
    ablation.failure_text(m, pred)          # whatever a one-epoch model learned, the text is built


def _predictions(y, accuracy, rng, like=None, flip=0.0):
    """Predictions right on about ``accuracy`` of the images (or ``like`` with a share ``flip`` changed)."""
    if like is not None:
        out = like.copy()
        change = rng.random(len(y)) < flip
        out[change] = (y[change] + 1) % 7
        return out
    return np.where(rng.random(len(y)) < accuracy, y, (y + 1 + rng.integers(0, 6, len(y))) % 7)


def _constructed(seeds=(1, 2)):
    rng = np.random.default_rng(0)
    n_val, n_test = 300, 400
    index = pd.DataFrame({"id": [f"i{i:04d}" for i in range(n_val + n_test)],
                          "label": rng.integers(0, 7, n_val + n_test),
                          "split": ["val"] * n_val + ["test"] * n_test})
    y_val, y_test = index["label"].to_numpy()[:n_val], index["label"].to_numpy()[n_val:]
    made = []
    for seed in seeds:
        plain_val, plain_test = _predictions(y_val, 0.55, rng), _predictions(y_test, 0.55, rng)
        preds = {"none": (plain_val, plain_test),
                 "better": (_predictions(y_val, 0.85, rng), _predictions(y_test, 0.85, rng)),
                 "same": (plain_val, plain_test),
                 "noisy": (_predictions(y_val, 0, rng, plain_val, 0.02),
                           _predictions(y_test, 0, rng, plain_test, 0.02))}
        for name, (val, test) in preds.items():
            metrics = evaluate(y_test, test)
            made.append(SettingRun("g", name, seed, evaluate(y_val, val)["macro_f1"], metrics, test, val, 5, 3, 1.0))
    return made, index


def test_comparisons_with_the_plain_setting_and_the_adoption_rule():
    made, index = _constructed()
    m = ablation_study.summarize(made, index, {"g": ["none", "better", "same"]}, {"g": "a model"}, n_bootstrap=400,
                                 seed=0)
    table = pd.DataFrame(m["comparisons"]).set_index("setting")
    better, same = table.loc["better"], table.loc["same"]
    assert better["seeds"] == 2 and better["gain"] > 0.2 and better["gain_low"] > 0
    assert better["p_holm"] < 0.05 and better["p_mcnemar_holm"] < 0.05
    assert better["p_holm"] >= better["p_bootstrap"] and better["mcnemar_b"] > better["mcnemar_c"]
    assert same["gain"] == 0 and same["p_bootstrap"] == 1 and same["mcnemar_b"] == same["mcnemar_c"] == 0
    assert m["adoption"]["g"]["adopted"] == "better" and m["adoption"]["g"]["reason"] == "val_gain"
    assert m["adoption"]["g"]["val_low"] > 0
    assert m["macro_f1"] == pytest.approx(np.mean([r.metrics["macro_f1"] for r in made if r.setting == "better"]))
    shown = ablation.tests_table(m, "g")
    assert shown.loc["better", "verdict"] == "significant by both tests"
    assert shown.loc["same", "verdict"] == "not significant"
    # several seeds: mean ± std, n = 2
    results = ablation.results_table(m, "g")
    assert "±" in results.loc["better", "test macro F1"] and results.loc["better", "n"] == 2
    assert "n = 2 per setting" in ablation.seeds_note(m) and "Adopted: better" in ablation.adoption_text(m, "g")
    # a best setting whose validation edge is noise: the plain one stays
    m = ablation_study.summarize(made, index, {"g": ["none", "noisy", "same"]}, {"g": "a model"}, n_bootstrap=400)
    entry = m["adoption"]["g"]
    if entry["best_on_validation"] == "noisy":
        assert entry["reason"] == "val_unclear" and entry["adopted"] == "none" and entry["val_low"] <= 0
        assert "cannot tell them apart" in ablation.adoption_text(m, "g")
    else:
        assert entry["reason"] == "plain_best" and entry["adopted"] == "none"


def test_a_collapsed_setting_is_explained_on_the_page():
    made, index = _constructed(seeds=(1,))
    y_test = index.loc[index["split"] == "test", "label"].to_numpy()
    broken = np.full_like(y_test, 3)
    made.append(SettingRun("g", "hflip_always", 1, 0.05, evaluate(y_test, broken), broken, broken[:300], 5, 1, 1.0))
    m = ablation_study.summarize(made, index, {"g": ["none", "better", "hflip_always"]}, {"g": "a model"},
                                 n_bootstrap=100)
    text = ablation.failure_text(m, ablation_study.predictions_long(made, index))
    assert "always flip (p=1) (run hflip_always-s1) predicts 'happiness'" in text
    assert "had the budget of the other settings" in text
    assert ablation.failure_text(m, ablation_study.predictions_long(made, index), ["other"]) == ""


def test_the_configs_list_parameters_are_checked():
    ablation_study.check_augmentation(AugmentationConfig())
    with pytest.raises(ConfigError, match="settings must include 'none'"):
        ablation_study.check_augmentation(AugmentationConfig(settings=["hflip"]))
    with pytest.raises(ConfigError, match="listed twice"):
        ablation_study.check_augmentation(AugmentationConfig(settings=["none", "hflip", "hflip"]))
    with pytest.raises(ConfigError, match="seeds must be a non-empty list"):
        ablation_study.check_augmentation(AugmentationConfig(seeds=[]))
    ablation_study.check_imbalance(ClassImbalanceConfig())
    with pytest.raises(ConfigError, match=r"beta of class_weight_betas must be in \(0, 1\), got 1.0"):
        ablation_study.check_imbalance(ClassImbalanceConfig(class_weight_betas=[0.9, 1.0]))
    with pytest.raises(ConfigError, match="treatments must include 'none'"):
        ablation_study.check_imbalance(ClassImbalanceConfig(treatments=["focal"]))
    assert ablation_study.treatment_params("sampler") == {
        "class_weights": "none", "class_weight_beta": 0.999, "loss": "cross_entropy", "focal_gamma": 2.0,
        "sampler": "balanced"}
    assert ablation_study.treatment_params("effective", 0.9)["class_weights"] == "effective"
    with pytest.raises(ConfigError, match="unknown treatment"):
        ablation_study.treatment_params("oversample")


@pytest.fixture()
def fusion_inputs(tmp_path):
    """Imbalanced constructed features (the label in the text part, noise in the CNN part) and a
    recorded fusion run whose plain head runs the imbalance study must repeat."""
    from fer_utils.models.heads.registry import fuse
    from fer_utils.study import fusion
    from fer_utils.study.config import FusionConfig
    from fer_utils.study.fusion_study import FusionInputs, head_training_config

    rng = np.random.default_rng(3)
    counts = [60, 12, 30, 240, 90, 30, 120]
    labels = rng.permutation(np.repeat(np.arange(7), counts))
    n = len(labels)
    split = np.array(["train"] * 372 + ["val"] * 102 + ["test"] * (n - 474))
    index = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "label": labels, "split": split})
    text = np.eye(7)[labels] * 1.2 + rng.normal(scale=0.8, size=(n, 7))
    cnn = rng.normal(size=(n, 12)) + np.eye(7, 12)[labels] * 0.8
    fd = fusion.FusionData(index, cnn.astype(np.float32), text.astype(np.float32),
                           {"name": "constructed", "fingerprint": "c", "synthetic": True})
    params = {"notebook": "06_fusion", "heads": ["mlp1"], "epochs": 6, "patience": 6, "batch_size": 32, "lr": 3e-3,
              "fusion_norm": "concat_l2", "seeds": [1]}
    tcfg = head_training_config(FusionConfig.from_params({k: v for k, v in params.items() if k != "notebook"}))
    theirs = [fusion.train_head("mlp1", fuse(cnn, text, "fused"), fd, 12, 7, 1, tcfg, inputs="fused"),
              fusion.train_head("mlp1", fuse(cnn, None, "cnn"), fd, 12, 0, 1, tcfg, inputs="cnn")]
    runs_root = tmp_path / "runs"
    runs.save_run(runs_root / "06_fusion" / "default", params,
                  {"cnn_bundle": {"path": "nowhere/bundle", "model": "resnet18"}, "controls_and_sweep_head": "mlp1",
                   "runs": [r.row() for r in theirs]}, {})
    return FusionInputs(fd, {"path": "nowhere/bundle", "model": "resnet18"}, pd.DataFrame(), {}, None), runs_root


def test_every_treatment_on_the_fusion_studys_heads_repeats_its_plain_runs(fusion_inputs, tmp_path):
    inputs, runs_root = fusion_inputs
    cfg = ClassImbalanceConfig(runs_root=str(runs_root), seeds=[1], train_cnn=False, n_bootstrap=100,
                               run_dir=str(tmp_path / "imb"))
    run = ablation_study.run_imbalance(cfg, inputs, echo=lambda *_: None)
    m = run.metrics
    assert set(m["groups"]) == {"cnn_head", "fused_head"}
    trained = {(r.group, r.setting) for r in run.runs}
    for group in m["groups"]:
        assert {s for g, s in trained if g == group} == {"none", "inverse", "focal", "sampler",
                                                         *(f"effective_{b:g}" for b in cfg.class_weight_betas)}
        beta = m["chosen_beta"][group]
        assert beta in cfg.class_weight_betas
        assert m["settings"][group] == ["none", "inverse", f"effective_{beta:g}", "focal", "sampler"]
    # the plain head is the fusion study's own run of the same head, input and seed
    reproduced = m["fusion"]["reproduced"]
    assert {r["group"] for r in reproduced} == {"cnn_head", "fused_head"}
    assert all(r["macro_f1"] == r["fusion_macro_f1"] for r in reproduced)
    assert "The plain heads are the fusion study's" in ablation.reproduced_text(m)
    # the treatments changed what was learned
    val = {r.setting: r.val_pred for r in run.runs if r.group == "fused_head"}
    assert all(not np.array_equal(val[s], val["none"]) for s in ("inverse", "focal", "sampler"))

    rec = runs.load_run(ablation_study.save_ablation_run(cfg, run))
    assert rec["params"]["notebook"] == "08_class_weights" and rec["params"]["training"]["epochs"] == 6
    assert len(rec["predictions"]) == 2 * len(ablation_study.candidates(cfg)) * m["n"]
    weights = ablation.weights_table(rec["metrics"])
    assert list(weights.index[:7]) == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert float(weights.loc["fear", "inverse frequency"]) == pytest.approx(240 / 12, rel=0.2)
    ratios = [float(weights.loc["largest / smallest", f"effective, β = {b:g}"]) for b in cfg.class_weight_betas]
    assert ratios == sorted(ratios) and ratios[-1] < float(weights.loc["largest / smallest", "inverse frequency"])
    text = ablation.beta_text(rec["metrics"])
    assert "On RAF-DB's counts (fear 281 to happiness 4,772)" in text
    assert "there β = 0.9, 0.99 is the plain loss in all but name" in text and "Chosen on validation: β =" in text
    beta_rows = ablation.beta_table(rec["metrics"])
    assert list(beta_rows.index) == ["β = 0.9", "β = 0.99", "β = 0.999", "β = 0.9999"]
    assert sum(v.endswith("*") for v in beta_rows.iloc[:, 2]) == 1
    for group in m["groups"]:
        assert len(ablation.tests_table(rec["metrics"], group)) == len(IMBALANCE_TREATMENTS) - 1
        assert "Adopted:" in ablation.adoption_text(rec["metrics"], group)
    scope = ablation.scope_note(cfg)
    assert "no CNN trained end to end" in scope and "1 of the 3 seeds" in scope
    json.dumps(rec["metrics"])


def test_the_imbalance_study_needs_the_fusion_record(tmp_path):
    cfg = ClassImbalanceConfig(runs_root=str(tmp_path), seeds=[1])
    with pytest.raises(DataError, match="needs the fusion study's run record.*--only 06_fusion"):
        ablation_study.run_imbalance(cfg)

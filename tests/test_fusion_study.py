"""The fusion study's data plumbing and statistics (fer_utils.study.fusion, fusion_study, fusion_report,
stats.paired_bootstrap_seeds), on constructed features and real heads trained by the project's fit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_utils.study import fusion, fusion_report
from fer_utils.errors import ConfigError, DataError
from fer_utils.models.heads.registry import fuse
from fer_utils.training.stats import paired_bootstrap, paired_bootstrap_seeds
from fer_utils.training.train import TrainConfig


def test_fuse_normalises_as_the_original_or_per_modality():
    cnn = np.array([[3.0, 4.0], [0.0, 2.0]])
    text = np.array([[0.0, 10.0], [1.0, 0.0]])
    concat = fuse(cnn, text, "fused", "concat_l2")
    assert np.allclose(np.linalg.norm(concat, axis=1), 1)
    assert np.allclose(concat[0], np.array([3, 4, 0, 10]) / np.sqrt(125))      # the text dominates the norm
    per = fuse(cnn, text, "fused", "modality_l2")
    assert np.allclose(per[0], [0.6, 0.8, 0.0, 1.0])                           # each modality at unit length
    assert np.allclose(fuse(cnn, None, "cnn"), [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(ValueError, match="fusion norm"):
        fuse(cnn, text, "fused", "l1")


def test_align_joins_by_id_and_names_missing_ids():
    index = pd.DataFrame({"id": ["b", "a", "c"]})
    rows = fusion.align(index, ["a", "b", "c"], np.array([[1], [2], [3]]), "CNN features")
    assert rows.ravel().tolist() == [2, 1, 3]
    with pytest.raises(DataError, match=r"caption embeddings: no row for 1 of the 3 images: 'c'"):
        fusion.align(index, ["a", "b"], np.array([[1], [2]]), "caption embeddings")
    with pytest.raises(DataError, match="appears twice"):
        fusion.align(index, ["a", "a", "b", "c"], np.zeros((4, 1)), "x")


def test_paired_bootstrap_over_seeds_equals_the_single_seed_test_and_averages_seeds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    a = np.where(rng.random(300) < 0.8, y, (y + 1) % 7)
    b = np.where(rng.random(300) < 0.6, y, (y + 1) % 7)
    one = paired_bootstrap_seeds(y, [a], [b], "accuracy", n_boot=400, seed=3, num_classes=7)
    diff, low, high = paired_bootstrap(y, a, b, "accuracy", n_boot=400, seed=3, num_classes=7)
    assert (one["difference"], one["low"], one["high"]) == pytest.approx((diff, low, high))
    assert one["difference"] == pytest.approx((a == y).mean() - (b == y).mean())
    assert one["p_value"] == pytest.approx(1 / 400)        # no resample crosses 0: the floor, never 0
    same = paired_bootstrap_seeds(y, [a, b], [a, b], "macro_f1", n_boot=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    two = paired_bootstrap_seeds(y, [a, a], [b, y], "accuracy", n_boot=50)
    assert two["difference"] == pytest.approx(((a == y).mean() - (b == y).mean() + (a == y).mean() - 1) / 2)
    with pytest.raises(ValueError, match="as many"):
        paired_bootstrap_seeds(y, [a], [a, b])


@pytest.fixture(scope="module")
def constructed(one_torch_thread):
    """600 images whose label is carried by the text only: the CNN features are noise."""
    rng = np.random.default_rng(1)
    n = 600
    labels = rng.integers(0, 7, n)
    split = np.array(["train"] * 400 + ["val"] * 100 + ["test"] * 100)
    index = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "label": labels, "split": split})
    text = np.eye(7)[labels] * 2 + rng.normal(scale=0.5, size=(n, 7))
    cnn = rng.normal(size=(n, 12))
    return fusion.FusionData(index, cnn.astype(np.float32), text.astype(np.float32), {"name": "constructed"})


def test_fused_heads_gain_only_when_the_pairing_holds(constructed):
    fd = constructed
    tcfg = TrainConfig(epochs=15, patience=15, batch_size=32, lr=3e-3, device="cpu", amp=False)
    runs = []
    for seed in (1, 2):
        runs.append(fusion.train_head("mlp1", fuse(fd.cnn, None, "cnn"), fd, 12, 0, seed, tcfg, inputs="cnn"))
        runs.append(fusion.train_head("mlp1", fuse(fd.cnn, fd.text, "fused"), fd, 12, 7, seed, tcfg))
        shuffled = fd.text[np.random.default_rng(seed).permutation(len(fd.text))]
        runs.append(fusion.train_head("mlp1", fuse(fd.cnn, shuffled, "fused"), fd, 12, 7, seed, tcfg,
                                      variant="control:shuffled"))
        runs.append(fusion.train_head("original_attention", fuse(fd.cnn, fd.text, "fused"), fd, 12, 7, seed, tcfg))
    table = fusion.compare_to_cnn(runs, fd, n_bootstrap=200).set_index(["variant", "head"])
    real = table.loc[("main", "mlp1")]
    assert real["reference"] == "mlp1" and real["seeds"] == 2
    assert real["gain"] > 0.5 and real["gain_low"] > 0 and real["p_holm"] < 0.05
    control = table.loc[("control:shuffled", "mlp1")]
    assert control["gain_low"] < 0.1 and control["gain"] < 0.15         # the pairing broken: no real gain
    blind = table.loc[("main", "original_attention")]                  # it cannot see the text
    assert blind["reference"] == "mlp1" and blind["gain"] < 0.15
    metrics = {"comparisons": table.reset_index().to_dict(orient="records"), "best_head": "mlp1",
               "controls_and_sweep_head": "mlp1", "sweep": []}
    assert len(fusion_report.gains_table(metrics)) == len(table)          # every family at once
    shown = fusion_report.gains_table(metrics, "main")
    assert "original_attention*" in shown.index and "mlp1" in shown.index     # * = compared with mlp1's CNN-only
    text = fusion_report.conclusion(metrics)
    assert "a significant gain" in text and "Neither control shows a significant gain" in text


def test_late_fusion_and_the_vote_as_probabilities(constructed):
    proba = fusion.vote_proba([2, None, pd.NA], epsilon=0.3)
    assert proba.shape == (3, 7) and np.allclose(proba.sum(1), 1)
    assert proba[0, 2] == pytest.approx(0.7) and np.allclose(proba[1], 1 / 7) and np.allclose(proba[2], 1 / 7)


def test_the_fusion_config_checks_list_parameters():
    from fer_utils.study.config import FusionConfig
    from fer_utils.study.fusion_study import check_config

    check_config(FusionConfig())
    with pytest.raises(ConfigError, match="unknown head 'mlp9'"):
        check_config(FusionConfig(heads=["mlp1", "mlp9"]))
    with pytest.raises(ConfigError, match="must include 'mlp1'"):
        check_config(FusionConfig(heads=["gated"]))
    with pytest.raises(ConfigError, match="unknown control"):
        check_config(FusionConfig(controls=["reversed"]))
    with pytest.raises(ConfigError, match=r"sweep accuracy 1\.5"):
        check_config(FusionConfig(sweep_accuracies=[1.5]))


def test_crossfit_gives_every_training_image_a_cnn_that_never_saw_it(synthetic_rafdb, monkeypatch, one_torch_thread):
    from fer_utils.study import crossfit
    from fer_utils.data import load_dataset, make_splits

    index = make_splits(load_dataset(synthetic_rafdb), val_fraction=0.2, seed=42).reset_index(drop=True)
    trained_on: list[set] = []
    real_train = crossfit._train

    def recording(recipe, rows, seed):            # the real training, with a note of what each CNN saw
        trained_on.append(set(rows.loc[rows["split"] == "train", "id"]))
        return real_train(recipe, rows, seed)

    real_proba = crossfit._proba_all
    answered: list[list[str]] = []

    def answering(model, prep, rows):
        answered.append(list(rows["id"]))
        return real_proba(model, prep, rows)

    monkeypatch.setattr(crossfit, "_train", recording)
    monkeypatch.setattr(crossfit, "_proba_all", answering)
    recipe = crossfit.CNNRecipe(image_size=32, epochs=1, batch_size=16)
    cf = crossfit.crossfit_probabilities(index, recipe, folds=2, seed=0)
    train_ids = set(index.loc[index["split"] == "train", "id"])
    assert len(trained_on) == 3 and trained_on[2] == train_ids          # 2 fold CNNs, then the leaky one
    for seen, asked in zip(trained_on[:2], answered[:2]):
        held = [i for i in asked if i in train_ids]
        assert held and not seen & set(held)                            # out of fold: never trained on them
    assert set().union(*(set(a) & train_ids for a in answered[:2])) == train_ids
    assert cf.oof.shape == cf.leaky.shape == (len(index), 7)
    assert np.allclose(cf.oof.sum(1), 1, atol=1e-5) and np.allclose(cf.leaky.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 folds"):
        crossfit.crossfit_probabilities(index, recipe, folds=1)


def test_the_frozen_backbone_variant_needs_pretrained_weights_and_says_which(constructed, tmp_path, monkeypatch):
    """No ImageNet weights can be downloaded here: the frozen-backbone variant must stop with the
    error naming the file to place, never fall back to random weights."""
    from fer_utils.study.config import FusionConfig
    from fer_utils.errors import WeightsNotFoundError
    from fer_utils.study.fusion_study import frozen_features

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = FusionConfig(frozen_backbone="resnet18", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="resnet18-"):
        frozen_features(cfg, constructed)


def comparison(variant, head, gain, low, high, p_holm, **extra):
    return {"variant": variant, "head": head, "reference": extra.pop("reference", head), "seeds": 5,
            "val_macro_f1": 0.7, "macro_f1": 0.7 + gain, "cnn_macro_f1": 0.7, "gain": gain, "gain_low": low,
            "gain_high": high, "p_bootstrap": p_holm, "p_holm": p_holm, "gain_weighted_f1": gain,
            "p_mcnemar": 0.5, "classes_predicted": 7, "same_predictions": False, **extra}


def test_the_conclusion_measures_caption_gains_against_what_captions_without_information_give():
    rows = [comparison("main", "mlp1", 0.006, -0.01, 0.02, 1.0),
            comparison("main", "mlp2", -0.626, -0.65, -0.60, 0.004, classes_predicted=1),
            comparison("late", "late_text", 0.0, 0.0, 0.0, 1.0, reference="mlp1", same_predictions=True),
            comparison("control:shuffled", "mlp1", 0.013, 0.001, 0.025, 0.076),
            comparison("control:constant", "mlp1", 0.006, -0.005, 0.017, 0.268),
            comparison("sweep:p=0.143", "mlp1", 0.021, 0.005, 0.040, 0.018),
            comparison("sweep:p=0.3", "mlp1", 0.021, 0.008, 0.034, 0.005),
            comparison("sweep:p=0.5", "mlp1", 0.053, 0.029, 0.078, 0.005)]
    metrics = {"comparisons": rows, "best_head": "mlp1", "controls_and_sweep_head": "mlp1",
               "sweep": [{"p": p, "vote_accuracy": a} for p, a in ((0.143, 0.147), (0.3, 0.275), (0.5, 0.469))]}
    assert fusion_report.no_information_gain(metrics) == (pytest.approx(0.021), "simulated captions at chance, p = 1/7")
    text = fusion_report.conclusion(metrics)
    # chance-level captions "pay" against zero; the page measures the sweep against that floor instead
    assert "captions that carry no information already give +0.021" in text
    assert "from a vote accuracy of about 0.47 (p = 0.5: +0.053 [+0.029, +0.078])" in text
    assert "pays from a vote accuracy of about 0.15" not in text
    # a control whose interval excludes zero is named, though Holm's p keeps it from being significant
    assert "the interval of the shuffled captions (Holm-adjusted p 0.076) excludes zero" in text
    assert "late_text predict exactly what the CNN-only head predicts" in text
    assert "mlp2 predicted one class only" in text
    assert "mlp2 [one class only]" in fusion_report.gains_table(metrics, "main").index
    # without the chance point, the shuffled control is the floor
    metrics["sweep"] = metrics["sweep"][1:]
    assert fusion_report.no_information_gain(metrics) == (pytest.approx(0.013), "shuffled captions")
    assert "No caption accuracy tried adds clearly more" not in fusion_report.sweep_text(metrics)


def test_the_leakage_text_says_when_a_head_collapsed():
    rows = [comparison("leakage:leaky/study captions", "mlp1", 0.003, -0.025, 0.030, 0.856),
            comparison("leakage:cross-fitted/study captions", "mlp1", -0.139, -0.165, -0.108, 0.004,
                       classes_predicted=1)]
    cnn = {"leaky": {"train accuracy": 0.52, "test accuracy": 0.35},
           "cross-fitted": {"train accuracy": 0.369, "test accuracy": 0.377}}
    text = fusion_report.leakage_text({"comparisons": rows, "leakage": {"cnn": cnn}})
    assert "That gap (17 points)" in text
    assert "the fused head on cross-fitted CNN inputs with study captions predicts one class only" in text
    assert "on leaky CNN inputs with study captions predicts one class" not in text

"""The fusion study's data plumbing and statistics (fer_utils.fusion, fusion_study, fusion_report,
stats.paired_bootstrap_seeds), on constructed features and real heads trained by the project's fit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_utils import fusion, fusion_report
from fer_utils.errors import ConfigError, DataError
from fer_utils.stats import paired_bootstrap, paired_bootstrap_seeds
from fer_utils.train import TrainConfig


def test_fuse_normalises_as_the_original_or_per_modality():
    cnn = np.array([[3.0, 4.0], [0.0, 2.0]])
    text = np.array([[0.0, 10.0], [1.0, 0.0]])
    concat = fusion.fuse(cnn, text, "fused", "concat_l2")
    assert np.allclose(np.linalg.norm(concat, axis=1), 1)
    assert np.allclose(concat[0], np.array([3, 4, 0, 10]) / np.sqrt(125))      # the text dominates the norm
    per = fusion.fuse(cnn, text, "fused", "modality_l2")
    assert np.allclose(per[0], [0.6, 0.8, 0.0, 1.0])                           # each modality at unit length
    assert np.allclose(fusion.fuse(cnn, None, "cnn"), [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(ValueError, match="fusion norm"):
        fusion.fuse(cnn, text, "fused", "l1")


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
        runs.append(fusion.train_head("mlp1", fusion.fuse(fd.cnn, None, "cnn"), fd, 12, 0, seed, tcfg, inputs="cnn"))
        runs.append(fusion.train_head("mlp1", fusion.fuse(fd.cnn, fd.text, "fused"), fd, 12, 7, seed, tcfg))
        shuffled = fd.text[np.random.default_rng(seed).permutation(len(fd.text))]
        runs.append(fusion.train_head("mlp1", fusion.fuse(fd.cnn, shuffled, "fused"), fd, 12, 7, seed, tcfg,
                                      variant="control:shuffled"))
        runs.append(fusion.train_head("original_attention", fusion.fuse(fd.cnn, fd.text, "fused"), fd, 12, 7, seed,
                                      tcfg))
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
    from fer_utils.config import FusionConfig
    from fer_utils.fusion_study import check_config

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
    from fer_utils import crossfit
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
    from fer_utils.config import FusionConfig
    from fer_utils.errors import WeightsNotFoundError
    from fer_utils.fusion_study import frozen_features

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = FusionConfig(frozen_backbone="resnet18", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="resnet18-"):
        frozen_features(cfg, constructed)

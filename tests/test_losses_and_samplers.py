"""The class-imbalance tools of the training loop: the focal loss against values worked by hand, the
class-balanced sampler's class frequencies and repeatability, and every weighting, loss and sampler
in a tiny fit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from fer_utils.study.ablation_study import treatment_params, with_treatment
from fer_utils.study.config import AugmentationConfig, ClassImbalanceConfig, CNNBaselineConfig
from fer_utils.data.weights import class_weights
from fer_utils.errors import ConfigError
from fer_utils.study.experiment import training_config
from fer_utils.models.runtime import balanced_sampler, dataset_labels, make_loader
from fer_utils.options import IMBALANCE_TREATMENTS, LOSSES, SAMPLERS
from fer_utils.training.train import TrainConfig, fit, focal_loss, training_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two samples, three classes, with softmax probabilities that are easy to write down:
#   logits [ln 2, 0, 0] -> softmax [2/4, 1/4, 1/4]; true class 0: p = 1/2
#   logits [0, ln 3, 0] -> softmax [1/5, 3/5, 1/5]; true class 2: p = 1/5
LOGITS = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, math.log(3), 0.0]])
TARGET = torch.tensor([0, 2])


def test_focal_loss_equals_the_value_worked_by_hand():
    # FL = -(1 - p)^gamma log p:  sample 1: (1/2)^2 ln 2 = 0.25 ln 2;  sample 2: (4/5)^2 ln 5 = 0.64 ln 5
    fl1, fl2 = 0.25 * math.log(2), 0.64 * math.log(5)
    assert focal_loss(LOGITS, TARGET, gamma=2.0).item() == pytest.approx((fl1 + fl2) / 2, rel=1e-6)
    # gamma = 1: (1/2) ln 2 and (4/5) ln 5
    assert focal_loss(LOGITS, TARGET, gamma=1.0).item() == pytest.approx((0.5 * math.log(2) + 0.8 * math.log(5)) / 2,
                                                                         rel=1e-6)
    # with alpha = class weights [1, 5, 3]: the samples weigh 1 (class 0) and 3 (class 2), and the
    # batch mean is normalised by the summed weights, 1 + 3, as torch's weighted cross-entropy is
    alpha = torch.tensor([1.0, 5.0, 3.0])
    assert focal_loss(LOGITS, TARGET, 2.0, alpha).item() == pytest.approx((1 * fl1 + 3 * fl2) / 4, rel=1e-6)
    # in numbers: (0.17329 + 1.03004) / 2 = 0.60166 plain, (0.17329 + 3 * 1.03004) / 4 = 0.81585 weighted
    assert focal_loss(LOGITS, TARGET, 2.0).item() == pytest.approx(0.60166, abs=1e-4)
    assert focal_loss(LOGITS, TARGET, 2.0, alpha).item() == pytest.approx(0.81585, abs=1e-4)


def test_focal_loss_with_gamma_0_is_the_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 7, generator=g) * 3, torch.randint(0, 7, (16,), generator=g)
    weights = torch.rand(7, generator=g) + 0.1
    assert focal_loss(logits, target, 0.0).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    assert focal_loss(logits, target, 0.0, weights).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weights).item(), rel=1e-6)
    # gamma > 0 only ever lowers a sample's loss, most for confident right answers
    assert focal_loss(logits, target, 2.0).item() < F.cross_entropy(logits, target).item()
    cfg = TrainConfig(loss="focal", focal_gamma=0.0)
    assert training_loss(cfg, weights)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weights).item(), rel=1e-6)


def test_the_focal_loss_is_finite_for_confident_predictions_and_has_gradients():
    logits = torch.tensor([[60.0, -60.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([0, 1]), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


IMBALANCED = [200, 10, 40, 400, 100, 20, 30]          # 800 samples, 7 classes


def imbalanced(counts=IMBALANCED) -> TensorDataset:
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return TensorDataset(torch.arange(len(y), dtype=torch.float32)[:, None], y)


def _drawn(loader, epochs: int) -> torch.Tensor:
    return torch.cat([y for _ in range(epochs) for _, y in loader])


def test_the_balanced_sampler_draws_every_class_equally_often_and_repeats_for_a_seed():
    data = imbalanced()
    loader = make_loader(data, 64, torch.device("cpu"), 0, shuffle=True, seed=5, balanced=True)
    drawn = _drawn(loader, 30)
    assert len(drawn) == 30 * len(data)                   # num_samples = the training set's size
    shares = torch.bincount(drawn, minlength=7).double() / len(drawn)
    assert torch.allclose(shares, torch.full((7,), 1 / 7, dtype=torch.float64), atol=0.012), shares
    # with replacement: the 10 fear samples (class 1) fill about 24000 / 7 draws
    assert drawn.eq(1).sum() > 3000
    # the sequence repeats for the same seed, not for another; without the sampler nothing changes
    again = make_loader(data, 64, torch.device("cpu"), 0, shuffle=True, seed=5, balanced=True)
    assert torch.equal(_drawn(again, 3), drawn[: 3 * len(data)])
    other = make_loader(data, 64, torch.device("cpu"), 0, shuffle=True, seed=6, balanced=True)
    assert not torch.equal(_drawn(other, 1), drawn[: len(data)])
    plain = _drawn(make_loader(data, 64, torch.device("cpu"), 0, shuffle=True, seed=5), 1)
    assert torch.equal(torch.bincount(plain), torch.tensor(IMBALANCED))


class Labelled(Dataset):
    """A map-style data set with a ``labels`` attribute, as FERDataset has (the DataLoader path)."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(2), int(self.labels[i])


def test_the_sampler_reads_the_labels_of_each_kind_of_data_set():
    labels = np.repeat(np.arange(7), IMBALANCED)
    loader = make_loader(Labelled(labels), 50, torch.device("cpu"), 0, shuffle=True, seed=1, balanced=True)
    shares = torch.bincount(_drawn(loader, 20), minlength=7).double() / (20 * len(labels))
    assert torch.allclose(shares, torch.full((7,), 1 / 7, dtype=torch.float64), atol=0.015), shares
    assert dataset_labels(imbalanced()).tolist() == labels.tolist()
    subset = Subset(imbalanced(), [0, 250, 790])     # classes start at 0, 200, 210, 250, 650, 750, 770
    assert dataset_labels(subset).tolist() == [0, 3, 6]
    with pytest.raises(ConfigError, match="needs the training labels.*TensorDataset"):
        dataset_labels(TensorDataset(torch.zeros(3, 2)))
    with pytest.raises(ConfigError, match="needs the training labels"):
        make_loader([torch.zeros(2)] * 4, 2, torch.device("cpu"), 0, balanced=True)
    sampler = balanced_sampler([0, 0, 0, 1], torch.Generator().manual_seed(0))
    assert sampler.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0]) and sampler.replacement


def test_the_training_settings_are_checked():
    assert LOSSES == ("cross_entropy", "focal") and SAMPLERS == ("none", "balanced")
    assert IMBALANCE_TREATMENTS == ("none", "inverse", "effective", "focal", "sampler")
    for bad, match in (({"loss": "hinge"}, "loss must be one of"),
                       ({"sampler": "oversample"}, "sampler must be one of"),
                       ({"focal_gamma": -1.0}, "focal_gamma must be a finite number")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)
    assert TrainConfig(loss="focal", sampler="balanced").to_dict()["sampler"] == "balanced"
    for cls in (CNNBaselineConfig, AugmentationConfig):
        with pytest.raises(ConfigError, match="'loss' must be one of cross_entropy, focal"):
            cls.from_params({"loss": "focall"})
        with pytest.raises(ConfigError, match="'sampler' must be one of none, balanced"):
            cls.from_params({"sampler": "weighted"})
        with pytest.raises(ConfigError, match="'focal_gamma' must be >= 0"):
            cls.from_params({"focal_gamma": -2})
    with pytest.raises(ConfigError, match=r"'treatments' must be one of .*; got 'balanced' in \['none', 'balanced'\]"):
        ClassImbalanceConfig.from_params({"treatments": ["none", "balanced"]})
    with pytest.raises(ConfigError, match=r"'settings' must be one of .*; got 'rrc_0.7'"):
        AugmentationConfig.from_params({"settings": ["none", "rrc_0.7"]})
    with pytest.raises(ConfigError, match=r"'seeds' must be >= 0; got -1 in \[1, -1\]"):
        AugmentationConfig.from_params({"seeds": [1, -1]})


def test_a_notebook_config_passes_loss_sampler_and_beta_to_training():
    labels = np.repeat(np.arange(7), IMBALANCED)
    cfg = CNNBaselineConfig(class_weights="effective", class_weight_beta=0.9, loss="focal", focal_gamma=1.5,
                            sampler="balanced")
    tcfg = training_config(cfg, labels)
    assert (tcfg.loss, tcfg.focal_gamma, tcfg.sampler) == ("focal", 1.5, "balanced")
    assert torch.allclose(tcfg.class_weights, class_weights(labels, "effective", beta=0.9))
    assert not torch.allclose(tcfg.class_weights, class_weights(labels, "effective"))   # not the default 0.999
    assert training_config(CNNBaselineConfig(), labels).class_weights is None


def tiny_problem(seed: int):
    """Imbalanced 2-d points: class c sits at an angle 2 pi c / 7, the counts those of IMBALANCED / 4."""
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.arange(7), torch.tensor([c // 4 for c in IMBALANCED]))
    angle = 2 * math.pi * y / 7
    x = torch.stack([angle.cos(), angle.sin()], 1) + 0.25 * torch.randn(len(y), 2, generator=g)
    return TensorDataset(x, y)


@pytest.mark.parametrize("treatment", IMBALANCE_TREATMENTS)
def test_every_treatment_trains_a_model(treatment):
    train, val = tiny_problem(1), tiny_problem(2)
    labels = train.tensors[1].numpy()
    base = TrainConfig(batch_size=16, lr=0.05, epochs=8, patience=8, device="cpu", amp=False, seed=3)
    tcfg = with_treatment(base, treatment_params(treatment, beta=0.99, gamma=2.0), labels)
    assert (tcfg.class_weights is None) == (treatment in ("none", "focal", "sampler"))
    torch.manual_seed(0)
    result = fit(nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 7)), train, val, tcfg, progress=False)
    assert np.isfinite(result.history["train_loss"]).all()
    assert result.best_score > 0.6                               # chance is about 0.03 macro F1
    torch.manual_seed(0)
    plain = fit(nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 7)), train, val,
                with_treatment(base, treatment_params("none"), labels), progress=False)
    if treatment != "none":                                      # the treatment changed the training
        assert result.history["train_loss"].iloc[0] != pytest.approx(plain.history["train_loss"].iloc[0], rel=1e-6)

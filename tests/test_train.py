"""The training loop on easy synthetic tensors: learning, early stopping, best state, determinism."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from fer_utils.data import make_splits
from fer_utils.data.dataset import FERDataset
from fer_utils.data.tensor_transforms import BatchTransform
from fer_utils.data.transforms import make_datasets
from fer_utils.errors import ConfigError
from fer_utils.models import create_model
from fer_utils.options import Preprocessing
from fer_utils.training.train import HISTORY_COLUMNS, TrainConfig, fit

N_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def colour_data(n: int, seed: int) -> TensorDataset:
    """8x8 images whose class (0..2) is the brightest colour channel, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    x = 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), labels] += 1.0
    return TensorDataset(x, labels)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, N_CLASSES))


def config(**overrides) -> TrainConfig:
    settings = dict(batch_size=8, lr=0.05, epochs=30, patience=2, device="cpu", seed=3)
    return TrainConfig(**{**settings, **overrides})


def test_fit_learns_and_stops_early_on_plateau():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    result = fit(tiny_net(), train, val, config(), progress=False)
    h = result.history
    assert list(h.columns) == list(HISTORY_COLUMNS)
    assert h["train_loss"].iloc[-1] < 0.5 * h["train_loss"].iloc[0]
    assert h["val_acc"].max() >= 0.9  # chance is 1/3
    # val macro F1 saturates: training stops `patience` epochs after the first best epoch
    assert result.stopped_early and len(h) < 30
    assert len(h) == result.best_epoch + 2
    assert result.best_score == h["val_macro_f1"].max() == h["val_macro_f1"].iloc[result.best_epoch - 1]
    assert (h["val_macro_f1"].iloc[result.best_epoch:] <= result.best_score).all()


def test_best_state_is_restored():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    model = tiny_net()
    result = fit(model, train, val, config(), progress=False)
    h = result.history
    best_loss, last_loss = h["val_loss"].iloc[result.best_epoch - 1], h["val_loss"].iloc[-1]
    assert best_loss != pytest.approx(last_loss, abs=1e-4)  # else the check below proves nothing
    with torch.no_grad():
        restored_loss = F.cross_entropy(model(val.tensors[0]), val.tensors[1]).item()
    assert restored_loss == pytest.approx(best_loss, abs=1e-5)
    assert not model.training


def test_restore_best_false_keeps_the_last_epochs_weights_as_the_original_did():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    model = tiny_net()
    result = fit(model, train, val, config(restore_best=False), progress=False)
    h = result.history
    assert result.kept_epoch == len(h) != result.best_epoch
    best_loss, last_loss = h["val_loss"].iloc[result.best_epoch - 1], h["val_loss"].iloc[-1]
    assert best_loss != pytest.approx(last_loss, abs=1e-4)
    with torch.no_grad():
        kept_loss = F.cross_entropy(model(val.tensors[0]), val.tensors[1]).item()
    assert kept_loss == pytest.approx(last_loss, abs=1e-5)
    with pytest.raises(ConfigError, match="restore_best"):
        config(restore_best="no")


def test_warmup_raises_the_learning_rate_linearly_then_leaves_it():
    from fer_utils.training.train import Warmup

    optimizer = torch.optim.Adam(tiny_net().parameters(), lr=0.1)
    warmup = Warmup(optimizer, steps=4)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        optimizer.step()                                # no gradients: changes nothing
        warmup.step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.001, 0.02575, 0.0505, 0.07525, 0.1, 0.1, 0.1])
    Warmup(optimizer, steps=0).step()                  # no warm-up: the lr is left alone
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    # and fit uses it: the same seed with and without a warm-up trains different weights
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    plain, warm = tiny_net(), tiny_net()
    fit(plain, train, val, config(epochs=1), progress=False)
    fit(warm, train, val, config(epochs=1, warmup_epochs=1.0), progress=False)
    assert not torch.equal(plain[0].weight, warm[0].weight)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        config(warmup_epochs=-1)


def test_monitor_val_loss_runs_all_epochs_when_improving():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    result = fit(tiny_net(), train, val, config(monitor="val_loss", epochs=4, patience=5, lr=0.01), progress=False)
    assert not result.stopped_early and len(result.history) == 4
    assert result.best_score == result.history["val_loss"].min()


def test_cpu_training_is_deterministic():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    runs = [fit(tiny_net(seed=5), train, val, config(epochs=3, patience=3), progress=False) for _ in range(2)]
    a, b = (r.history.drop(columns="seconds") for r in runs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    other = fit(tiny_net(seed=5), train, val, config(epochs=3, patience=3, seed=4), progress=False)
    assert not other.history.drop(columns="seconds").equals(a)  # the seed does matter (shuffling)


def test_a_compiled_training_step_trains_as_the_eager_one():
    """torch_compile="default" (inductor, here its CPU code): the same history as eager within
    float tolerance, the model's own state dict (no compiled wrapper's prefixes) kept, and the
    best epoch's weights restored into the model itself."""
    import torch._dynamo

    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    eager_model, compiled_model = tiny_net(seed=5), tiny_net(seed=5)
    eager = fit(eager_model, train, val, config(epochs=2, patience=2), progress=False)
    torch._dynamo.reset()
    try:
        compiled = fit(compiled_model, train, val, config(epochs=2, patience=2, torch_compile="default"),
                       progress=False)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    finally:
        torch._dynamo.reset()
    columns = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(compiled.history[columns], eager.history[columns], rtol=1e-4)
    assert compiled_model.state_dict().keys() == eager_model.state_dict().keys()
    for name, weight in eager_model.state_dict().items():
        torch.testing.assert_close(compiled_model.state_dict()[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ConfigError, match="torch_compile"):
        TrainConfig(torch_compile="fast")


def test_class_weights_change_the_training_loss():
    train, val = colour_data(48, seed=1), colour_data(24, seed=2)
    plain = fit(tiny_net(), train, val, config(epochs=1), progress=False)
    weighted = fit(tiny_net(), train, val, config(epochs=1, class_weights=[1.0, 5.0, 1.0]), progress=False)
    assert weighted.history["train_loss"].iloc[0] != pytest.approx(plain.history["train_loss"].iloc[0])


def test_config_is_checked_and_serialisable():
    with pytest.raises(ConfigError, match="monitor"):
        TrainConfig(monitor="val_f1")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="class_weights"):
        TrainConfig(class_weights=[1.0, -1.0])
    record = TrainConfig(class_weights=torch.tensor([1.0, 2.0])).to_dict()
    assert json.loads(json.dumps(record))["class_weights"] == [1.0, 2.0]


def test_fit_registry_model_on_image_files(tmp_path):
    """End to end on real files: FERDataset over JPEGs, a registry ResNet18 at 32 px, a last batch of 1."""
    rows = []
    for i in range(17):  # 17 = 2 batches of 8 + 1: the lone last sample is dropped (BatchNorm)
        label = i % 2
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (20, 20), (200, 40, 40) if label else (40, 40, 200)).save(path)
        rows.append({"id": str(i), "path": str(path), "pixels": None, "label": label, "split": "train",
                     "source": "imagefolder"})
    index = pd.DataFrame(rows)
    dataset = FERDataset(index, batch_transform=BatchTransform(Preprocessing.preset(32, "half"), "hflip_rotate",
                                                               train=True))
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=2)
    result = fit(model, dataset, dataset, config(epochs=2, patience=2, lr=1e-3), progress=False)
    assert len(result.history) == 2
    assert np.isfinite(result.history[["train_loss", "val_loss"]].to_numpy()).all()


def test_to_device_moves_nested_batches_and_reorders_only_image_batches():
    from collections import namedtuple

    from fer_utils.models.runtime import to_device

    Pair = namedtuple("Pair", "cnn text")
    images, features = torch.randn(2, 3, 8, 8), torch.randn(2, 5)
    moved = to_device({"x": (images, [features]), "pair": Pair(features, features), "n": 3},
                      torch.device("cpu"), channels_last=True)
    assert moved["x"][0].is_contiguous(memory_format=torch.channels_last)
    assert moved["x"][1][0].shape == (2, 5) and isinstance(moved["x"], tuple) and isinstance(moved["x"][1], list)
    assert isinstance(moved["pair"], Pair) and moved["n"] == 3
    assert torch.equal(to_device(features, torch.device("cpu"), channels_last=True), features)


class _TwoInputs(torch.utils.data.Dataset):
    """((cnn features, text features), label): what a fusion head on cached arrays trains on."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 7, (n,), generator=g)
        self.a = torch.nn.functional.one_hot(self.y, 7).float() + 0.1 * torch.randn(n, 7, generator=g)
        self.b = torch.randn(n, 4, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.a[i], self.b[i]), int(self.y[i])


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(11, 7)

    def forward(self, a, b):
        return self.linear(torch.cat([a, b], 1))


def test_fit_and_predict_take_tuple_inputs_of_2d_features_with_channels_last():
    from fer_utils.training.evaluate import predict_proba

    torch.manual_seed(0)
    head = _Head()
    result = fit(head, _TwoInputs(64, 0), _TwoInputs(32, 1),
                 TrainConfig(epochs=20, patience=20, batch_size=16, lr=0.05, channels_last=True, device="cpu"),
                 progress=False)
    assert len(result.history) == 20 and result.history["val_acc"].max() > 0.8   # it learns from the pairs
    proba = predict_proba(head, _TwoInputs(16, 2), device="cpu", num_workers=0)
    assert proba.shape == (16, 7)


def _fit_on_images(index, augmentation, seed=3):
    sets = make_datasets(index, Preprocessing.preset(32, "half"), augmentation, (0.5, 1.0))
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=7)
    result = fit(model, sets["train"], sets["val"], config(epochs=2, patience=2, seed=seed, batch_size=8),
                 progress=False)
    return result.history.drop(columns="seconds"), model.state_dict()


@pytest.mark.parametrize("augmentation", ["hflip_rotate", "random_resized_crop"])
def test_fit_on_the_tensor_path_is_repeatable_for_a_seed(tmp_path, augmentation):
    """Training on decoded uint8 batches with per-sample augmentation on the device: the same seed
    gives bit-for-bit the same history and weights on CPU; another seed draws other augmentations."""
    from datafixtures import make_rafdb

    from fer_utils.data import load_rafdb
    make_rafdb(tmp_path, lines=[(f"train_{i:05d}.jpg", i % 7 + 1) for i in range(1, 29)])
    index = make_splits(load_rafdb(tmp_path), val_fraction=0.25, seed=0)
    first, weights = _fit_on_images(index, augmentation)
    second, again = _fit_on_images(index, augmentation)
    pd.testing.assert_frame_equal(first, second)
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    other, _ = _fit_on_images(index, augmentation, seed=4)
    assert not other.equals(first)

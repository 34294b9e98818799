"""VGG's first dense layer trained folded below 64 px (fer_utils.models.folding): the same training
as the plain layer up to floating-point order, and a plain torchvision VGG16 again afterwards."""
import copy

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fer_utils.data import make_splits
from fer_utils.data.transforms import make_datasets
from fer_utils.models import create_model
from fer_utils.models.folding import ReplicatedInputLinear, fold_replicated_linear
from fer_utils.options import Preprocessing
from fer_utils.training.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


WIDTH = 64   # the dense layers' width in these tests (VGG16's is 4,096)


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    """The registry's VGG16 (torchvision's convolutions, random weights) with dense layers 64 wide
    instead of 4,096: what folding is about, the first dense layer's 25,088 inputs (one 512-vector
    copied 49 times below 64 px), is VGG16's; its width is not (16.3 M parameters, not 134 M)."""
    torch.manual_seed(0)
    model = create_model("vgg16", num_classes=7)
    first = model.features[3][0]
    assert first.in_features == 512 * 7 * 7 and first.out_features == 4096
    model.features[3] = nn.Sequential(nn.Linear(first.in_features, WIDTH), nn.ReLU(True), nn.Dropout(),
                                      nn.Linear(WIDTH, WIDTH), nn.ReLU(True), nn.Dropout())
    model.head = nn.Linear(WIDTH, 7)
    return model


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> list[float]:
    model.train()
    losses = []
    for i, (x, y) in enumerate(batches):
        torch.manual_seed(100 + i)  # the same dropout masks in both models
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _batches(n: int, size: int = 32):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, size, size, generator=g), torch.randint(0, 7, (8,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_folded_training_equals_the_plain_layers(vgg16, optimizer):
    """Three steps from the same weights on the same batches: the same losses, and the unfolded
    first dense layer (and the rest) equal to the plain one's. SGD is linear in the gradient, so
    tightly; Adam divides by the gradient's size, which turns float noise in near-zero gradients
    into steps of about lr on a few weights, so they are compared on losses and on most weights."""
    plain, folded = copy.deepcopy(vgg16), copy.deepcopy(vgg16)
    unfold = fold_replicated_linear(folded, 32)
    assert unfold is not None and isinstance(folded.features[3][0], ReplicatedInputLinear)
    # the folded layer trains one 512 x 64 block instead of 49 copies of it
    assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in folded.parameters()) == 48 * 512 * WIDTH

    def make(model):
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.01, momentum=0.9)
        return torch.optim.Adam(params, lr=1e-4)

    batches = _batches(3)
    plain_losses = _steps(plain, make(plain), batches)
    folded_losses = _steps(folded, make(folded), batches)
    unfold()
    assert isinstance(folded.features[1], nn.AdaptiveAvgPool2d) and isinstance(folded.features[3][0], nn.Linear)
    assert folded.state_dict().keys() == plain.state_dict().keys()
    assert folded_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-5)
    moved = (plain.features[3][0].weight - vgg16.features[3][0].weight).abs()
    assert moved.max() > 0  # the layer did train
    diff = (folded.features[3][0].weight - plain.features[3][0].weight).abs()
    if optimizer == "sgd":
        torch.testing.assert_close(folded.features[3][0].weight, plain.features[3][0].weight, rtol=1e-4, atol=1e-6)
        for (name, a), b in zip(plain.named_parameters(), folded.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    else:
        assert (diff > 1e-6).float().mean() < 0.1
    with torch.no_grad():
        plain.eval(), folded.eval()
        x = batches[0][0]
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-3, atol=1e-4)


def test_fold_only_where_it_is_exact(vgg16):
    """64 px gives VGG16 a 2 x 2 map (the pooling then averages, not copies): nothing is folded;
    nor in a ResNet, nor when the layer is frozen. A folded layer fed another size says so."""
    model = copy.deepcopy(vgg16)
    assert fold_replicated_linear(model, 64) is None
    assert isinstance(model.features[3][0], nn.Linear)
    torch.manual_seed(0)
    assert fold_replicated_linear(create_model("resnet18", num_classes=7), 32) is None
    model.features[3][0].weight.requires_grad_(False)
    assert fold_replicated_linear(model, 32) is None
    model.features[3][0].weight.requires_grad_(True)
    unfold = fold_replicated_linear(model, 63)  # the largest size with a 1 x 1 map
    assert unfold is not None
    with pytest.raises(RuntimeError, match=r"1 x 1 feature map .*got 2048"):
        model(torch.zeros(1, 3, 64, 64))
    unfold()
    weight = model.features[3][0].weight.clone()
    unfold()  # a second call changes nothing
    assert torch.equal(model.features[3][0].weight, weight)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_fit_folds_by_default_and_returns_the_plain_model(synthetic_rafdb, vgg16):
    """One epoch of VGG16 at 32 px through fit on real images, folded and not: the same history up
    to float order; afterwards the model is the plain registry VGG16 (same keys, shapes), and the
    record says which way it trained."""
    from fer_utils.data import load_rafdb

    index = make_splits(load_rafdb(synthetic_rafdb), val_fraction=0.2, seed=0)
    sets = make_datasets(index, Preprocessing.preset(32, "imagenet"))
    histories = {}
    for fold in (True, False):
        model = copy.deepcopy(vgg16)
        config = TrainConfig(batch_size=16, lr=1e-4, epochs=1, patience=1, device="cpu", seed=3,
                             fold_replicated=fold)
        histories[fold] = fit(model, sets["train"], sets["val"], config, progress=False).history
        assert isinstance(model.features[1], nn.AdaptiveAvgPool2d) and isinstance(model.features[3][0], nn.Linear)
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in vgg16.state_dict().items()}
        assert config.to_dict()["fold_replicated"] is fold
    columns = ["train_loss", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(histories[True][columns], histories[False][columns], rtol=1e-3)


def test_an_error_inside_fit_leaves_the_plain_model(vgg16):
    """The folded layer is swapped back also when training fails (here: a label out of range)."""
    model = copy.deepcopy(vgg16)
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)

    class Bad(torch.utils.data.Dataset):
        from fer_utils.data.tensor_transforms import BatchTransform
        batch_transform = BatchTransform(Preprocessing.preset(32, "half"))

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return images[i], 9  # 9 of 7 classes

    with pytest.raises((IndexError, RuntimeError)):
        fit(model, Bad(), Bad(), TrainConfig(batch_size=2, epochs=1, device="cpu"), progress=False)
    assert isinstance(model.features[1], nn.AdaptiveAvgPool2d) and isinstance(model.features[3][0], nn.Linear)

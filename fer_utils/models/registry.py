"""A timm-style registry of the study's CNNs: ``create_model(name)`` / ``list_models()``.

Every registered architecture is built from torchvision and wrapped in a :class:`Classifier`:
``features`` maps an image batch to the penultimate feature vector (the "CNN features" the
fusion experiments use) and ``head`` is a fresh ``nn.Linear(feature_dim, num_classes)``. So a
notebook names a model by a string parameter, and feature extraction is the same call for every
architecture (:meth:`Classifier.forward_features`).

Pretrained ImageNet weights are loaded with torchvision's own mechanism (the weights enum ->
``torch.hub.load_state_dict_from_url`` -> ``$TORCH_HOME/hub/checkpoints/<file>``). When the file
is not there and cannot be downloaded, :class:`~fer_utils.errors.WeightsNotFoundError` names the
exact file and folder to fill; there is no silent fallback to random weights.
"""
from __future__ import annotations

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
class ModelInfo:
    """What the registry knows about an architecture without building it."""

    name: str
    feature_dim: int
    preprocessing: Preprocessing
    """The pretrained weights' preprocessing (224 px, ImageNet statistics)."""
    torchvision_weights: str
    """The torchvision weights enum entry, e.g. ``"DenseNet121_Weights.IMAGENET1K_V1"``."""

    @property
    def weights_file(self) -> str:
        """File name torchvision stores the weights under, e.g. ``densenet121-a639ec97.pth``."""
        return os.path.basename(urlparse(torchvision.models.get_weight(self.torchvision_weights).url).path)


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


_FeatureSplitter = Callable[[nn.Module], nn.Module]
_REGISTRY: dict[str, tuple[ModelInfo, _FeatureSplitter]] = {}


def register_model(name: str, *, feature_dim: int, weights: str):
    """Register ``fn(torchvision_model) -> features module`` under ``name``.

    ``name`` must be a torchvision model name (``torchvision.models.get_model``); ``fn`` receives
    the full torchvision model (ImageNet head included) and returns the part that maps an image
    batch to ``[N, feature_dim]`` vectors.
    """
    def decorator(fn: _FeatureSplitter) -> _FeatureSplitter:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        transform = torchvision.models.get_weight(weights).transforms()  # the weights' own preprocessing
        preprocessing = Preprocessing(transform.crop_size[0], transform.mean, transform.std)
        _REGISTRY[name] = (ModelInfo(name, feature_dim, preprocessing, weights), fn)
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
    """Where torchvision looks for ``name``'s pretrained weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / model_info(name).weights_file


def _torchvision_model(name: str, pretrained: bool, **kwargs) -> nn.Module:
    info = model_info(name)
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    path = weights_path(name)
    url = torchvision.models.get_weight(info.torchvision_weights).url
    try:
        return torchvision.models.get_model(name, weights=info.torchvision_weights, **kwargs)
    except OSError as exc:  # URLError, HTTPError, socket errors: the download failed
        if path.exists():
            raise
        raise WeightsNotFoundError(
            f"pretrained weights for {name!r} ({info.torchvision_weights}) are not available: "
            f"{path.name} is not in {path.parent} and downloading {url} failed ({exc}). "
            f"Place the file {path.name} in {path.parent} (set TORCH_HOME to change the folder), "
            f"or use pretrained=False for random initialisation."
        ) from exc
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        # torch.load / load_state_dict failed on a file that is there: corrupt or not these weights.
        raise WeightsNotFoundError(
            f"{path} exists but is not usable as {info.torchvision_weights} ({exc}). "
            f"Replace it with the original file from {url}."
        ) from exc


def create_model(name: str, num_classes: int = NUM_CLASSES, pretrained: bool = False, **kwargs) -> Classifier:
    """Build a registered architecture with a new ``num_classes`` head.

    ``pretrained=True`` loads torchvision's ImageNet weights into the backbone (from
    ``$TORCH_HOME/hub/checkpoints``, downloading if possible); the head is always freshly
    initialised. torchvision checks a weights file against the sha256 prefix in its name only when
    it downloads it; a file already in the folder is used as it is. ``pretrained=False`` is
    random initialisation (seed torch first to repeat it). Extra keyword arguments go to the torchvision builder (e.g. ``drop_rate`` for DenseNet).
    """
    info = model_info(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    features = _REGISTRY[name][1](_torchvision_model(name, pretrained, **kwargs))
    return Classifier(name, features, nn.Linear(info.feature_dim, num_classes))

"""The fusion heads' registry, the one input every head takes, and what every head shares.

Like the CNN registry (:mod:`fer_utils.models.registry`), a head is named by a string:
``create_head(name, cnn_dim, text_dim, num_classes=7, **kwargs)``, ``list_heads(family=None)``,
``head_info(name)``; an unknown name is a :class:`~fer_utils.errors.ConfigError` listing the names.
The heads register themselves (:func:`register_head`) in two families: ``original``, the original
student study's heads reproduced exactly (:mod:`fer_utils.models.heads.original`), and ``fusion``,
heads that really fuse (:mod:`fer_utils.models.heads.fusion`). Importing this module imports the
package :mod:`fer_utils.models.heads` first, which imports both, so every head is registered.

**Input convention.** Every head takes ONE tensor ``x`` of shape ``[N, cnn_dim + text_dim]``, the
CNN features first and the text embedding after them (:func:`fuse` builds it from the two feature
arrays), and returns logits ``[N, num_classes]``. Every head module has ``cnn_dim`` and
``text_dim`` attributes (:class:`Head`). A head is used on a single modality by giving the other
modality's width as 0 (see :func:`input_dims`): ``inputs="cnn"`` is ``text_dim == 0``,
``inputs="text"`` is ``cnn_dim == 0``. The MLP heads (``mlp*``) then are the same MLP on that
modality's vector alone; in particular an MLP head with ``text_dim=0`` is the "CNN-only head
retrained on the same frozen features", the single-modality baseline with the same architecture
and training budget as its fused version. Heads that need both modalities (``needs_both``: the
attention and gated heads) raise a ConfigError naming the head when one width is 0.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_utils.errors import ConfigError
from fer_utils.labels import NUM_CLASSES
from fer_utils.options import FUSION_NORMS

FAMILIES = ("original", "fusion")
INPUTS = ("cnn", "text", "fused")
TOKENS = ("cls", "cnn", "text")
"""The token order of ``token_attention``: its attention weights' last axis follows it."""


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HeadInfo:
    """What the registry knows about a head without building it."""

    name: str
    family: str
    description: str
    needs_both: bool
    """True: the head needs both modalities (``cnn_dim`` and ``text_dim`` > 0)."""


_HeadBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[HeadInfo, _HeadBuilder]] = {}


def register_head(name: str, *, family: str, description: str, needs_both: bool = False):
    """Register ``builder(cnn_dim, text_dim, num_classes, **kwargs) -> nn.Module`` (a class or a
    function) under ``name``. ``family`` is ``"original"`` or ``"fusion"``; ``needs_both`` marks a
    head that cannot run on a single modality."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")

    def decorator(builder: _HeadBuilder) -> _HeadBuilder:
        if name in _REGISTRY:
            raise ValueError(f"head {name!r} is already registered")
        _REGISTRY[name] = (HeadInfo(name, family, description, needs_both), builder)
        return builder
    return decorator


def list_heads(family: str | None = None) -> list[str]:
    """Registered head names, sorted; only those of ``family`` when given."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown head family {family!r}; families: {', '.join(FAMILIES)}")
    return sorted(name for name, (info, _) in _REGISTRY.items() if family is None or info.family == family)


def head_info(name: str) -> HeadInfo:
    """The :class:`HeadInfo` of a registered head; unknown name -> ConfigError listing the names."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise ConfigError(f"unknown fusion head {name!r}; registered: {', '.join(list_heads())}") from None


def _check_dim(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


def create_head(name: str, cnn_dim: int, text_dim: int, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    """Build head ``name`` for inputs ``[N, cnn_dim + text_dim]`` (CNN part first).

    ``cnn_dim=0`` or ``text_dim=0`` is a single-modality head (ConfigError for heads that need
    both). Extra keyword arguments go to the head's constructor (e.g. ``hidden_dim`` of ``mlp1``,
    ``d`` of ``token_attention``); one it does not accept is a ConfigError. Parameters are
    initialised from torch's global generator: seed torch first to repeat a run.
    """
    info = head_info(name)
    cnn_dim, text_dim = _check_dim("cnn_dim", cnn_dim), _check_dim("text_dim", text_dim)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if cnn_dim + text_dim == 0:
        raise ConfigError(f"head {name!r}: cnn_dim and text_dim are both 0, the head would have no input")
    if info.needs_both and (cnn_dim == 0 or text_dim == 0):
        raise ConfigError(f"head {name!r} needs both modalities (CNN and text features) but got "
                          f"cnn_dim={cnn_dim}, text_dim={text_dim}; use it on fused inputs only")
    builder = _REGISTRY[name][1]
    try:
        inspect.signature(builder).bind(cnn_dim, text_dim, int(num_classes), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"head {name!r}: bad keyword arguments {sorted(kwargs)} ({exc})") from None
    return builder(cnn_dim, text_dim, int(num_classes), **kwargs)


# --------------------------------------------------------------------------------------------------
# The input of every head
# --------------------------------------------------------------------------------------------------

def input_dims(inputs: str, cnn_dim: int, text_dim: int) -> tuple[int, int]:
    """``(cnn_dim, text_dim)`` of a head for ``inputs`` ``cnn`` (text width 0), ``text`` (CNN
    width 0) or ``fused`` (both), as :func:`fuse` builds them."""
    if inputs == "cnn":
        return cnn_dim, 0
    if inputs == "text":
        return 0, text_dim
    if inputs == "fused":
        return cnn_dim, text_dim
    raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")


def l2(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def fuse(cnn: np.ndarray | None, text: np.ndarray | None, inputs: str, norm: str = "concat_l2") -> np.ndarray:
    """A head's input ``[N, cnn_dim + text_dim]`` (float32) from CNN features and text embeddings.

    - ``inputs="cnn"`` or ``"text"``: that modality alone, L2-normalised per image (the other
      array may be None);
    - ``inputs="fused"``: both, CNN first, as the original did (``norm="concat_l2"``: concatenate,
      then L2-normalise each image's vector) or each modality normalised before concatenation
      (``norm="modality_l2"``: neither modality can dominate the vector's length).
    """
    if norm not in FUSION_NORMS:
        raise ValueError(f"fusion norm must be one of {', '.join(FUSION_NORMS)}, got {norm!r}")
    if inputs == "cnn":
        return l2(cnn)
    if inputs == "text":
        return l2(text)
    if inputs != "fused":
        raise ValueError(f"inputs must be cnn, text or fused, got {inputs!r}")
    if len(cnn) != len(text):
        raise ValueError(f"{len(cnn)} CNN rows but {len(text)} text rows")
    if norm == "concat_l2":
        return l2(np.concatenate([cnn, text], axis=1))
    return np.concatenate([l2(cnn), l2(text)], axis=1)


# --------------------------------------------------------------------------------------------------
# What the heads share
# --------------------------------------------------------------------------------------------------

class Head(nn.Module):
    """Common part of the heads: the two widths and an input-width check with a readable message."""

    def __init__(self, cnn_dim: int, text_dim: int, num_classes: int):
        super().__init__()
        self.cnn_dim = int(cnn_dim)
        self.text_dim = int(text_dim)
        self.num_classes = int(num_classes)

    @property
    def in_features(self) -> int:
        return self.cnn_dim + self.text_dim

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects inputs [N, {self.in_features}] "
                             f"(cnn_dim={self.cnn_dim} + text_dim={self.text_dim}), got {list(x.shape)}")

    def extra_repr(self) -> str:
        return f"cnn_dim={self.cnn_dim}, text_dim={self.text_dim}, num_classes={self.num_classes}"


def mlp_layers(in_dim: int, widths: Sequence[int], num_classes: int, dropouts: Sequence[float | None],
               activation: Callable[[], nn.Module] = nn.ReLU, batch_norm: bool = False) -> nn.Sequential:
    """The MLP of the heads: per hidden width ``w`` (with its dropout ``p``) ``Linear(in, w)``, then
    ``BatchNorm1d(w)`` (with ``batch_norm``), ``activation()`` and ``Dropout(p)`` (none where ``p``
    is None); then ``Linear(widths[-1], num_classes)``.

    The layers are created in that order, the order of the original study's ``nn.Sequential``
    heads, so the parameter names (``0.weight``, ``1.running_mean``, ...) are the original's and a
    seeded construction draws the same initial weights.
    """
    if len(widths) != len(dropouts):
        raise ValueError(f"one dropout per hidden width: {len(widths)} widths, {len(dropouts)} dropouts")
    layers: list[nn.Module] = []
    for width, p in zip(widths, dropouts):
        layers.append(nn.Linear(in_dim, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation())
        if p is not None:
            layers.append(nn.Dropout(p))
        in_dim = width
    layers.append(nn.Linear(in_dim, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# For the book
# --------------------------------------------------------------------------------------------------

def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def describe_heads(cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                   include_late: bool = True) -> pd.DataFrame:
    """One row per registered head (family, then name): name, family, description, needs_both,
    parameters (trainable, at ``cnn_dim``/``text_dim``) and cnn_only_parameters (the same head with
    ``text_dim=0``; empty for heads that need both). With ``include_late`` a last row describes
    :class:`~fer_utils.models.heads.late.LateFusion` (its 3 fitted numbers, no gradient training).
    Builds each head once per width on CPU (torch's global generator is saved and restored)."""
    rows = []
    state = torch.random.get_rng_state()
    try:
        for family in FAMILIES:
            for name in list_heads(family):
                info = head_info(name)
                cnn_only = None if info.needs_both else count_parameters(create_head(name, cnn_dim, 0, num_classes))
                rows.append({"name": name, "family": family, "description": info.description,
                             "needs_both": info.needs_both,
                             "parameters": count_parameters(create_head(name, cnn_dim, text_dim, num_classes)),
                             "cnn_only_parameters": cnn_only, "trained": "end to end"})
    finally:
        torch.random.set_rng_state(state)
    if include_late:
        rows.append({"name": "late", "family": "fusion",
                     "description": "LateFusion: w * p_cnn + (1 - w) * p_text after temperature-scaling each; "
                                    "temperatures by validation NLL, w from 0, 0.1, ..., 1 by validation macro F1 "
                                    "(w = 1: the text adds nothing; w = 0: the CNN adds nothing).",
                     "needs_both": True, "parameters": 3, "cnn_only_parameters": None,
                     "trained": "fitted on validation (no gradients)"})
    table = pd.DataFrame(rows)
    table["cnn_only_parameters"] = table["cnn_only_parameters"].astype("Int64")
    return table


__all__ = [
    "FAMILIES", "INPUTS", "TOKENS", "Head", "HeadInfo", "count_parameters", "create_head", "describe_heads",
    "fuse", "head_info", "input_dims", "l2", "list_heads", "mlp_layers", "register_head",
]

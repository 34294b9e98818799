"""Fusion heads: a registry of classifiers on CNN features + caption text embeddings.

Like the CNN registry (:mod:`fer_utils.models.registry`), a head is named by a string:
``create_head(name, cnn_dim, text_dim, num_classes=7, **kwargs)``, ``list_heads(family=None)``,
``head_info(name)``; an unknown name is a :class:`~fer_utils.errors.ConfigError` listing the names.

**Input convention.** Every head takes ONE tensor ``x`` of shape ``[N, cnn_dim + text_dim]``, the
CNN features first and the text embedding after them, and returns logits ``[N, num_classes]``.
Every head module has ``cnn_dim`` and ``text_dim`` attributes. A head is used on a single modality
by giving the other modality's width as 0 (see :func:`input_dims`): ``inputs="cnn"`` is
``text_dim == 0``, ``inputs="text"`` is ``cnn_dim == 0``. The MLP heads (``mlp*``) then are the
same MLP on that modality's vector alone; in particular an MLP head with ``text_dim=0`` is the
"CNN-only head retrained on the same frozen features", the single-modality baseline with the
same architecture and training budget as its fused version. Heads that need both modalities
(``needs_both``: the attention and gated heads) raise a ConfigError naming the head when one
width is 0.

Two families:

- ``original``: the original student study's heads, reproduced exactly (layer sizes, dropouts,
  activations, BatchNorm placement, forward arithmetic, parameter names, so the original
  ``state_dict`` files load), except that the CNN width is ``cnn_dim`` instead of the hard-coded
  1024 (``x[:, :cnn_dim]``) and the text width ``text_dim`` instead of 768. Their flaws are
  reproduced, not fixed: the three "attention" heads take a softmax over a dimension of size 1,
  so the attention weight is exactly 1 for every input (:func:`attention_weights` shows it), and
  in ``original_attention`` and ``original_cross_attention`` the text only enters the query, i.e.
  only that constant weight, so their output does not depend on the caption at all.
  ``original_self_attention`` projects the whole concatenated vector, so it does see the text,
  but only as a stack of linear layers (its "attention" is the identity).
- ``fusion``: heads that really fuse: ``token_attention`` (self-attention over a [CLS] token and
  one token per modality) and ``gated`` (a learned per-sample gate mixes the two modalities).

Late fusion (:class:`LateFusion`) is not a head: it combines two classifiers' probabilities with a
weight and temperatures fitted on validation, without gradient training.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_utils.errors import ConfigError
from fer_utils.labels import NUM_CLASSES

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


def input_dims(inputs: str, cnn_dim: int, text_dim: int) -> tuple[int, int]:
    """``(cnn_dim, text_dim)`` of a head for ``inputs`` ``cnn`` (text width 0), ``text`` (CNN
    width 0) or ``fused`` (both), as :func:`fer_utils.study.fusion.fuse` builds them."""
    if inputs == "cnn":
        return cnn_dim, 0
    if inputs == "text":
        return 0, text_dim
    if inputs == "fused":
        return cnn_dim, text_dim
    raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")


class _Head(nn.Module):
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


# --------------------------------------------------------------------------------------------------
# The original study's heads (family "original"), reproduced exactly.
# Class names are the original's; the constructors' defaults are the original's (1024 + 768 = 1792).
# --------------------------------------------------------------------------------------------------

_ONE_MODALITY = " On one modality: the same MLP on that modality's vector alone."


@register_head("mlp1", family="original", needs_both=False,
               description="Original MLP: Linear(in, 512) - ReLU - Dropout(0.5) - Linear(512, C)." + _ONE_MODALITY)
class MLP(_Head):
    """The original ``MLP`` (cnn_feature_final cell 12)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES, hidden_dim: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp2", family="original",
               description="Original MLP_2Layer: Linear(in, 512) - ReLU - Dropout(0.5) - Linear(512, 256) - ReLU - "
                           "Linear(256, C)." + _ONE_MODALITY)
class MLP_2Layer(_Head):
    """The original ``MLP_2Layer`` (cnn_feature_final cell 18)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 512),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp3", family="original",
               description="Original MLP_3Layer: Linear(in, 1024) - ReLU - Dropout(0.5) - Linear(1024, 512) - ReLU - "
                           "Dropout(0.5) - Linear(512, 128) - ReLU - Linear(128, C)." + _ONE_MODALITY)
class MLP_3Layer(_Head):
    """The original ``MLP_3Layer`` (cnn_feature_final cells 24 and 28, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 1024),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(1024, 512),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(512, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp1_bn", family="original",
               description="Original MLP_BN: Linear(in, 512) - BatchNorm1d - ReLU - Dropout(0.2) - Linear(512, C) "
                           "(the trained version; see the class docstring)." + _ONE_MODALITY)
class MLP_BN(_Head):
    """The original ``MLP_BN``, in the version that was trained: dropout 0.2 (cnn_feature_final cell 30).

    The notebook defines ``MLP_BN`` twice. Cell 30 (``Dropout(0.2)``) is the training cell: it
    trains the head and cell 32 saves it as ``mlp_emotion_model_1-Layer_BN.pt``, the same naming
    as ``..._2-Layer_BN.pt`` and ``..._3-Layer_BN.pt`` (``MLP_BN_2`` / ``MLP_BN_3``, both dropout
    0.2 in every definition). The later definition, cell 34 (``Dropout(0.5)``), is an evaluation
    cell only: it never trains, and it loads ``mlp_emotion_model_1-Layer_BD.pt``, a file no cell
    of the notebook writes (``BD``, not the saved ``BN``). Dropout has no parameters and does
    nothing in eval mode, so the later 0.5 never influenced any number; the weights the study
    trained, under the name it saved, are those of the dropout-0.2 version, which is therefore the
    one reproduced. ``dropout=0.5`` gives the later definition.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 hidden_dim: int = 512, dropout: float = 0.2):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp2_bn", family="original",
               description="Original MLP_BN_2: Linear(in, 512) - BatchNorm1d - ReLU - Dropout(0.2) - Linear(512, 256) "
                           "- BatchNorm1d - ReLU - Linear(256, C)." + _ONE_MODALITY)
class MLP_BN_2(_Head):
    """The original ``MLP_BN_2`` (cnn_feature_final cells 36 and 40, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp3_bn", family="original",
               description="Original MLP_BN_3: Linear(in, 1024) - BN - ReLU - Dropout(0.2) - Linear(1024, 512) - BN - "
                           "ReLU - Dropout(0.2) - Linear(512, 128) - BN - ReLU - Linear(128, C)." + _ONE_MODALITY)
class MLP_BN_3(_Head):
    """The original ``MLP_BN_3`` (cnn_feature_final cells 42 and 46, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(512, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp1_leaky", family="original",
               description="Original MLP_LL: Linear(in, 512) - LeakyReLU(0.1) - Dropout(0.5) - Linear(512, C)."
                           + _ONE_MODALITY)
class MLP_LL(_Head):
    """The original ``MLP_LL`` (cnn_feature_final cell 47)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES, hidden_dim: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, hidden_dim),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.5),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp2_leaky", family="original",
               description="Original MLP_LL2: Linear(in, 512) - LeakyReLU(0.1) - Dropout(0.5) - Linear(512, 256) - "
                           "LeakyReLU(0.1) - Linear(256, C)." + _ONE_MODALITY)
class MLP_LL2(_Head):
    """The original ``MLP_LL2`` (cnn_feature_final cell 50)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 512),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.5),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.1),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp3_leaky", family="original",
               description="Original MLP_LL3: Linear(in, 1024) - LeakyReLU(0.1) - Dropout(0.5) - Linear(1024, 512) - "
                           "LeakyReLU(0.1) - Dropout(0.5) - Linear(512, 128) - LeakyReLU(0.1) - Linear(128, C)."
                           + _ONE_MODALITY)
class MLP_LL3(_Head):
    """The original ``MLP_LL3`` (cnn_feature_final cell 53)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(cnn_dim + text_dim, 1024),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.5),
            nn.Linear(1024, 512),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.5),
            nn.Linear(512, 128),
            nn.LeakyReLU(0.1),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("original_attention", family="original", needs_both=True,
               description="Original AttentionWithMLP: query from the text, key and value from the CNN, softmax over a "
                           "size-1 dimension (weight always exactly 1), so the output is MLP(value(CNN)) and ignores "
                           "the caption. Needs both modalities.")
class AttentionWithMLP(_Head):
    """The original ``AttentionWithMLP`` (attention_mlp_with_cnn_baseline cell 2), flaw included.

    ``(Q * K).sum(dim=1, keepdim=True)`` is ``[N, 1]`` and the softmax is over that size-1
    dimension, so ``attn_score`` is exactly 1 for every sample and ``context == V``: the output is
    ``mlp(value_proj(cnn))``; the text (which only enters ``Q``) cannot change it.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 attn_dim: int = 256, mlp_hidden: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.query_proj = nn.Linear(text_dim, attn_dim)
        self.key_proj = nn.Linear(cnn_dim, attn_dim)
        self.value_proj = nn.Linear(cnn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(mlp_hidden, num_classes),
        )

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        cnn_feat = x[:, :self.cnn_dim]
        clip_feat = x[:, self.cnn_dim:]
        Q = self.query_proj(clip_feat)
        K = self.key_proj(cnn_feat)
        V = self.value_proj(cnn_feat)
        attn_score = torch.softmax((Q * K).sum(dim=1, keepdim=True), dim=1)
        return attn_score, V

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights ``[N, 1]``: exactly 1.0 for every input."""
        return self._attend(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_score, V = self._attend(x)
        context = attn_score * V
        out = self.mlp(context)
        return out


@register_head("original_self_attention", family="original", needs_both=True,
               description="Original SelfAttentionMLP: q/k/v projections of the whole concatenated vector as a "
                           "sequence of one token, so the attention weight is always exactly 1 and the head is "
                           "MLP(attn_fc(v(x))): it sees the text, but only through linear layers. Needs both "
                           "modalities.")
class SelfAttentionMLP(_Head):
    """The original ``SelfAttentionMLP`` (attention_mlp_with_cnn_baseline cells 7 and 9, identical).

    The input is one token (``x.unsqueeze(1)``), so the ``[N, 1, 1]`` score matrix is softmaxed over
    one key: the weight is exactly 1 and ``context == V``. Unlike the other two attention heads it
    projects the whole vector, so the caption does reach the output (linearly, before the MLP).
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 attn_dim: int = 256, mlp_hidden: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        input_dim = cnn_dim + text_dim
        self.q_proj = nn.Linear(input_dim, attn_dim)
        self.k_proj = nn.Linear(input_dim, attn_dim)
        self.v_proj = nn.Linear(input_dim, attn_dim)
        self.attn_fc = nn.Linear(attn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(mlp_hidden, num_classes),
        )

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x = x.unsqueeze(1)
        Q = self.q_proj(x)
        K = self.k_proj(x)
        V = self.v_proj(x)
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (Q.shape[-1] ** 0.5), dim=-1)
        return attn_weights, V

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights ``[N, 1, 1]``: exactly 1.0 for every input."""
        return self._attend(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_weights, V = self._attend(x)
        context = torch.matmul(attn_weights, V).squeeze(1)
        out = self.mlp(self.attn_fc(context))
        return out


@register_head("original_cross_attention", family="original", needs_both=True,
               description="Original CrossAttentionMLP: query from the text, key and value from the CNN, one key so "
                           "the weight is always exactly 1; the output is MLP(attn_fc(value(CNN))) and ignores the "
                           "caption. Needs both modalities.")
class CrossAttentionMLP(_Head):
    """The original ``CrossAttentionMLP`` (attention_mlp_with_cnn_baseline cells 10 and 12), flaw included.

    ``Q``, ``K``, ``V`` are single tokens ``[N, 1, attn_dim]``; the ``[N, 1, 1]`` scores are softmaxed
    over one key, so the weight is exactly 1 and the output is ``mlp(attn_fc(value_proj(cnn)))``:
    the text (only in ``Q``) cannot change it.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 attn_dim: int = 256, mlp_hidden: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.attn_dim = attn_dim
        self.query_proj = nn.Linear(text_dim, attn_dim)
        self.key_proj = nn.Linear(cnn_dim, attn_dim)
        self.value_proj = nn.Linear(cnn_dim, attn_dim)
        self.attn_fc = nn.Linear(attn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(mlp_hidden, num_classes),
        )

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        cnn_feat = x[:, :self.cnn_dim]
        clip_feat = x[:, self.cnn_dim:]
        Q = self.query_proj(clip_feat).unsqueeze(1)
        K = self.key_proj(cnn_feat).unsqueeze(1)
        V = self.value_proj(cnn_feat).unsqueeze(1)
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (self.attn_dim ** 0.5), dim=-1)
        return attn_weights, V

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights ``[N, 1, 1]``: exactly 1.0 for every input."""
        return self._attend(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_weights, V = self._attend(x)
        context = torch.matmul(attn_weights, V).squeeze(1)
        out = self.mlp(self.attn_fc(context))
        return out


# --------------------------------------------------------------------------------------------------
# Heads that really fuse (family "fusion")
# --------------------------------------------------------------------------------------------------

def _projection(in_dim: int, d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, d), nn.LayerNorm(d))


class _AttentionBlock(nn.Module):
    """A pre-norm Transformer encoder layer (multi-head self-attention + feed-forward, residuals)
    that can also return its attention weights."""

    def __init__(self, d: int, heads: int, dropout: float, ff_mult: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * d, d))

    def forward(self, t: torch.Tensor, need_weights: bool = False, average_heads: bool = True):
        a = self.norm1(t)
        out, weights = self.attn(a, a, a, need_weights=need_weights, average_attn_weights=average_heads)
        t = t + self.drop(out)
        t = t + self.drop(self.ff(self.norm2(t)))
        return t, weights


@register_head("token_attention", family="fusion", needs_both=True,
               description="Each modality projected to width d (Linear + LayerNorm) as one token, plus a learned [CLS] "
                           "token; multi-head self-attention over the 3 tokens (pre-norm Transformer layers); "
                           "classified from the CLS token. Needs both modalities.")
class TokenAttentionHead(_Head):
    """Self-attention over the modalities as tokens: ``[CLS, cnn, text]`` (see :data:`TOKENS`).

    Each modality is projected to width ``d`` (Linear + LayerNorm); the two projections differ, so
    the tokens need no position or type embedding. ``layers`` pre-norm Transformer layers
    (``heads``-head attention, feed-forward ``ff_mult * d`` with GELU, dropout ``dropout``) run over
    the 3 tokens; the logits are ``Linear(LayerNorm(CLS))``. :meth:`attention_weights` gives how
    much the CLS token attends to itself, the CNN token and the text token, per sample.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 d: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.1, ff_mult: int = 2):
        super().__init__(cnn_dim, text_dim, num_classes)
        if d % heads:
            raise ConfigError(f"token_attention: d={d} must be divisible by heads={heads}")
        if layers < 1:
            raise ConfigError(f"token_attention: layers must be >= 1, got {layers}")
        self.cnn_proj = _projection(cnn_dim, d)
        self.text_proj = _projection(text_dim, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList(_AttentionBlock(d, heads, dropout, ff_mult) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, num_classes)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        cnn, text = x[:, :self.cnn_dim], x[:, self.cnn_dim:]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, self.cnn_proj(cnn).unsqueeze(1), self.text_proj(text).unsqueeze(1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._tokens(x)
        for block in self.blocks:
            t, _ = block(t)
        return self.classifier(self.norm(t[:, 0]))

    def attention_weights(self, x: torch.Tensor, layer: int = -1, average_heads: bool = True) -> torch.Tensor:
        """The CLS token's attention over ``[CLS, cnn, text]`` in layer ``layer`` (default the last):
        ``[N, 3]`` averaged over heads, or ``[N, heads, 3]``; each row sums to 1."""
        t = self._tokens(x)
        n = len(self.blocks)
        wanted = layer % n
        for i, block in enumerate(self.blocks):
            t, weights = block(t, need_weights=i == wanted, average_heads=average_heads)
            if i == wanted:
                return weights[..., 0, :]
        raise AssertionError("unreachable")


@register_head("gated", family="fusion", needs_both=True,
               description="Per-modality projections to width d (Linear + LayerNorm); a learned per-sample gate "
                           "g = sigmoid(W [h_cnn; h_text]) (per dimension, or one scalar) mixes them, "
                           "fused = g*h_cnn + (1-g)*h_text; then Linear(d, 512) - ReLU - Dropout(0.5) - "
                           "Linear(512, C). "
                           "Needs both modalities.")
class GatedHead(_Head):
    """Gated fusion: ``fused = g * h_cnn + (1 - g) * h_text`` with ``g = sigmoid(W [h_cnn; h_text] + b)``.

    ``gate="vector"`` (default): one gate per dimension of the width-``d`` projections, ``g`` is
    ``[N, d]``; ``gate="scalar"``: one gate per sample, ``[N, 1]``. ``g`` near 1 means the sample is
    classified from its CNN features, near 0 from its caption. The classifier after the fusion is
    the ``mlp1`` MLP (hidden 512, ReLU, dropout 0.5). :meth:`gate_values` returns ``g``.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 d: int = 256, hidden_dim: int = 512, dropout: float = 0.5, gate: str = "vector"):
        super().__init__(cnn_dim, text_dim, num_classes)
        if gate not in ("vector", "scalar"):
            raise ConfigError(f"gated: gate must be 'vector' or 'scalar', got {gate!r}")
        self.gate_kind = gate
        self.cnn_proj = _projection(cnn_dim, d)
        self.text_proj = _projection(text_dim, d)
        self.gate = nn.Linear(2 * d, d if gate == "vector" else 1)
        self.classifier = nn.Sequential(
            nn.Linear(d, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def _gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check(x)
        h_cnn = self.cnn_proj(x[:, :self.cnn_dim])
        h_text = self.text_proj(x[:, self.cnn_dim:])
        g = torch.sigmoid(self.gate(torch.cat([h_cnn, h_text], dim=1)))
        return g, h_cnn, h_text

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` in (0, 1): ``[N, d]`` (``gate="vector"``) or ``[N, 1]`` (``"scalar"``);
        the weight of the CNN projection (the text's is ``1 - g``)."""
        return self._gate(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, h_cnn, h_text = self._gate(x)
        return self.classifier(g * h_cnn + (1 - g) * h_text)


def attention_weights(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attention weights of ``head`` on ``x`` (no gradient; the head's train/eval mode is kept).

    The three original attention heads: their softmax weights (``[N, 1]`` or ``[N, 1, 1]``), all
    exactly 1.0. ``token_attention``: the CLS token's attention over ``[CLS, cnn, text]``, ``[N, 3]``
    averaged over heads. Any other head: ConfigError.
    """
    if not hasattr(head, "attention_weights"):
        raise ConfigError(f"{type(head).__name__} has no attention weights; heads with them: "
                          "original_attention, original_self_attention, original_cross_attention, token_attention")
    with torch.no_grad():
        return head.attention_weights(x)


def gate_values(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The gate values of a ``gated`` head on ``x`` (no gradient), in (0, 1)."""
    if not hasattr(head, "gate_values"):
        raise ConfigError(f"{type(head).__name__} has no gate; only the 'gated' head has one")
    with torch.no_grad():
        return head.gate_values(x)


# --------------------------------------------------------------------------------------------------
# Late fusion (no gradient training)
# --------------------------------------------------------------------------------------------------

def _as_proba(p, what: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{what} must be a probability matrix [N, classes], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(f"{what} must hold finite non-negative probabilities")
    return p


def temperature_scale(p: np.ndarray, temperature: float, eps: float = 1e-7) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: ``T > 1`` flattens, ``T < 1`` sharpens; rows sum to 1.
    Probabilities are clipped at ``eps`` first (a one-hot vote would have log 0)."""
    logits = np.log(np.clip(p, eps, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, None))))


def fit_temperature(p: np.ndarray, y: np.ndarray, log_bounds: tuple[float, float] = (-3.0, 3.0)) -> float:
    """The temperature minimising the NLL of ``temperature_scale(p, T)`` on labels ``y``, searched
    over ``log T`` in ``log_bounds`` (bounded scalar minimisation)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: _nll(temperature_scale(p, math.exp(log_t)), y),
                             bounds=log_bounds, method="bounded")
    return float(math.exp(result.x))


class LateFusion:
    """Late fusion of two classifiers' probabilities, fitted on validation only.

    ``p = w * scale(p_cnn, T_cnn) + (1 - w) * scale(p_text, T_text)``, a weighted average of
    probabilities (no softmax after it), each input first temperature-scaled
    (:func:`temperature_scale`) with its temperature fitted on validation by minimising its NLL
    (over ``log T`` in ``log_bounds``). ``p_text`` is any second source: the text-only classifier's
    probabilities, or the VLM vote as probabilities (:func:`fer_utils.study.fusion.vote_proba`, one-hot
    smoothed by epsilon). The weight ``w`` is chosen from ``weights`` (default 0, 0.1, ..., 1) by
    macro F1 on validation; ties go to the lower validation NLL of the fused probabilities, then to
    the first in ``weights``. ``w = 1`` means the text adds nothing (the CNN alone), ``w = 0`` that
    the CNN adds nothing (the text alone).

    Attributes after :meth:`fit`: ``weight`` (float), ``temperatures`` (``(T_cnn, T_text)``, > 0),
    ``scores`` (a DataFrame: weight, val macro F1, val NLL for every candidate weight).
    """

    def __init__(self, weights: Sequence[float] | None = None, log_bounds: tuple[float, float] = (-3.0, 3.0)):
        grid = np.round(np.linspace(0.0, 1.0, 11), 10) if weights is None else np.asarray(weights, dtype=np.float64)
        if grid.ndim != 1 or len(grid) == 0 or (grid < 0).any() or (grid > 1).any():
            raise ConfigError(f"LateFusion weights must be a non-empty list of numbers in [0, 1], got {weights!r}")
        self.grid = grid
        self.log_bounds = tuple(log_bounds)
        self.weight: float | None = None
        self.temperatures: tuple[float, float] | None = None
        self.scores: pd.DataFrame | None = None

    def _inputs(self, p_cnn, p_text) -> tuple[np.ndarray, np.ndarray]:
        p_cnn, p_text = _as_proba(p_cnn, "p_cnn"), _as_proba(p_text, "p_text")
        if p_cnn.shape != p_text.shape:
            raise ValueError(f"p_cnn {p_cnn.shape} and p_text {p_text.shape} must have the same shape")
        return p_cnn, p_text

    def fit(self, p_cnn_val, p_text_val, y_val) -> LateFusion:
        """Fit the temperatures and the weight on validation probabilities and labels."""
        from sklearn.metrics import f1_score

        p_cnn, p_text = self._inputs(p_cnn_val, p_text_val)
        y = np.asarray(y_val).astype(np.int64).ravel()
        if len(y) != len(p_cnn):
            raise ValueError(f"{len(y)} labels but {len(p_cnn)} probability rows")
        k = p_cnn.shape[1]
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels must be class indices 0..{k - 1}")
        self.temperatures = (fit_temperature(p_cnn, y, self.log_bounds), fit_temperature(p_text, y, self.log_bounds))
        a, b = temperature_scale(p_cnn, self.temperatures[0]), temperature_scale(p_text, self.temperatures[1])
        rows = []
        for w in self.grid:
            p = w * a + (1 - w) * b
            rows.append({"weight": float(w),
                         "macro_f1": float(f1_score(y, p.argmax(1), labels=list(range(k)), average="macro",
                                                    zero_division=0)),
                         "nll": _nll(p, y)})
        self.scores = pd.DataFrame(rows)
        best = min(range(len(rows)), key=lambda i: (-round(rows[i]["macro_f1"], 12), rows[i]["nll"], i))
        self.weight = rows[best]["weight"]
        return self

    def predict_proba(self, p_cnn, p_text) -> np.ndarray:
        """The fused probabilities ``[N, classes]`` (rows sum to 1)."""
        if self.weight is None:
            raise RuntimeError("LateFusion is not fitted: call fit(p_cnn_val, p_text_val, y_val) first")
        p_cnn, p_text = self._inputs(p_cnn, p_text)
        return (self.weight * temperature_scale(p_cnn, self.temperatures[0])
                + (1 - self.weight) * temperature_scale(p_text, self.temperatures[1]))

    def predict(self, p_cnn, p_text) -> np.ndarray:
        """The fused class indices."""
        return self.predict_proba(p_cnn, p_text).argmax(1)

    def __repr__(self) -> str:
        if self.weight is None:
            return "LateFusion(unfitted)"
        t_cnn, t_text = self.temperatures
        return f"LateFusion(weight={self.weight:g}, temperatures=({t_cnn:.3g}, {t_text:.3g}))"


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
    :class:`LateFusion` (its 3 fitted numbers, no gradient training). Builds each head once per
    width on CPU (torch's global generator is saved and restored)."""
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
    "FAMILIES", "INPUTS", "TOKENS", "HeadInfo", "LateFusion",
    "MLP", "MLP_2Layer", "MLP_3Layer", "MLP_BN", "MLP_BN_2", "MLP_BN_3", "MLP_LL", "MLP_LL2", "MLP_LL3",
    "AttentionWithMLP", "SelfAttentionMLP", "CrossAttentionMLP", "TokenAttentionHead", "GatedHead",
    "attention_weights", "count_parameters", "create_head", "describe_heads", "fit_temperature", "gate_values",
    "head_info", "input_dims", "list_heads", "register_head", "temperature_scale",
]

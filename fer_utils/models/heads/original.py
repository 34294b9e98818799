"""The original student study's fusion heads (family ``original``), reproduced exactly.

Layer sizes, dropouts, activations, BatchNorm placement, forward arithmetic and parameter names
are the original's, so the original ``state_dict`` files load and give bit-identical outputs
(``tests/test_fusion_heads.py`` checks every head against the original source), except that the
CNN width is ``cnn_dim`` instead of the hard-coded 1024 (``x[:, :cnn_dim]``) and the text width
``text_dim`` instead of 768. Class names are the original's; the constructors' defaults are the
original's (1024 + 768 = 1792). The input convention is the registry's
(:mod:`fer_utils.models.heads.registry`): one tensor, CNN features first.

Their flaws are reproduced, not fixed: the three "attention" heads take a softmax over a dimension
of size 1, so the attention weight is exactly 1 for every input
(:func:`fer_utils.models.heads.fusion.attention_weights` shows it), and in ``original_attention``
and ``original_cross_attention`` the text only enters the query, i.e. only that constant weight,
so their output does not depend on the caption at all. ``original_self_attention`` projects the
whole concatenated vector, so it does see the text, but only as a stack of linear layers (its
"attention" is the identity).

The original wrote each MLP out layer by layer; here one builder
(:func:`~fer_utils.models.heads.registry.mlp_layers`) makes them, in the original's layer order,
so the parameter names (``net.0.weight``, ...) and a seeded initialisation stay the original's.
The attention heads keep the original's attribute names (``query_proj``, ``q_proj``, ...), which
differ between them, and therefore their own constructors.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from fer_utils.labels import NUM_CLASSES
from fer_utils.models.heads.registry import Head, mlp_layers, register_head

_ONE_MODALITY = " On one modality: the same MLP on that modality's vector alone."
_LEAKY = functools.partial(nn.LeakyReLU, 0.1)


# --------------------------------------------------------------------------------------------------
# The MLPs
# --------------------------------------------------------------------------------------------------

class _OriginalMLP(Head):
    """Common part of the nine MLP heads: ``self.net``, an MLP (:func:`mlp_layers`) on the whole input."""

    def __init__(self, cnn_dim: int, text_dim: int, num_classes: int, widths: tuple[int, ...],
                 dropouts: tuple[float | None, ...], activation=nn.ReLU, batch_norm: bool = False):
        super().__init__(cnn_dim, text_dim, num_classes)
        self.net = mlp_layers(cnn_dim + text_dim, widths, num_classes, dropouts, activation, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)


@register_head("mlp1", family="original", needs_both=False,
               description="Original MLP: Linear(in, 512) - ReLU - Dropout(0.5) - Linear(512, C)." + _ONE_MODALITY)
class MLP(_OriginalMLP):
    """The original ``MLP`` (cnn_feature_final cell 12)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES, hidden_dim: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes, (hidden_dim,), (0.5,))


@register_head("mlp2", family="original",
               description="Original MLP_2Layer: Linear(in, 512) - ReLU - Dropout(0.5) - Linear(512, 256) - ReLU - "
                           "Linear(256, C)." + _ONE_MODALITY)
class MLP_2Layer(_OriginalMLP):
    """The original ``MLP_2Layer`` (cnn_feature_final cell 18)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (512, 256), (0.5, None))


@register_head("mlp3", family="original",
               description="Original MLP_3Layer: Linear(in, 1024) - ReLU - Dropout(0.5) - Linear(1024, 512) - ReLU - "
                           "Dropout(0.5) - Linear(512, 128) - ReLU - Linear(128, C)." + _ONE_MODALITY)
class MLP_3Layer(_OriginalMLP):
    """The original ``MLP_3Layer`` (cnn_feature_final cells 24 and 28, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (1024, 512, 128), (0.5, 0.5, None))


@register_head("mlp1_bn", family="original",
               description="Original MLP_BN: Linear(in, 512) - BatchNorm1d - ReLU - Dropout(0.2) - Linear(512, C) "
                           "(the trained version; see the class docstring)." + _ONE_MODALITY)
class MLP_BN(_OriginalMLP):
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
        super().__init__(cnn_dim, text_dim, num_classes, (hidden_dim,), (dropout,), batch_norm=True)


@register_head("mlp2_bn", family="original",
               description="Original MLP_BN_2: Linear(in, 512) - BatchNorm1d - ReLU - Dropout(0.2) - Linear(512, 256) "
                           "- BatchNorm1d - ReLU - Linear(256, C)." + _ONE_MODALITY)
class MLP_BN_2(_OriginalMLP):
    """The original ``MLP_BN_2`` (cnn_feature_final cells 36 and 40, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (512, 256), (0.2, None), batch_norm=True)


@register_head("mlp3_bn", family="original",
               description="Original MLP_BN_3: Linear(in, 1024) - BN - ReLU - Dropout(0.2) - Linear(1024, 512) - BN - "
                           "ReLU - Dropout(0.2) - Linear(512, 128) - BN - ReLU - Linear(128, C)." + _ONE_MODALITY)
class MLP_BN_3(_OriginalMLP):
    """The original ``MLP_BN_3`` (cnn_feature_final cells 42 and 46, identical)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (1024, 512, 128), (0.2, 0.2, None), batch_norm=True)


@register_head("mlp1_leaky", family="original",
               description="Original MLP_LL: Linear(in, 512) - LeakyReLU(0.1) - Dropout(0.5) - Linear(512, C)."
                           + _ONE_MODALITY)
class MLP_LL(_OriginalMLP):
    """The original ``MLP_LL`` (cnn_feature_final cell 47)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES, hidden_dim: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes, (hidden_dim,), (0.5,), _LEAKY)


@register_head("mlp2_leaky", family="original",
               description="Original MLP_LL2: Linear(in, 512) - LeakyReLU(0.1) - Dropout(0.5) - Linear(512, 256) - "
                           "LeakyReLU(0.1) - Linear(256, C)." + _ONE_MODALITY)
class MLP_LL2(_OriginalMLP):
    """The original ``MLP_LL2`` (cnn_feature_final cell 50)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (512, 256), (0.5, None), _LEAKY)


@register_head("mlp3_leaky", family="original",
               description="Original MLP_LL3: Linear(in, 1024) - LeakyReLU(0.1) - Dropout(0.5) - Linear(1024, 512) - "
                           "LeakyReLU(0.1) - Dropout(0.5) - Linear(512, 128) - LeakyReLU(0.1) - Linear(128, C)."
                           + _ONE_MODALITY)
class MLP_LL3(_OriginalMLP):
    """The original ``MLP_LL3`` (cnn_feature_final cell 53)."""

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__(cnn_dim, text_dim, num_classes, (1024, 512, 128), (0.5, 0.5, None), _LEAKY)


# --------------------------------------------------------------------------------------------------
# The "attention" heads
# --------------------------------------------------------------------------------------------------

class _OriginalAttention(Head):
    """Common part of the three attention heads: each head's ``_attend(x)`` returns its softmax
    weights and its values ``V``; the weights are a softmax over one element."""

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _text_query_cnn_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Q`` from the text, ``K`` and ``V`` from the CNN features, ``[N, attn_dim]`` each (the
        original's ``query_proj``, ``key_proj``, ``value_proj`` of ``original_attention`` and
        ``original_cross_attention``)."""
        self._check(x)
        cnn_feat = x[:, :self.cnn_dim]
        clip_feat = x[:, self.cnn_dim:]
        return self.query_proj(clip_feat), self.key_proj(cnn_feat), self.value_proj(cnn_feat)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights (``[N, 1]`` of ``original_attention``, ``[N, 1, 1]`` of the other
        two): exactly 1.0 for every input."""
        return self._attend(x)[0]


@register_head("original_attention", family="original", needs_both=True,
               description="Original AttentionWithMLP: query from the text, key and value from the CNN, softmax over a "
                           "size-1 dimension (weight always exactly 1), so the output is MLP(value(CNN)) and ignores "
                           "the caption. Needs both modalities.")
class AttentionWithMLP(_OriginalAttention):
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
        self.mlp = mlp_layers(attn_dim, (mlp_hidden,), num_classes, (0.5,))

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Q, K, V = self._text_query_cnn_key_value(x)
        attn_score = torch.softmax((Q * K).sum(dim=1, keepdim=True), dim=1)
        return attn_score, V

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_score, V = self._attend(x)
        context = attn_score * V
        out = self.mlp(context)
        return out


class _OneTokenAttention(_OriginalAttention):
    """Common part of ``original_self_attention`` and ``original_cross_attention``: single tokens
    ``[N, 1, attn_dim]``, scores ``[N, 1, 1]``, then ``mlp(attn_fc(context))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_weights, V = self._attend(x)
        context = torch.matmul(attn_weights, V).squeeze(1)
        out = self.mlp(self.attn_fc(context))
        return out


@register_head("original_self_attention", family="original", needs_both=True,
               description="Original SelfAttentionMLP: q/k/v projections of the whole concatenated vector as a "
                           "sequence of one token, so the attention weight is always exactly 1 and the head is "
                           "MLP(attn_fc(v(x))): it sees the text, but only through linear layers. Needs both "
                           "modalities.")
class SelfAttentionMLP(_OneTokenAttention):
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
        self.mlp = mlp_layers(attn_dim, (mlp_hidden,), num_classes, (0.5,))

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x = x.unsqueeze(1)
        Q = self.q_proj(x)
        K = self.k_proj(x)
        V = self.v_proj(x)
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (Q.shape[-1] ** 0.5), dim=-1)
        return attn_weights, V


@register_head("original_cross_attention", family="original", needs_both=True,
               description="Original CrossAttentionMLP: query from the text, key and value from the CNN, one key so "
                           "the weight is always exactly 1; the output is MLP(attn_fc(value(CNN))) and ignores the "
                           "caption. Needs both modalities.")
class CrossAttentionMLP(_OneTokenAttention):
    """The original ``CrossAttentionMLP`` (attention_mlp_with_cnn_baseline cells 10 and 12), flaw included.

    ``Q``, ``K``, ``V`` are single tokens ``[N, 1, attn_dim]``; the ``[N, 1, 1]`` scores are softmaxed
    over one key, so the weight is exactly 1 and the output is ``mlp(attn_fc(value_proj(cnn)))``:
    the text (only in ``Q``) cannot change it.
    """

    def __init__(self, cnn_dim: int = 1024, text_dim: int = 768, num_classes: int = NUM_CLASSES,
                 attn_dim: int = 256, mlp_hidden: int = 512):
        super().__init__(cnn_dim, text_dim, num_classes)
        # The same shape as SelfAttentionMLP's constructor, kept apart on purpose: the attribute names
        # (query_proj/key_proj/value_proj there q_proj/k_proj/v_proj) and the projections' input
        # widths are the original's, and its state_dict files need them as they are.
        self.attn_dim = attn_dim
        self.query_proj = nn.Linear(text_dim, attn_dim)
        self.key_proj = nn.Linear(cnn_dim, attn_dim)
        self.value_proj = nn.Linear(cnn_dim, attn_dim)
        self.attn_fc = nn.Linear(attn_dim, attn_dim)
        self.mlp = mlp_layers(attn_dim, (mlp_hidden,), num_classes, (0.5,))

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Q, K, V = (t.unsqueeze(1) for t in self._text_query_cnn_key_value(x))
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (self.attn_dim ** 0.5), dim=-1)
        return attn_weights, V


__all__ = [
    "MLP", "MLP_2Layer", "MLP_3Layer", "MLP_BN", "MLP_BN_2", "MLP_BN_3", "MLP_LL", "MLP_LL2", "MLP_LL3",
    "AttentionWithMLP", "SelfAttentionMLP", "CrossAttentionMLP",
]

"""Fusion heads that really fuse (family ``fusion``), and what they show: attention weights, gates.

Unlike the original study's heads (:mod:`fer_utils.models.heads.original`), whose "attention" is a
softmax over one element, these let the caption change the answer per sample:

- ``token_attention`` (:class:`TokenAttentionHead`): self-attention over a [CLS] token and one
  token per modality; :func:`attention_weights` gives how much the CLS token attends to each.
- ``gated`` (:class:`GatedHead`): a learned per-sample gate mixes the two modalities;
  :func:`gate_values` gives the gate.

Both need both modalities; their input is the registry's (:mod:`fer_utils.models.heads.registry`):
one tensor, CNN features first. :func:`attention_weights` also reads the original attention
heads' (constant) weights: it asks the head, so it needs no import of them.
"""
from __future__ import annotations

import torch
from torch import nn

from fer_utils.errors import ConfigError
from fer_utils.labels import NUM_CLASSES
from fer_utils.models.heads.registry import Head, mlp_layers, register_head


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
class TokenAttentionHead(Head):
    """Self-attention over the modalities as tokens: ``[CLS, cnn, text]``
    (see :data:`fer_utils.models.heads.registry.TOKENS`).

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
class GatedHead(Head):
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
        self.classifier = mlp_layers(d, (hidden_dim,), num_classes, (dropout,))

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


__all__ = ["GatedHead", "TokenAttentionHead", "attention_weights", "gate_values"]

"""An exact shortcut for training VGG on small images: the first dense layer folded.

torchvision's VGG pools the last feature map to 7 x 7 (``AdaptiveAvgPool2d((7, 7))``) before its
first dense layer, ``Linear(512 * 49, 4096)``. Below 64 px the map is 1 x 1, so the pooling copies
one 512-vector 49 times, and the layer computes ``sum_k W_k x`` over its 49 column blocks ``W_k``.
Every block then receives the same gradient ``g x^T``, and with no weight decay Adam, AdamW and SGD
(elementwise functions of the gradient history) give every block the same update ``D``:
``W_k(t) = W_k(0) + D(t)``. Training can therefore keep one ``[4096, 512]`` change ``D`` instead of
102.8 M weights, and compute the layer as ``(sum_k W_k(0) + 49 D) x``: the same model and the same
optimisation, in exact arithmetic, at 1.9x the speed of a whole training step on the CPU (VGG16,
32 px, batch 32: 0.30 against 0.56 s). Results differ from the plain layer only by floating-point
order (less than running the plain layer on one thread instead of two does; tests/test_folding.py).

:func:`fold_replicated_linear` swaps the folded layer in before the optimizer is made and returns a
function that writes ``W_k(0) + D`` back into the original ``Linear`` and restores the modules:
outside ``fit`` the model is always plain torchvision VGG (bundles, feature extraction, serving).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class ReplicatedInputLinear(nn.Module):
    """``linear`` applied to an input that is one ``C``-vector repeated ``copies`` times per
    channel (the flattened ``AdaptiveAvgPool2d`` of a 1 x 1 map), trained as one shared change of
    its ``copies`` column blocks (module docstring). Takes the ``[N, C, 1, 1]`` map or ``[N, C]``."""

    def __init__(self, linear: nn.Linear, copies: int):
        super().__init__()
        out_features, in_features = linear.weight.shape
        if in_features % copies:
            raise ValueError(f"{in_features} inputs are not {copies} copies of one vector")
        self.copies = copies
        self.channels = in_features // copies
        self.linear = [linear]  # a list: kept, not a submodule (its weight is not trained as such)
        weight = linear.weight.detach()
        # flatten order of [N, C, 7, 7] is channel-major: column c * copies + k
        self.register_buffer("base", weight.view(out_features, self.channels, copies).sum(-1), persistent=False)
        self.delta = nn.Parameter(torch.zeros(out_features, self.channels, device=weight.device, dtype=weight.dtype))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.channels:
            raise RuntimeError(f"the folded first dense layer needs VGG's 1 x 1 feature map ({self.channels} "
                               f"values per image, images under 64 px); got {x.shape[1]}: images of another "
                               f"size than the fit was folded for, or TrainConfig(fold_replicated=False)")
        # the value is base + copies * delta, the gradient reaching delta is g x^T: one block's, as
        # in the plain layer (not copies times it, which would change Adam's epsilon and SGD's step)
        weight = self.base + self.copies * self.delta.detach() + (self.delta - self.delta.detach())
        return F.linear(x, weight, self.bias)

    def unfold(self) -> nn.Linear:
        """The original ``Linear`` with the trained change added to each of its blocks."""
        linear = self.linear[0]
        with torch.no_grad():
            out_features = linear.weight.shape[0]
            linear.weight.view(out_features, self.channels, self.copies).add_(self.delta.unsqueeze(-1))
        return linear


def _vgg_parts(model: nn.Module):
    """The ``features`` of a VGG built by the registry (``Sequential(convs, AdaptiveAvgPool2d,
    Flatten, Sequential(Linear, ...))``), else None."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) < 4:
        return None
    pool, flatten, classifier = features[1], features[2], features[3]
    if not (isinstance(pool, nn.AdaptiveAvgPool2d) and isinstance(flatten, nn.Flatten)
            and isinstance(classifier, nn.Sequential) and len(classifier) and isinstance(classifier[0], nn.Linear)):
        return None
    return features


def fold_replicated_linear(model: nn.Module, image_size: int) -> Callable[[], None] | None:
    """Fold VGG's first dense layer for training on ``image_size`` px inputs when that is exact:
    a registry VGG whose last feature map is 1 x 1 at that size and whose first dense layer is
    trained. Returns the function that unfolds it (after training; a second call does nothing),
    or None (model unchanged). The optimizer must not use weight decay (then the blocks' updates
    differ)."""
    features = _vgg_parts(model)
    if features is None or not features[3][0].weight.requires_grad:
        return None
    pool, linear = features[1], features[3][0]
    out_size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
    if None in out_size:
        return None
    copies = out_size[0] * out_size[1]
    param = linear.weight
    probe = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        map_shape = features[0](probe).shape
    model.train(was_training)
    if map_shape[-2:] != (1, 1) or linear.in_features != map_shape[1] * copies:
        return None
    folded = ReplicatedInputLinear(linear, copies)
    features[1] = nn.Identity()
    features[3][0] = folded

    def unfold() -> None:
        if features[3][0] is folded:  # once: a second call must not add the change again
            features[3][0] = folded.unfold()
            features[1] = pool

    return unfold


__all__ = ["ReplicatedInputLinear", "fold_replicated_linear"]

"""Class weights for the cross-entropy loss under class imbalance.

Schemes (:data:`CLASS_WEIGHTS`), with ``n_c`` the training count of class ``c``, ``N`` the
number of training samples and ``K`` the number of classes:

``none``       no weights (``None``)
``inverse``    ``w_c = N / (K * n_c)`` — inverse frequency, scaled so that the weight averaged
               over the *samples* is 1 (``sum_c n_c w_c = N``); the same as scikit-learn's
               ``class_weight="balanced"``
``effective``  effective number of samples (Cui et al., CVPR 2019):
               ``w_c ∝ (1 - beta) / (1 - beta ** n_c)``, scaled so that the weights sum to ``K``

With ``CrossEntropyLoss(weight=w)`` and mean reduction only the ratios between weights matter.
"""
from __future__ import annotations

import numpy as np
import torch

from fer_utils.data.index import class_counts
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS, NUM_CLASSES
from fer_utils.options import CLASS_WEIGHTS



def class_weights(labels, scheme: str, num_classes: int = NUM_CLASSES, beta: float = 0.999) -> torch.Tensor | None:
    """Per-class loss weights (float32 tensor of length ``num_classes``) from training labels.

    ``scheme="none"`` returns ``None``. A class without samples raises :class:`DataError`
    naming it; an unknown scheme or ``beta`` outside (0, 1) raises :class:`ConfigError`.
    """
    if scheme not in CLASS_WEIGHTS:
        raise ConfigError(f"unknown class weight scheme {scheme!r}; expected one of {', '.join(CLASS_WEIGHTS)}")
    if scheme == "none":
        return None
    counts = class_counts(labels, num_classes).astype(np.float64)
    empty = [EMOTIONS[c] if num_classes == NUM_CLASSES else str(c) for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"cannot compute {scheme!r} class weights: no training samples of class {', '.join(empty)}")
    if scheme == "inverse":
        weights = counts.sum() / (num_classes * counts)
    else:
        if not 0 < beta < 1:
            raise ConfigError(f"beta must be in (0, 1), got {beta!r}")
        weights = (1 - beta) / (1 - np.power(beta, counts))
        weights *= num_classes / weights.sum()
    return torch.tensor(weights, dtype=torch.float32)

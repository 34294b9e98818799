"""Class weights against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from fer_utils.data.weights import class_weights
from fer_utils.options import CLASS_WEIGHTS
from fer_utils.errors import ConfigError, DataError

# counts 4, 2, 1, 1 over K = 4 classes, N = 8
LABELS = [0, 0, 0, 0, 1, 1, 2, 3]


def test_none_gives_no_weights():
    assert class_weights(LABELS, "none", num_classes=4) is None
    assert CLASS_WEIGHTS == ("none", "inverse", "effective")


def test_inverse_frequency():
    weights = class_weights(LABELS, "inverse", num_classes=4)
    # w_c = N / (K n_c) = 8 / (4 * [4, 2, 1, 1])
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([0.5, 1.0, 2.0, 2.0])
    assert weights.tolist() == pytest.approx(compute_class_weight("balanced", classes=np.arange(4), y=LABELS))
    assert float((weights * torch.tensor([4.0, 2, 1, 1])).sum()) == pytest.approx(len(LABELS))


def test_effective_number_of_samples():
    beta = 0.5
    # (1 - b) / (1 - b^n): n=4 -> 0.5/0.9375 = 8/15; n=2 -> 0.5/0.75 = 2/3; n=1 -> 1
    raw = np.array([8 / 15, 2 / 3, 1.0, 1.0])
    weights = class_weights(LABELS, "effective", num_classes=4, beta=beta)
    assert weights.tolist() == pytest.approx((raw * 4 / raw.sum()).tolist())
    assert float(weights.sum()) == pytest.approx(4.0)
    default = class_weights(np.repeat(np.arange(7), [1290, 281, 717, 4772, 1982, 705, 2524]), "effective")
    assert default.shape == (7,) and int(default.argmax()) == 1 and int(default.argmin()) == 3


def test_errors():
    with pytest.raises(DataError, match="no training samples of class disgust"):
        class_weights([0, 1, 3, 4, 5, 6], "inverse")
    with pytest.raises(ConfigError, match="none, inverse, effective"):
        class_weights(LABELS, "balanced")
    with pytest.raises(ConfigError, match="beta"):
        class_weights(LABELS, "effective", num_classes=4, beta=1.0)
    with pytest.raises(DataError, match="label 9 outside 0..6"):
        class_weights([9], "inverse")

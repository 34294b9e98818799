"""Metrics against hand-computed values, predictions, and the per-image predictions table."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fer_utils.training.evaluate import evaluate, predict_proba, predictions_frame
from fer_utils.labels import EMOTIONS

# 6 images, 3 classes (supports 3, 2, 1). Worked by hand:
#   class a: tp 2, fp 0, fn 1 -> P 1,   R 2/3, F1 0.8
#   class b: tp 1, fp 1, fn 1 -> P 1/2, R 1/2, F1 0.5
#   class c: tp 1, fp 1, fn 0 -> P 1/2, R 1,   F1 2/3
#   accuracy 4/6; macro F1 (0.8 + 0.5 + 2/3) / 3 = 0.655556;
#   weighted F1 (3 * 0.8 + 2 * 0.5 + 1 * 2/3) / 6 = 0.677778
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]
NAMES = ("a", "b", "c")


def test_metrics_match_hand_computation():
    m = evaluate(Y_TRUE, Y_PRED, labels=NAMES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_probabilities_give_the_same_metrics_and_json():
    proba = np.full((6, 3), 0.1)
    proba[np.arange(6), Y_PRED] = 0.8
    m = evaluate(Y_TRUE, proba, labels=NAMES)
    assert m == evaluate(Y_TRUE, Y_PRED, labels=NAMES)
    assert json.loads(json.dumps(m)) == m  # plain floats, ints and lists only
    assert all(type(v) is float for v in (m["accuracy"], m["macro_f1"], m["weighted_f1"]))


def test_macro_f1_counts_every_class_of_the_label_list():
    m = evaluate([0, 3, 3], [0, 3, 0])  # 7 RAF-DB classes, 5 never seen
    assert list(m["per_class"]) == list(EMOTIONS)
    assert m["per_class"]["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(np.mean([v["f1"] for v in m["per_class"].values()]))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 7)


def test_shape_errors():
    with pytest.raises(ValueError, match="columns"):
        evaluate(Y_TRUE, np.zeros((6, 7)), labels=NAMES)
    with pytest.raises(ValueError, match="6 true labels but 5"):
        evaluate(Y_TRUE, Y_PRED[:5], labels=NAMES)


def test_predictions_frame():
    proba = np.eye(7)[[0, 3, 6]] * 0.7 + 0.3 / 7
    frame = predictions_frame(["x1", "x2", "x3"], [0, 4, 6], proba)
    assert list(frame.columns) == ["id", "true", "predicted", "true_name", "predicted_name",
                                   *(f"p_{e}" for e in EMOTIONS)]
    assert frame["predicted"].tolist() == [0, 3, 6]
    assert frame["true_name"].tolist() == ["surprise", "sadness", "neutral"]
    assert frame["predicted_name"].tolist() == ["surprise", "happiness", "neutral"]
    assert frame.filter(like="p_").sum(axis=1).to_numpy() == pytest.approx(1.0)


def test_predict_proba_keeps_order_and_matches_softmax():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    x = torch.randn(10, 3, 2, 2)
    proba = predict_proba(model, TensorDataset(x, torch.zeros(10, dtype=torch.long)), batch_size=4,
                          device="cpu", num_workers=0)
    assert proba.shape == (10, 7) and proba.dtype == np.float32
    with torch.no_grad():
        expected = model(x).softmax(1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-6, atol=1e-7)

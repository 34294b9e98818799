"""McNemar's test, bootstrap intervals and Holm's correction against known cases."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from fer_utils.training.evaluate import evaluate
from fer_utils.study.experiment import score_test
from fer_utils.training.stats import bootstrap_ci, holm, mcnemar


def disagreement_case(b: int, c: int, both_right: int = 20, both_wrong: int = 5):
    """Labels and two prediction vectors with exactly b (A right, B wrong) and c (A wrong, B right)."""
    y = np.zeros(b + c + both_right + both_wrong, dtype=int)
    a_right = np.r_[np.ones(b), np.zeros(c), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    b_right = np.r_[np.zeros(b), np.ones(c), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


def test_mcnemar_exact_textbook_case():
    result = mcnemar(*disagreement_case(10, 2))
    assert (result["b"], result["c"]) == (10, 2)
    assert result["method"] == "exact binomial"
    # two-sided binomial: 2 * P(X <= 2 | n = 12, p = 1/2) = 2 * (1 + 12 + 66) / 4096 = 0.0386
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert round(result["p_value"], 4) == 0.0386


def test_mcnemar_chi_square_with_continuity_correction():
    result = mcnemar(*disagreement_case(25, 10))
    assert result["method"] == "chi-square with continuity correction"
    assert result["statistic"] == pytest.approx((abs(25 - 10) - 1) ** 2 / 35) == pytest.approx(5.6)
    assert result["p_value"] == pytest.approx(0.01796, abs=1e-5)


def test_mcnemar_choice_override_and_no_disagreement():
    assert mcnemar(*disagreement_case(25, 10), exact=True)["method"] == "exact binomial"
    assert mcnemar(*disagreement_case(10, 2), exact=False)["statistic"] == pytest.approx((10 - 2 - 1) ** 2 / 12)
    same = mcnemar(*disagreement_case(0, 0))
    assert (same["b"], same["c"], same["p_value"]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="lengths differ"):
        mcnemar([0, 1], [0, 1], [0])


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y = rng.choice(7, size=400, p=[0.1, 0.02, 0.06, 0.39, 0.16, 0.06, 0.21])
    pred = np.where(rng.random(400) < 0.75, y, rng.integers(0, 7, 400))
    return y, pred


def test_bootstrap_accuracy_interval(predictions):
    y, pred = predictions
    point, low, high = bootstrap_ci(y, pred, "accuracy", n_boot=2000, seed=1)
    assert point == pytest.approx(np.mean(y == pred))
    assert low < point < high
    se = np.sqrt(point * (1 - point) / len(y))  # normal approximation of the 95 % width
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


@pytest.mark.parametrize("rare_class", [False, True])
def test_bootstrap_f1_matches_sklearn_on_every_resample(predictions, rare_class):
    """The vectorised F1 equals sklearn's (fixed label list) on the same resamples (same seed).

    With ``rare_class`` a class has a single image, so about a third of the resamples lack it
    entirely: it then scores 0, as sklearn does for a listed label with no samples.
    """
    y, pred = predictions
    if rare_class:
        y, pred = np.r_[y[:19] % 2, 2], np.r_[pred[:19] % 2, 2]
    classes = np.unique(np.r_[y, pred])
    for metric, average in (("macro_f1", "macro"), ("weighted_f1", "weighted")):
        def sklearn_metric(t, p, average=average):
            return f1_score(t, p, labels=classes, average=average, zero_division=0)

        fast = bootstrap_ci(y, pred, metric, n_boot=300, seed=2)
        slow = bootstrap_ci(y, pred, sklearn_metric, n_boot=300, seed=2)
        assert fast == pytest.approx(slow, abs=1e-12)
        assert fast[0] == pytest.approx(f1_score(y, pred, average=average))


def test_bootstrap_degenerate_and_seeded(predictions):
    y, pred = predictions
    assert bootstrap_ci(y, y, "accuracy") == (1.0, 1.0, 1.0)
    assert bootstrap_ci(y, y, "macro_f1") == (1.0, 1.0, 1.0)
    assert bootstrap_ci(y, pred, "macro_f1", seed=5) == bootstrap_ci(y, pred, "macro_f1", seed=5)
    assert bootstrap_ci(y, pred, "macro_f1", seed=5) != bootstrap_ci(y, pred, "macro_f1", seed=6)
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci(y, pred, "auc")


@pytest.fixture
def absent_class():
    """Labels and predictions in which class 1 (fear) is neither true nor predicted."""
    rng = np.random.default_rng(3)
    present = [0, 2, 3, 4, 5, 6]
    y = rng.choice(present, size=300)
    pred = np.where(rng.random(300) < 0.85, y, rng.choice(present, size=300))
    return y, pred


def test_score_test_intervals_bracket_the_reported_f1_when_a_class_is_absent(absent_class):
    """The run record's interval is about the number it stands beside: evaluate() averages macro
    F1 over all 7 classes (0 for the absent one), so the resamples must too."""
    y, pred = absent_class
    scored = score_test(y, np.eye(7)[pred], n_bootstrap=300)
    assert scored["macro_f1"] == pytest.approx(f1_score(y, pred, labels=range(7), average="macro", zero_division=0))
    for metric in ("macro_f1", "weighted_f1"):
        low, high = scored["ci95"][metric]
        assert low <= scored[metric] <= high


def test_bootstrap_over_a_fixed_class_set_has_evaluates_point_estimate(absent_class):
    y, pred = absent_class
    reported = evaluate(y, pred)
    for metric in ("macro_f1", "weighted_f1"):
        point, low, high = bootstrap_ci(y, pred, metric, n_boot=300, seed=0, num_classes=7)
        assert point == pytest.approx(reported[metric], abs=1e-12)
        assert low <= point <= high
    # without a fixed class set the macro F1 averages over the 6 classes present: a larger number
    assert bootstrap_ci(y, pred, "macro_f1", n_boot=10)[0] == pytest.approx(reported["macro_f1"] * 7 / 6)
    with pytest.raises(ValueError, match="num_classes=3"):
        bootstrap_ci(y, pred, "macro_f1", num_classes=3)


def test_bootstrap_over_a_fixed_class_set_matches_sklearn_on_every_resample(absent_class):
    y, pred = absent_class
    for metric, average in (("macro_f1", "macro"), ("weighted_f1", "weighted")):
        def sklearn_metric(t, p, average=average):
            return f1_score(t, p, labels=range(7), average=average, zero_division=0)

        fast = bootstrap_ci(y, pred, metric, n_boot=200, seed=2, num_classes=7)
        slow = bootstrap_ci(y, pred, sklearn_metric, n_boot=200, seed=2)
        assert fast == pytest.approx(slow, abs=1e-12)


def test_holm_step_down_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum
    # 0.02, 0.03, 0.06, 0.06; back in the given order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])   # capped at 1
    assert holm([0.2, 0.2]) == pytest.approx([0.4, 0.4])                 # ties
    assert holm([0.04]) == pytest.approx([0.04]) and len(holm([])) == 0  # one test: unchanged
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.5])


def test_macro_f1_equals_evaluate_on_random_and_degenerate_predictions():
    from fer_utils.training.evaluate import evaluate
    from fer_utils.training.stats import macro_f1

    rng = np.random.default_rng(4)
    for _ in range(50):
        y = rng.integers(0, 7, rng.integers(1, 60))
        pred = rng.integers(0, 7, len(y)) if rng.random() < 0.7 else np.full(len(y), rng.integers(0, 7))
        assert macro_f1(y, pred, 7) == evaluate(y, pred)["macro_f1"]

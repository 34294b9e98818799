"""Uncertainty and significance: percentile bootstrap confidence intervals, McNemar's test and
Holm's correction for testing several pairs at once.

Flaw 6 of the original study (one run, no interval, no test) is answered here: every reported
test-set metric gets a bootstrap interval over test images, and two models evaluated on the same
images are compared with McNemar's test on their disagreements and with a paired bootstrap
interval of their difference in a metric; :func:`holm` adjusts the p-values of several such
tests so that the chance of any false "significant" stays at most alpha.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as sps

MetricFn = Callable[[np.ndarray, np.ndarray], float]
SCORES: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1")
"""The named metrics the bootstrap computes vectorised: the headline test scores of every run."""
EXACT_BELOW = 25
"""McNemar: use the exact binomial test when the number of disagreements b + c is below this."""
_CHUNK = 256  # bootstrap resamples per vectorised step (bounds memory to _CHUNK x N indices)


def _f1_from_confusions(conf: np.ndarray, average: str) -> np.ndarray:
    """Macro/weighted F1 of a stack of confusion matrices ``[B, K, K]`` (rows true, columns predicted).

    Per class F1 = 2 tp / (2 tp + fp + fn), and 0 when a class has no true and no predicted sample
    (sklearn's ``zero_division=0`` with a fixed label list).
    """
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    denom = conf.sum(2) + conf.sum(1)  # (tp + fn) + (tp + fp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if average == "macro":
        return f1.mean(1)
    support = conf.sum(2)
    return (f1 * support).sum(1) / support.sum(1)


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    """Macro F1 over classes ``0..num_classes-1`` (a class with no true and no predicted sample
    scores 0, as sklearn's ``zero_division=0`` with that label list), from one confusion matrix:
    the same number as :func:`fer_utils.training.evaluate.evaluate`'s at a fraction of the cost (a
    training loop's per-epoch validation took 13 ms with sklearn, well under 1 ms here)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    conf = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return float(_f1_from_confusions(conf.reshape(1, num_classes, num_classes), "macro")[0])


def _class_codes(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int]:
    """``(codes of y_true then y_pred, number of classes K)``: the labels themselves with a fixed
    ``num_classes`` (classes ``0..K-1``), else indices into the classes present in either."""
    labels = np.concatenate([y_true, y_pred])
    if num_classes is None:
        classes, codes = np.unique(labels, return_inverse=True)
        return codes, len(classes)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"with num_classes={num_classes} labels must be integers 0..{num_classes - 1}, "
                         f"got values from {labels.min()} to {labels.max()}")
    return labels, num_classes


def _vectorised(metric: str, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray,
                num_classes: int | None) -> np.ndarray:
    """``metric`` on each row of resample indices ``idx [B, N]``."""
    if metric == "accuracy":
        return (y_true == y_pred)[idx].mean(1)
    codes, k = _class_codes(y_true, y_pred, num_classes)
    pair = codes[: len(y_true)] * k + codes[len(y_true):]  # (true, predicted) cell of each image
    offsets = (np.arange(len(idx)) * k * k)[:, None]
    conf = np.bincount((pair[idx] + offsets).ravel(), minlength=len(idx) * k * k).reshape(len(idx), k, k)
    return _f1_from_confusions(conf, "macro" if metric == "macro_f1" else "weighted")


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need equally many (>0) true and predicted labels, got {len(y_true)} and {len(y_pred)}")
    return y_true, y_pred


def _metric_on_resamples(metric: str | MetricFn, y_true: np.ndarray, y_pred: np.ndarray,
                         num_classes: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """``f(idx [B, N]) -> [B]``: the metric on each row of resample indices."""
    if callable(metric):
        return lambda idx: np.array([metric(y_true[i], y_pred[i]) for i in idx], dtype=np.float64)
    if metric in SCORES:
        return lambda idx: _vectorised(metric, y_true, y_pred, idx, num_classes)
    raise ValueError(f"metric must be one of {', '.join(map(repr, SCORES))} or a callable, got {metric!r}")


def _percentile_bootstrap(compute: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, alpha: float,
                          seed: int) -> tuple[float, float, float]:
    """``(point, low, high)`` of a statistic ``compute`` over ``n`` images resampled ``n_boot`` times."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    point = float(compute(np.arange(n)[None, :])[0])
    rng = np.random.default_rng(seed)
    values = np.concatenate([compute(rng.integers(0, n, size=(min(_CHUNK, n_boot - done), n)))
                             for done in range(0, n_boot, _CHUNK)])
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(low), float(high)


def bootstrap_ci(y_true, y_pred, metric: str | MetricFn = "accuracy", n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0, num_classes: int | None = None) -> tuple[float, float, float]:
    """``(point, low, high)``: the metric and its percentile bootstrap ``1 - alpha`` interval.

    Images are resampled with replacement ``n_boot`` times (seeded, so repeatable). ``metric`` is
    ``"accuracy"``, ``"macro_f1"``, ``"weighted_f1"`` (vectorised with NumPy) or a callable
    ``f(y_true, y_pred) -> float`` (called once per resample).

    ``num_classes`` fixes the classes the F1 metrics average over to ``0..num_classes-1`` (labels
    must be those integers), as ``sklearn.metrics.f1_score(labels=range(num_classes),
    zero_division=0)`` and :func:`fer_utils.training.evaluate.evaluate` do: a class never true nor
    predicted scores F1 0. Pass it whenever the point estimate you report counts every class,
    or the interval brackets another number. ``None`` averages over the classes that occur in
    the full ``y_true`` or ``y_pred`` (``f1_score``'s default). Weighted F1 does not depend on
    it (an absent class has weight 0); accuracy and callables ignore it.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    compute = _metric_on_resamples(metric, y_true, y_pred, num_classes)
    return _percentile_bootstrap(compute, len(y_true), n_boot, alpha, seed)


def paired_bootstrap(y_true, pred_a, pred_b, metric: str | MetricFn = "macro_f1", n_boot: int = 1000,
                     alpha: float = 0.05, seed: int = 0, num_classes: int | None = None) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``metric(A) - metric(B)`` on the same images and its paired
    percentile bootstrap ``1 - alpha`` interval.

    Each resample draws one set of images and scores both models on it, so the interval reflects
    the uncertainty of the *difference* (far narrower than comparing two separate intervals when
    the models agree on most images). An interval that excludes 0 says the difference is unlikely
    to be resampling noise. Same ``metric`` and ``num_classes`` choices as :func:`bootstrap_ci`
    (with ``num_classes=None`` each model's F1 averages over the classes in ``y_true`` and its
    own predictions).
    """
    y_true, pred_a = _check_pair(y_true, pred_a)
    _, pred_b = _check_pair(y_true, pred_b)
    score_a = _metric_on_resamples(metric, y_true, pred_a, num_classes)
    score_b = _metric_on_resamples(metric, y_true, pred_b, num_classes)
    return _percentile_bootstrap(lambda idx: score_a(idx) - score_b(idx), len(y_true), n_boot, alpha, seed)


def paired_bootstrap_seeds(y_true, preds_a, preds_b, metric: str | MetricFn = "macro_f1", n_boot: int = 1000,
                           alpha: float = 0.05, seed: int = 0, num_classes: int | None = None) -> dict:
    """The mean over seeds of ``metric(A_s) - metric(B_s)`` on the same images, with its paired
    percentile-bootstrap interval and a two-sided bootstrap p-value.

    ``preds_a`` and ``preds_b`` are lists of prediction vectors, one per seed, paired by position
    (seed s of A against seed s of B). Each resample draws one set of test images and scores every
    seed of both models on it, so the interval covers the resampling of images with the seeds'
    spread averaged in. ``p_value`` is ``2 * min(share of resampled differences <= 0, share >= 0)``
    (at most 1; at least ``1 / n_boot`` where no resample crosses 0, never an exact 0).
    Returns ``{"difference", "low", "high", "p_value", "seeds", "n"}``.
    """
    preds_a, preds_b = list(preds_a), list(preds_b)
    if not preds_a or len(preds_a) != len(preds_b):
        raise ValueError(f"need as many (>0) seeds of A as of B, got {len(preds_a)} and {len(preds_b)}")
    y_true = np.asarray(y_true).ravel()
    scorers = [(_metric_on_resamples(metric, *_check_pair(y_true, a), num_classes),
                _metric_on_resamples(metric, *_check_pair(y_true, b), num_classes)) for a, b in zip(preds_a, preds_b)]

    def difference(idx: np.ndarray) -> np.ndarray:
        return np.mean([score_a(idx) - score_b(idx) for score_a, score_b in scorers], axis=0)

    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    point = float(difference(np.arange(len(y_true))[None, :])[0])
    rng = np.random.default_rng(seed)
    values = np.concatenate([difference(rng.integers(0, len(y_true), size=(min(_CHUNK, n_boot - done), len(y_true))))
                             for done in range(0, n_boot, _CHUNK)])
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p_value = min(1.0, max(2 * min((values <= 0).mean(), (values >= 0).mean()), 1 / n_boot))
    return {"difference": point, "low": float(low), "high": float(high), "p_value": float(p_value),
            "seeds": len(preds_a), "n": int(len(y_true))}


def mcnemar(y_true, pred_a, pred_b, exact: bool | None = None) -> dict:
    """McNemar's test of two classifiers on the same images.

    ``b`` = images A gets right and B wrong, ``c`` = A wrong and B right. ``exact=None`` picks the
    exact two-sided binomial test (``scipy.stats.binomtest(b, b + c, 0.5)``, statistic = min(b, c))
    when ``b + c < 25``, else the chi-square test with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom. No disagreements -> p = 1.
    """
    y_true, pred_a, pred_b = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError(f"lengths differ: {len(y_true)} true, {len(pred_a)} and {len(pred_b)} predictions")
    right_a, right_b = pred_a == y_true, pred_b == y_true
    b, c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    use_exact = (b + c < EXACT_BELOW) if exact is None else bool(exact)
    if b + c == 0:
        statistic, p_value = 0.0, 1.0
    elif use_exact:
        statistic, p_value = float(min(b, c)), float(sps.binomtest(b, b + c, 0.5).pvalue)
    else:
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p_value = float(sps.chi2.sf(statistic, df=1))
    method = "exact binomial" if use_exact else "chi-square with continuity correction"
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": min(p_value, 1.0), "method": method,
            "n": int(len(y_true))}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given (family-wise error rate control).

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of
    the i-th is ``max over j <= i of min(1, (m - j + 1) * p_(j))``: the smallest is multiplied by
    ``m``, the next by ``m - 1``, ..., and adjusted values never decrease along the sorted order.
    Rejecting where the adjusted value is ``<= alpha`` keeps the chance of one or more false
    rejections among the ``m`` tests at most ``alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted

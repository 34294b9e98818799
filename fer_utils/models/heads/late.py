"""Late fusion: two classifiers' probabilities combined with a weight and temperatures fitted on
validation, without gradient training.

Late fusion is not a head (:mod:`fer_utils.models.heads.registry` does not list it, though
``describe_heads`` gives it a row): :class:`LateFusion` takes the probabilities of a CNN-only
classifier and of a second source (the text-only classifier, or the VLM vote as probabilities)
and fits three numbers on validation only, two temperatures and a weight.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fer_utils.errors import ConfigError


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


__all__ = ["LateFusion", "fit_temperature", "temperature_scale"]

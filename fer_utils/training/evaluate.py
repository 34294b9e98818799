"""Predictions and the study's metrics: accuracy, macro and weighted F1, per-class scores, confusion.

Every number returned is a plain Python ``float``/``int``/``list`` so that ``json.dump`` of the
result is the run record's ``metrics.json`` without conversion.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import Dataset

from fer_utils.labels import EMOTIONS
from fer_utils.models.runtime import batch_transform_of, batched_forward, make_loader, resolve_device


def predict_proba(model: nn.Module, dataset: Dataset, batch_size: int = 64, device: str = "auto",
                  num_workers: int | str = "auto", amp: bool = False) -> np.ndarray:
    """Softmax probabilities ``[N, num_classes]`` (float32) of ``model`` on ``dataset``, in order.

    The model is put in eval mode and moved to ``device``. ``amp`` runs under autocast
    (bfloat16/float16); probabilities are always returned in float32. Images of a
    :class:`~fer_utils.data.dataset.FERDataset` become model inputs by its evaluation transform, on ``device``.
    """
    device = resolve_device(device)
    model.eval().to(device)
    loader = make_loader(dataset, batch_size, device, num_workers)
    logits, _ = batched_forward(model, loader, device, amp=amp, transform=batch_transform_of(dataset))
    return logits.softmax(1).numpy()


def _as_predictions(proba_or_pred, n_classes: int) -> np.ndarray:
    values = np.asarray(proba_or_pred)
    if values.ndim == 2:
        if values.shape[1] != n_classes:
            raise ValueError(f"probabilities have {values.shape[1]} columns, expected {n_classes} classes")
        return values.argmax(1)
    if values.ndim != 1:
        raise ValueError(f"expected predicted labels [N] or probabilities [N, C], got shape {values.shape}")
    return values.astype(np.int64)


def evaluate(y_true, proba_or_pred, labels: Sequence[str] = EMOTIONS) -> dict:
    """The study's metrics of predictions against true labels (ints indexing ``labels``).

    ``proba_or_pred`` is either predicted labels ``[N]`` or scores ``[N, C]`` (argmax taken).
    Returns ``n``, ``accuracy``, ``macro_f1``, ``weighted_f1``, ``per_class`` (class name ->
    precision, recall, f1, support) and ``confusion_matrix`` (rows = true, columns = predicted,
    in ``labels`` order). Macro F1 averages over all ``labels`` classes; a class that is never
    predicted has precision 0 (sklearn's ``zero_division=0``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = _as_predictions(proba_or_pred, len(labels))
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("cannot evaluate zero predictions")
    classes = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def predictions_frame(ids, y_true, proba, labels: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """One row per image: ``id, true, predicted, true_name, predicted_name, p_<class>...``."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if proba.ndim != 2 or proba.shape[1] != len(labels):
        raise ValueError(f"probabilities must have shape [N, {len(labels)}], got {proba.shape}")
    if not len(ids) == len(y_true) == len(proba):
        raise ValueError(f"lengths differ: {len(ids)} ids, {len(y_true)} labels, {len(proba)} probability rows")
    predicted = proba.argmax(1)
    names = np.asarray(labels, dtype=object)
    frame = pd.DataFrame({"id": list(ids), "true": y_true, "predicted": predicted,
                          "true_name": names[y_true], "predicted_name": names[predicted]})
    for k, name in enumerate(labels):
        frame[f"p_{name}"] = proba[:, k]
    return frame

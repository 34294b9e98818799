"""The fusion study: do caption features add anything to a CNN's, measured so it can be trusted.

Inputs are the CNN's penultimate features (a model bundle of the CNN baselines, extracted through
the feature cache) and the caption embeddings (:mod:`fer_utils.vlm.pipeline`, cached), joined by
image id (:func:`align`: a missing id is an error). A head's input is built by
:func:`fer_utils.models.heads.registry.fuse`: one modality (``cnn`` or ``text``) L2-normalised per
image, or both (``fused``), concatenated as the original did (``concat_l2``) or normalised per
modality (``modality_l2``).

:func:`run_fusion` trains every head of the config on CNN-only, text-only and fused inputs with
the same budget and seeds (heads from :mod:`fer_utils.models.heads`, trained by the project's
``fit`` on cached arrays, selected on validation only, the test split read once per head), adds
late fusion, the controls that detect spurious gains (captions shuffled across images; one
constant caption for every image, :data:`fer_utils.vlm.prompts.CONSTANT_CAPTION`) and an
informativeness sweep (simulated captions of accuracy p), and compares every fused variant with
the CNN-only head on the same test images
(:func:`compare_to_cnn`: the paired bootstrap over images with the seeds averaged in, Holm's
correction across variants, McNemar on the first seed).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from fer_utils.errors import DataError
from fer_utils.training.evaluate import evaluate, predict_proba
from fer_utils.labels import EMOTIONS, NUM_CLASSES
from fer_utils.training.stats import holm, mcnemar, paired_bootstrap_seeds
from fer_utils.training.train import TrainConfig

MAX_NAMED = 5


def align(index: pd.DataFrame, ids: Sequence[str], array: np.ndarray, what: str) -> np.ndarray:
    """The rows of ``array`` (one per id of ``ids``) in ``index``'s id order; an index id without a
    row, or an id present twice, is a :class:`DataError` naming ``what`` and the ids."""
    ids = [str(i) for i in ids]
    if len(ids) != len(array):
        raise DataError(f"{what}: {len(ids)} ids but {len(array)} rows")
    position: dict[str, int] = {}
    for i, name in enumerate(ids):
        if name in position:
            raise DataError(f"{what}: image id {name!r} appears twice")
        position[name] = i
    wanted = index["id"].astype(str).tolist()
    missing = [name for name in wanted if name not in position]
    if missing:
        named = ", ".join(map(repr, missing[:MAX_NAMED])) + (f" and {len(missing) - MAX_NAMED} more"
                                                             if len(missing) > MAX_NAMED else "")
        raise DataError(f"{what}: no row for {len(missing)} of the {len(wanted)} images: {named}")
    return np.asarray(array)[[position[name] for name in wanted]]


@dataclasses.dataclass
class FusionData:
    """Everything the heads train on, aligned to ``index`` (id, label, split)."""

    index: pd.DataFrame
    cnn: np.ndarray
    text: np.ndarray
    data: dict                      # the data record
    cnn_own_test_proba: np.ndarray | None = None   # the CNN's own classifier on the test split

    def split(self, name: str) -> np.ndarray:
        return (self.index["split"] == name).to_numpy()

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(dtype=np.int64)

    @property
    def test_ids(self) -> list[str]:
        return self.index.loc[self.split("test"), "id"].astype(str).tolist()


@dataclasses.dataclass
class HeadRun:
    """One head trained on one input with one seed."""

    variant: str                    # main | late | control:<name> | sweep:p=<p>
    head: str
    inputs: str
    seed: int
    val_macro_f1: float
    metrics: dict                   # test metrics (fer_utils.training.evaluate)
    test_pred: np.ndarray
    test_proba: np.ndarray
    val_proba: np.ndarray | None = None
    epochs_run: int | None = None
    seconds: float = 0.0

    def row(self) -> dict:
        return {"variant": self.variant, "head": self.head, "inputs": self.inputs, "seed": self.seed,
                "val_macro_f1": self.val_macro_f1, "accuracy": self.metrics["accuracy"],
                "macro_f1": self.metrics["macro_f1"], "weighted_f1": self.metrics["weighted_f1"],
                "epochs_run": self.epochs_run, "seconds": self.seconds}


def _datasets(x: np.ndarray, fd: FusionData) -> dict[str, TensorDataset]:
    y = torch.tensor(fd.labels)                       # copies: the arrays may be read-only views
    x = torch.tensor(np.asarray(x, dtype=np.float32))
    masks = {name: torch.tensor(fd.split(name)) for name in ("train", "val", "test")}
    return {name: TensorDataset(x[mask], y[mask]) for name, mask in masks.items()}


def train_head(name: str, x: np.ndarray, fd: FusionData, cnn_dim: int, text_dim: int, seed: int,
               tcfg: TrainConfig, variant: str = "main", inputs: str = "fused", return_model: bool = False):
    """Train head ``name`` on ``x`` (train split), early-stop and select on val, test once; a
    :class:`HeadRun` (and, with ``return_model``, ``(model, run)``)."""
    from fer_utils.study.experiment import fit_and_score
    from fer_utils.models.heads.registry import create_head

    torch.manual_seed(seed)
    model = create_head(name, cnn_dim=cnn_dim, text_dim=text_dim, num_classes=NUM_CLASSES)
    sets = _datasets(x, fd)
    tcfg = dataclasses.replace(tcfg, seed=seed)
    start = time.perf_counter()
    run = fit_and_score(model, sets["train"], sets["val"], sets["test"], fd.test_ids,
                        fd.labels[fd.split("test")], tcfg, fd.data, n_bootstrap=0, progress=False)
    seconds = time.perf_counter() - start
    proba = run.predictions[[f"p_{c}" for c in EMOTIONS]].to_numpy()
    val_proba = predict_proba(model, sets["val"], batch_size=tcfg.batch_size, device=tcfg.device)
    result = HeadRun(variant, name, inputs, seed, run.metrics["val_macro_f1"], run.metrics,
                     proba.argmax(1), proba, val_proba, run.metrics["epochs_run"], seconds)
    return (model, result) if return_model else result


def head_inputs(name: str, wanted: Sequence[str]) -> list[str]:
    """The inputs of ``wanted`` that head ``name`` accepts (heads that need both modalities: fused only)."""
    from fer_utils.models.heads.registry import head_info

    needs_both = head_info(name).needs_both
    return [i for i in wanted if i == "fused" or not needs_both]


def late_fusion(p_cnn: HeadRun, p_other_val: np.ndarray, p_other_test: np.ndarray, fd: FusionData,
                head: str, seed: int) -> tuple[HeadRun, Any]:
    """Late fusion of the CNN-only head's probabilities with another source's (weights and
    temperatures fitted on validation); returns the run and the fitted combiner."""
    from fer_utils.models.heads.late import LateFusion

    combiner = LateFusion().fit(p_cnn.val_proba, p_other_val, fd.labels[fd.split("val")])
    test_proba = combiner.predict_proba(p_cnn.test_proba, p_other_test)
    val_proba = combiner.predict_proba(p_cnn.val_proba, p_other_val)
    y_val, y_test = fd.labels[fd.split("val")], fd.labels[fd.split("test")]
    run = HeadRun("late", head, "fused", seed, evaluate(y_val, val_proba)["macro_f1"], evaluate(y_test, test_proba),
                  test_proba.argmax(1), test_proba, val_proba)
    return run, combiner


def vote_proba(votes: Sequence, epsilon: float = 0.1) -> np.ndarray:
    """The VLM vote as probabilities: ``1 - epsilon`` on the voted class and the rest spread evenly;
    a caption without an emotion word is uniform."""
    out = np.full((len(votes), NUM_CLASSES), 1.0 / NUM_CLASSES)
    for i, vote in enumerate(votes):
        if vote is not None and not pd.isna(vote):
            out[i] = epsilon / (NUM_CLASSES - 1)
            out[i, int(vote)] = 1 - epsilon
    return out


def reference_variant(variant: str) -> str:
    """The variant whose CNN-only runs a fused variant is compared with: its own CNN input for the
    leakage variants (``leakage:<source>/<text>`` against ``leakage:<source>``), else the main grid."""
    if variant.startswith("leakage:"):
        return variant.split("/", 1)[0]
    if variant == "original":
        return "original"
    return "main"


def compare_to_cnn(runs: Sequence[HeadRun], fd: FusionData, fallback: str = "mlp1", n_bootstrap: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Each (variant, head) of the fused ``runs`` against the same head trained on CNN features
    alone (of the :func:`reference_variant`, same seed, same test images); a head that needs both
    modalities, or late fusion, against the ``fallback`` head's CNN-only run. Mean difference in macro F1 (and
    weighted F1, accuracy) over the seeds with its paired-bootstrap 95 % interval and p-value,
    Holm-adjusted over the rows of each variant family (main heads, late fusion, controls, sweep);
    McNemar on the first seed; ``classes_predicted``, the fewest distinct classes the fused head
    predicted on any seed (1: collapsed), and ``same_predictions``, whether it predicted exactly what
    its CNN-only reference did on every seed."""
    y_test = fd.labels[fd.split("test")]
    cnn_only = {(r.variant, r.head, r.seed): r for r in runs if r.inputs == "cnn"}
    groups: dict[tuple[str, str], list[HeadRun]] = {}
    for run in runs:
        if run.inputs == "fused":
            groups.setdefault((run.variant, run.head), []).append(run)
    rows = []
    for (variant, head), group in groups.items():
        base = reference_variant(variant)
        reference = head if any((v, h) == (base, head) for v, h, _ in cnn_only) else fallback
        group = sorted((r for r in group if (base, reference, r.seed) in cnn_only), key=lambda r: r.seed)
        if not group:
            continue
        refs = [cnn_only[(base, reference, r.seed)] for r in group]
        row = {"variant": variant, "head": head, "reference": reference, "seeds": len(group),
               "val_macro_f1": float(np.mean([r.val_macro_f1 for r in group])),
               "macro_f1": float(np.mean([r.metrics["macro_f1"] for r in group])),
               "cnn_macro_f1": float(np.mean([r.metrics["macro_f1"] for r in refs]))}
        for metric in ("macro_f1", "weighted_f1", "accuracy"):
            test = paired_bootstrap_seeds(y_test, [r.test_pred for r in group], [r.test_pred for r in refs], metric,
                                          n_boot=n_bootstrap, seed=seed, num_classes=NUM_CLASSES)
            prefix = "gain" if metric == "macro_f1" else f"gain_{metric}"
            row.update({prefix: test["difference"], f"{prefix}_low": test["low"], f"{prefix}_high": test["high"]})
            if metric == "macro_f1":
                row["p_bootstrap"] = test["p_value"]
        first = mcnemar(y_test, group[0].test_pred, refs[0].test_pred)
        row.update(mcnemar_b=first["b"], mcnemar_c=first["c"], p_mcnemar=first["p_value"])
        # a head that predicts one class on some seed has collapsed: its "gain" measures nothing
        row["classes_predicted"] = int(min(len(np.unique(r.test_pred)) for r in group))
        row["same_predictions"] = bool(all(np.array_equal(r.test_pred, ref.test_pred) for r, ref in zip(group, refs)))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    family = table["variant"].str.split(":").str[0]
    table["p_holm"] = np.nan
    for name in family.unique():
        mask = (family == name).to_numpy()
        table.loc[mask, "p_holm"] = holm(table.loc[mask, "p_bootstrap"].to_numpy())
    return table


__all__ = ["FusionData", "HeadRun", "align", "compare_to_cnn", "head_inputs", "late_fusion", "reference_variant",
           "train_head", "vote_proba"]

"""Steps that the study's notebooks share: load and split data, train and test a CNN once,
report test metrics with confidence intervals, write the run record (and a model bundle).

A notebook calls these and keeps only its parameters, plots and the record of results.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from . import repro, runs
from .data import class_weights, fingerprint, load_dataset, make_datasets, make_splits
from .evaluate import evaluate, predict_proba, predictions_frame
from .models import IMAGENET_MEAN, IMAGENET_STD, ORIGINAL_STUDY_PREPROCESSING, Preprocessing, create_model
from .stats import bootstrap_ci
from .train import FitResult, TrainConfig, fit

NORMALIZATIONS = {
    "half": (ORIGINAL_STUDY_PREPROCESSING.mean, ORIGINAL_STUDY_PREPROCESSING.std),  # the original study
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
CI_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def load_index(cfg) -> pd.DataFrame:
    """The data set of a config with data fields, split into train / val / test."""
    index = load_dataset(cfg.data_path, fmt=cfg.data_format, variant=cfg.variant)
    return make_splits(index, val_fraction=cfg.val_fraction, seed=cfg.seed,
                       subset=None if cfg.subset >= 1 else cfg.subset)


def test_metrics(y_true, proba, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """:func:`~fer_utils.evaluate.evaluate` plus percentile-bootstrap 95 % intervals."""
    metrics = evaluate(y_true, proba)
    y_pred = np.asarray(proba).argmax(1)
    metrics["ci95"] = {}
    if n_bootstrap > 0:
        for name in CI_METRICS:
            _, low, high = bootstrap_ci(y_true, y_pred, name, n_boot=n_bootstrap, seed=seed)
            metrics["ci95"][name] = [low, high]
    return metrics


@dataclasses.dataclass
class CNNRun:
    model: nn.Module
    preprocessing: Preprocessing
    index: pd.DataFrame
    fit: FitResult
    train_config: TrainConfig
    metrics: dict          # test metrics (read once, after selection on validation)
    predictions: pd.DataFrame
    data_fingerprint: str


def train_cnn(cfg, progress: bool = True) -> CNNRun:
    """Train ``cfg.model`` on train, early-stop and select on val, evaluate test once."""
    repro.seed_everything(cfg.seed)
    index = load_index(cfg)
    mean, std = NORMALIZATIONS[cfg.normalization]
    prep = Preprocessing(cfg.image_size, mean, std)
    datasets = make_datasets(index, prep.image_size, prep.mean, prep.std, cfg.augmentation,
                             (cfg.rrc_scale_min, 1.0))
    train_labels = index.loc[index["split"] == "train", "label"]
    tcfg = TrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs, patience=cfg.patience,
                       monitor=cfg.monitor, num_workers=cfg.num_workers, device=cfg.device, seed=cfg.seed,
                       channels_last=cfg.channels_last,
                       class_weights=class_weights(train_labels, cfg.class_weights))
    model = create_model(cfg.model, pretrained=cfg.pretrained)
    result = fit(model, datasets["train"], datasets["val"], tcfg, progress=progress)
    test = index[index["split"] == "test"]
    proba = predict_proba(model, datasets["test"], batch_size=cfg.batch_size, device=cfg.device,
                          num_workers=cfg.num_workers)
    metrics = test_metrics(test["label"].to_numpy(), proba, cfg.n_bootstrap, cfg.seed)
    metrics.update(best_epoch=result.best_epoch, epochs_run=len(result.history),
                   stopped_early=result.stopped_early,
                   val_macro_f1=float(result.history.loc[result.history["epoch"] == result.best_epoch,
                                                          "val_macro_f1"].iloc[0]),
                   train_seconds=float(result.history["seconds"].sum()))
    return CNNRun(model, prep, index, result, tcfg, metrics,
                  predictions_frame(test["id"].tolist(), test["label"].to_numpy(), proba),
                  fingerprint(index))


def record(cfg, metrics: dict, data_fingerprint: str, predictions: pd.DataFrame | None = None,
           history: pd.DataFrame | None = None, device: str | None = None, **extra) -> Path:
    """Write the run record of a notebook config (params include the notebook's name)."""
    params = {"notebook": cfg.notebook, **cfg.to_dict()}
    return runs.save_run(cfg.run_dir, params, metrics,
                         repro.provenance(data_fingerprint=data_fingerprint, device=device, **extra),
                         predictions=predictions, history=history)

"""Steps that the study's notebooks share, each usable on its own:

- :func:`load_data`: a config's data set, split into train / val / test, and its data record;
- :func:`training_config`: the :class:`~fer_utils.training.train.TrainConfig` of a notebook config;
- :func:`fit_and_score`: ``fit`` on train/val, then the test split read once and scored with
  confidence intervals (:func:`score_test`) — for a CNN on images or a head on cached arrays;
- :func:`record` and :func:`save_run`: the run record (and the model bundle).

:func:`train_cnn` strings them together for one CNN (:func:`train_cnn_on`: on a split already made,
under a given augmentation and seed). A notebook calls these and keeps only its
parameters, plots and the record of results.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from fer_utils.training import repro
from fer_utils.study import runs
from fer_utils.data import describe_dataset, load_dataset, make_splits
from fer_utils.data.transforms import make_datasets
from fer_utils.data.weights import class_weights
from fer_utils.training.evaluate import evaluate, predict_proba, predictions_frame
from fer_utils.models import create_model
from fer_utils.options import ORIGINAL_PROTOCOL
from fer_utils.inference.bundle import save_bundle
from fer_utils.options import Preprocessing
from fer_utils.training.stats import SCORES, bootstrap_ci
from fer_utils.training.train import FitResult, TrainConfig, fit

CI_METRICS = SCORES
"""The test metrics reported with a bootstrap interval (and stored in model bundles)."""


def load_data(cfg) -> tuple[pd.DataFrame, dict]:
    """``(index, data record)`` of a config with data fields: the data set at ``cfg.data_path``
    split into train / val / test, and what it is (:func:`~fer_utils.data.describe_dataset`)."""
    full = load_dataset(cfg.data_path, fmt=cfg.data_format, variant=cfg.variant)
    index = make_splits(full, val_fraction=cfg.val_fraction, seed=cfg.seed,
                        subset=None if cfg.subset >= 1 else cfg.subset)
    return index, describe_dataset(cfg.data_path, full, split_index=index)


def preprocessing_of(cfg) -> Preprocessing:
    """The :class:`Preprocessing` of a config with ``image_size`` and ``normalization``."""
    return Preprocessing.preset(cfg.image_size, cfg.normalization)


_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "class_weights")


def training_config(cfg, train_labels=None) -> TrainConfig:
    """The :class:`TrainConfig` of a notebook config: every ``TrainConfig`` field the config has
    (batch_size, lr, epochs, patience, monitor, seed, device, loss, focal_gamma, sampler, ...) by
    name, and the class weights of the scheme ``cfg.class_weights`` computed from ``train_labels``
    (the effective number's beta from ``cfg.class_weight_beta``, 0.999 where the config has none)."""
    given = {name: getattr(cfg, name) for name in _TRAIN_FIELDS if hasattr(cfg, name)}
    scheme = getattr(cfg, "class_weights", "none")
    weights = class_weights(train_labels, scheme, beta=getattr(cfg, "class_weight_beta", 0.999)) \
        if scheme != "none" else None
    return TrainConfig(**given, class_weights=weights)


def score_test(y_true, proba, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """:func:`~fer_utils.training.evaluate.evaluate` of the test split plus percentile-bootstrap 95 %
    intervals (``ci95``) of :data:`CI_METRICS` (none when ``n_bootstrap`` is 0)."""
    metrics = evaluate(y_true, proba)
    y_pred = np.asarray(proba).argmax(1)
    metrics["ci95"] = {}
    if n_bootstrap > 0:
        for name in CI_METRICS:
            _, low, high = bootstrap_ci(y_true, y_pred, name, n_boot=n_bootstrap, seed=seed,
                                        num_classes=len(metrics["per_class"]))  # evaluate's classes
            metrics["ci95"][name] = [low, high]
    return metrics


@dataclasses.dataclass
class TrainedRun:
    """A model trained on train, selected on val and scored once on test."""

    model: nn.Module
    fit: FitResult
    train_config: TrainConfig
    metrics: dict                 # test metrics + the selection facts (best epoch, val score)
    predictions: pd.DataFrame     # per test sample: id, true, predicted, probabilities
    data: dict                    # the data record (name, path, fingerprint, synthetic, ...)
    preprocessing: Preprocessing | None = None   # image models: how an image becomes an input


def fit_and_score(model: nn.Module, train: Dataset, val: Dataset, test: Dataset, test_ids, test_labels,
                  tcfg: TrainConfig, data: dict, n_bootstrap: int = 1000, progress: bool = True,
                  preprocessing: Preprocessing | None = None) -> TrainedRun:
    """``fit`` on ``train``/``val`` (early stopping and selection on val only), then read the
    ``test`` set once: probabilities, :func:`score_test` and the predictions table. The
    validation scores recorded are those of the weights tested (``kept_epoch``). The data sets
    may hold images or cached feature arrays alike."""
    result = fit(model, train, val, tcfg, progress=progress)
    proba = predict_proba(model, test, batch_size=tcfg.batch_size, device=tcfg.device,
                          num_workers=tcfg.num_workers)
    test_labels = np.asarray(test_labels)
    metrics = score_test(test_labels, proba, n_bootstrap, tcfg.seed)
    kept = result.history.loc[result.history["epoch"] == result.kept_epoch].iloc[0]
    metrics.update(best_epoch=result.best_epoch, kept_epoch=result.kept_epoch, epochs_run=len(result.history),
                   stopped_early=result.stopped_early, val_macro_f1=float(kept["val_macro_f1"]),
                   val_accuracy=float(kept["val_acc"]),
                   train_seconds=float(result.history["seconds"].sum()))
    return TrainedRun(model, result, tcfg, metrics, predictions_frame(list(test_ids), test_labels, proba),
                      data, preprocessing)


def train_cnn(cfg, progress: bool = True) -> TrainedRun:
    """Train ``cfg.model`` on train, early-stop and select on val, evaluate test once."""
    repro.seed_everything(cfg.seed)
    index, data = load_data(cfg)
    return train_cnn_on(cfg, index, data, cfg.augmentation, cfg.rrc_scale_min, progress=progress)


def train_cnn_on(cfg, index: pd.DataFrame, data: dict, augmentation: str = "none", rrc_scale_min: float = 0.8,
                 rotate_degrees: float = 15, seed: int | None = None, n_bootstrap: int | None = None,
                 progress: bool = True) -> TrainedRun:
    """:func:`train_cnn` on a split already made (``index``, ``data`` from :func:`load_data`), with
    the augmentation preset given, trained with ``seed`` (None: ``cfg.seed``, which also made the
    split) and scored with ``n_bootstrap`` resamples (None: ``cfg.n_bootstrap``): the studies that
    train one recipe under several settings call it once per setting and seed."""
    seed = cfg.seed if seed is None else seed
    repro.seed_everything(seed)
    prep = preprocessing_of(cfg)
    # decoded once per data set: the config's cache_dir keeps the decoded array in the project
    # cache and memory-maps it ("": decoded into memory for this run)
    datasets = make_datasets(index, prep, augmentation, (rrc_scale_min, 1.0), rotate_degrees,
                             cache_dir=cfg.cache_dir or None)
    tcfg = dataclasses.replace(training_config(cfg, index.loc[index["split"] == "train", "label"]), seed=seed)
    model = create_model(cfg.model, pretrained=cfg.pretrained)
    test = index[index["split"] == "test"]
    return fit_and_score(model, datasets["train"], datasets["val"], datasets["test"], test["id"], test["label"],
                         tcfg, data, cfg.n_bootstrap if n_bootstrap is None else n_bootstrap, progress,
                         preprocessing=prep)


def record(cfg, metrics: dict, data: dict | list, predictions: pd.DataFrame | None = None,
           history: pd.DataFrame | None = None, training: TrainConfig | None = None,
           device: str | None = None) -> Path:
    """Write the run record of a notebook config: ``params.json`` holds the notebook's name, its
    parameters and the resolved training settings; ``provenance.json`` the data record and the
    device the run used."""
    params = {"notebook": cfg.notebook, **cfg.to_dict()}
    if training is not None:
        params["training"] = training.to_dict()
    return runs.save_run(cfg.run_dir, params, metrics, repro.provenance(data=data, device=device),
                         predictions=predictions, history=history)


def save_run(cfg, run: TrainedRun) -> tuple[Path, Path | None]:
    """The run record of a trained model and, when ``cfg.save_bundle``, its model bundle inside it
    (``<run_dir>/bundle``). Returns ``(record folder, bundle folder or None)``."""
    folder = record(cfg, run.metrics, run.data, predictions=run.predictions, history=run.fit.history,
                    training=run.train_config, device=run.fit.device)
    bundle = None
    if getattr(cfg, "save_bundle", False):
        scores = {name: run.metrics[name] for name in (*CI_METRICS, "val_macro_f1")}
        protocol = "original" if all(getattr(cfg, k, None) == v for k, v in ORIGINAL_PROTOCOL.items()) else "corrected"
        bundle = save_bundle(folder / "bundle", run.model, cfg.model, run.preprocessing, metrics=scores,
                             data=run.data, provenance={"run_dir": str(folder), "notebook": cfg.notebook,
                                                        "protocol": protocol})
    return folder, bundle

"""The ablation studies: one recipe trained under several settings inside one run, each setting
compared with the plain one on the same test images.

- The augmentation study (``notebooks/07_augmentation.ipynb``, :func:`run_augmentation`): a CNN
  recipe trained under every setting of :data:`~fer_utils.options.AUGMENTATION_SETTINGS` named in
  the config, with every seed of ``cfg.seeds``, on one split.
- The class-imbalance study (``notebooks/08_class_weights.ipynb``, :func:`run_imbalance`): the
  treatments of :data:`~fer_utils.options.IMBALANCE_TREATMENTS` on the fusion study's cached inputs
  (:func:`~fer_utils.study.fusion_study.load_inputs` of its run: cache hits), a head on the frozen CNN
  features and the fusion study's best head on fused features, trained with the fusion study's
  budget; with ``train_cnn`` also the CNN itself (the recipe of the bundle whose features the heads
  use) under each treatment. The effective number's beta is chosen on validation for each.

Every trained model is a :class:`SettingRun` (group, setting, seed). The plain setting (``none``)
is the reference: :func:`fer_utils.study.ablation.compare_to_plain` tests every other setting of a group
against it on the test images, and :func:`fer_utils.study.ablation.adopt` decides from the validation
predictions which setting the study adopts. :func:`save_ablation_run` writes one run record for
everything: ``metrics.json`` (every run's scores, the comparisons, the adoption), ``predictions.csv``
in long form (group, setting, seed, id, true, predicted: what the paired tests need) and, for CNN
runs, ``history.csv`` (every epoch of every run).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.study import ablation
from fer_utils.errors import ConfigError, DataError
from fer_utils.study.experiment import TrainedRun, load_data, preprocessing_of, record, train_cnn_on, training_config
from fer_utils.labels import EMOTIONS
from fer_utils.options import AUGMENTATION_SETTINGS, IMBALANCE_TREATMENTS, display_name

PLAIN = ablation.PLAIN


@dataclasses.dataclass
class SettingRun:
    """One model trained under one setting with one seed, scored on validation and (once) on test."""

    group: str                      # what was trained: "cnn", "cnn_head", "fused_head"
    setting: str                    # e.g. "hflip", "rrc_0.8", "inverse", "effective_0.99"
    seed: int
    val_macro_f1: float
    metrics: dict                   # fer_utils.training.evaluate of the test split
    test_pred: np.ndarray
    val_pred: np.ndarray
    epochs_run: int | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    beta: float | None = None       # the effective number's beta, where the setting has one
    history: pd.DataFrame | None = None

    def row(self) -> dict:
        return {"group": self.group, "setting": self.setting, "seed": self.seed, "beta": self.beta,
                "val_macro_f1": self.val_macro_f1,
                **{k: self.metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1")},
                "per_class": self.metrics["per_class"], "confusion_matrix": self.metrics["confusion_matrix"],
                "epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "seconds": self.seconds}


@dataclasses.dataclass
class AblationRun:
    runs: list[SettingRun]
    metrics: dict
    data: dict
    index: pd.DataFrame             # the split (id, label, split) the runs used
    training: object = None         # the plain setting's TrainConfig (recorded in params.json)


# --------------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------------

def _ids(index: pd.DataFrame, split: str) -> tuple[list[str], np.ndarray]:
    part = index[index["split"] == split]
    return part["id"].astype(str).tolist(), part["label"].to_numpy(dtype=np.int64)


def predictions_long(runs: Sequence[SettingRun], index: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (group, setting, seed, image of ``split``): id, true, predicted."""
    ids, y = _ids(index, split)
    frames = [pd.DataFrame({"group": r.group, "setting": r.setting, "seed": r.seed, "id": ids, "true": y,
                            "predicted": r.test_pred if split == "test" else r.val_pred}) for r in runs]
    return pd.concat(frames, ignore_index=True)


def _histories(runs: Sequence[SettingRun]) -> pd.DataFrame | None:
    frames = [r.history.assign(group=r.group, setting=r.setting, seed=r.seed) for r in runs if r.history is not None]
    if not frames:
        return None
    history = pd.concat(frames, ignore_index=True)
    return history[["group", "setting", "seed", *[c for c in history.columns if c not in ("group", "setting", "seed")]]]


def summarize(runs: Sequence[SettingRun], index: pd.DataFrame, settings: dict[str, list[str]],
              groups: dict[str, str], n_bootstrap: int = 1000, seed: int = 0, **extra) -> dict:
    """The run record's metrics: every run, the comparisons with the plain setting (test), the
    adoption (validation), and as the headline the setting adopted for the first group (mean over
    seeds: what ``fer study check`` holds to the majority-class baseline)."""
    test = predictions_long(runs, index, "test")
    val = predictions_long(runs, index, "val")
    table = pd.DataFrame([r.row() for r in runs])
    comparisons = ablation.compare_to_plain(test, settings, n_bootstrap=n_bootstrap, seed=seed)
    adoption = ablation.adopt(table, val, settings, n_bootstrap=n_bootstrap, seed=seed)
    first = next(iter(settings))
    chosen = table[(table["group"] == first) & (table["setting"] == adoption[first]["adopted"])]
    _, y_test = _ids(index, "test")
    _, y_val = _ids(index, "val")
    return {
        **{k: float(chosen[k].mean()) for k in ("accuracy", "macro_f1", "weighted_f1", "val_macro_f1")},
        "headline": {"group": first, "setting": adoption[first]["adopted"]},
        "reference": PLAIN, "groups": groups, "settings": settings,
        "seeds": sorted({r.seed for r in runs}), "n": int(len(y_test)),
        "test_support": {name: int((y_test == k).sum()) for k, name in enumerate(EMOTIONS)},
        "val_support": {name: int((y_val == k).sum()) for k, name in enumerate(EMOTIONS)},
        "runs": table.to_dict(orient="records"),
        "comparisons": comparisons.to_dict(orient="records"),
        "adoption": adoption,
        **extra,
    }


def save_ablation_run(cfg, run: AblationRun) -> Path:
    """The run record of an ablation study (see the module docstring); returns its folder."""
    return Path(record(cfg, run.metrics, run.data, predictions=predictions_long(run.runs, run.index),
                       history=_histories(run.runs), training=run.training))


def _from_trained(trained: TrainedRun, group: str, setting: str, seed: int, val_set, seconds: float,
                  beta: float | None = None) -> SettingRun:
    from fer_utils.training.evaluate import predict_proba

    tcfg = trained.train_config
    val_pred = predict_proba(trained.model, val_set, batch_size=tcfg.batch_size, device=tcfg.device,
                             num_workers=tcfg.num_workers).argmax(1)
    m = trained.metrics
    return SettingRun(group, setting, seed, m["val_macro_f1"], m, trained.predictions["predicted"].to_numpy(),
                      val_pred, m["epochs_run"], m["best_epoch"], seconds, beta, trained.fit.history)


def _val_set(cfg, index: pd.DataFrame):
    from fer_utils.data.transforms import make_datasets

    return make_datasets(index[index["split"] == "val"], preprocessing_of(cfg),
                         cache_dir=cfg.cache_dir or None)["val"]


def _check_lists(cfg, where: str, key: str) -> None:
    """The list ``cfg.<key>`` (settings or treatments) holds the plain one and none twice; the seeds
    are a non-empty list without repeats."""
    values = getattr(cfg, key)
    if PLAIN not in values:
        raise ConfigError(f"{where}: {key} must include {PLAIN!r}, the plain one the others are compared with; "
                          f"got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: an entry is listed twice in {key} {values!r}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list without repeats, got {cfg.seeds!r}")


# --------------------------------------------------------------------------------------------------
# 07: augmentation
# --------------------------------------------------------------------------------------------------

def check_augmentation(cfg) -> None:
    """List parameters of the augmentation config beyond what its ``choices`` check."""
    _check_lists(cfg, "07_augmentation", "settings")


def run_augmentation(cfg, progress: bool = False, echo: Callable | None = None) -> AblationRun:
    """Train ``cfg``'s CNN recipe under every setting and seed on one split (made by ``cfg.seed``);
    see the module docstring. ``echo`` (e.g. ``print``) reports each run as it ends."""
    echo = echo or (lambda *_: None)
    check_augmentation(cfg)
    index, data = load_data(cfg)
    val_set = _val_set(cfg, index)
    runs = []
    for seed in cfg.seeds:
        for setting in cfg.settings:
            preset, scale = AUGMENTATION_SETTINGS[setting]
            start = time.perf_counter()
            trained = train_cnn_on(cfg, index, data, preset, scale or 1.0, cfg.rotate_degrees, seed=seed,
                                   n_bootstrap=0, progress=progress)
            runs.append(_from_trained(trained, "cnn", setting, seed, val_set, time.perf_counter() - start))
            echo(f"{setting} seed {seed}: validation macro F1 {runs[-1].val_macro_f1:.3f} after "
                 f"{runs[-1].epochs_run} epochs ({runs[-1].seconds:.0f} s)")
    groups = {"cnn": f"{display_name(cfg.model)} from {'ImageNet' if cfg.pretrained else 'random'} weights"}
    metrics = summarize(runs, index, {"cnn": list(cfg.settings)}, groups, cfg.n_bootstrap, cfg.seed,
                        rotate_degrees=cfg.rotate_degrees,
                        minority_classes=_minority(index))
    plain = dataclasses.replace(training_config(cfg, index.loc[index["split"] == "train", "label"]), seed=cfg.seeds[0])
    return AblationRun(runs, metrics, data, index, plain)


def _minority(index: pd.DataFrame) -> list[str]:
    from fer_utils.data.transforms import minority_classes

    return [EMOTIONS[c] for c in sorted(minority_classes(index.loc[index["split"] == "train", "label"]))]


# --------------------------------------------------------------------------------------------------
# 08: class imbalance
# --------------------------------------------------------------------------------------------------

def check_imbalance(cfg) -> None:
    """List parameters of the class-imbalance config beyond what its ``choices`` check."""
    _check_lists(cfg, "08_class_weights", "treatments")
    if "effective" in cfg.treatments and not cfg.class_weight_betas:
        raise ConfigError("08_class_weights: the effective treatment needs at least one of class_weight_betas")
    for beta in cfg.class_weight_betas:
        if not 0 < beta < 1:
            raise ConfigError(f"08_class_weights: every beta of class_weight_betas must be in (0, 1), got {beta!r}")


def treatment_params(treatment: str, beta: float = 0.999, gamma: float = 2.0) -> dict:
    """The training parameters of a treatment (names of :class:`~fer_utils.study.config.CNNRecipeConfig`)."""
    if treatment not in IMBALANCE_TREATMENTS:
        raise ConfigError(f"unknown treatment {treatment!r}; expected one of {', '.join(IMBALANCE_TREATMENTS)}")
    return {"class_weights": treatment if treatment in ("inverse", "effective") else "none",
            "class_weight_beta": beta, "loss": "focal" if treatment == "focal" else "cross_entropy",
            "focal_gamma": gamma, "sampler": "balanced" if treatment == "sampler" else "none"}


def candidates(cfg) -> list[tuple[str, str, float | None]]:
    """``(setting, treatment, beta)`` of every model a group trains: one per treatment, the
    effective number once per beta (``effective_<beta>``)."""
    out = []
    for treatment in cfg.treatments:
        if treatment == "effective":
            out += [(f"effective_{beta:g}", treatment, beta) for beta in cfg.class_weight_betas]
        else:
            out.append((treatment, treatment, None))
    return out


def with_treatment(tcfg, params: dict, train_labels):
    """``tcfg`` (a :class:`~fer_utils.training.train.TrainConfig`) under a treatment's parameters, the class
    weights computed from ``train_labels``."""
    from fer_utils.data.weights import class_weights

    weights = class_weights(train_labels, params["class_weights"], beta=params["class_weight_beta"])
    return dataclasses.replace(tcfg, class_weights=weights, loss=params["loss"], focal_gamma=params["focal_gamma"],
                               sampler=params["sampler"])


def fusion_config(cfg):
    """The fusion run's config (``<runs_root>/06_fusion/<fusion_run>/params.json``) with this
    config's data set, folders and device, and the CNN bundle it used named explicitly; and its record."""
    from fer_utils.study.config import FusionConfig
    from fer_utils.study.runs import load_run

    folder = Path(cfg.runs_root) / "06_fusion" / cfg.fusion_run
    try:
        rec = load_run(folder)
    except DataError as exc:
        raise DataError(f"08_class_weights needs the fusion study's run record: {exc}. Run "
                        "`fer study run --only 06_fusion` first") from None
    params = {k: v for k, v in rec["params"].items() if k in FusionConfig.field_names()}
    fcfg = FusionConfig.from_params(params, where=f"the fusion run {folder}")
    fcfg = dataclasses.replace(fcfg, data_path=cfg.data_path, runs_root=cfg.runs_root, cache_dir=cfg.cache_dir,
                               device=cfg.device, cnn_bundle=rec["metrics"]["cnn_bundle"]["path"])
    return fcfg, rec


def cnn_recipe(bundle_path: str | Path):
    """The CNN baseline config of the run that trained the bundle at ``bundle_path`` (its record is
    the bundle's parent folder), without a bundle of its own."""
    from fer_utils.study.config import CNNBaselineConfig
    from fer_utils.study.runs import load_run

    params = load_run(Path(bundle_path).parent)["params"]
    recipe = CNNBaselineConfig.from_params({k: v for k, v in params.items() if k in CNNBaselineConfig.field_names()},
                                           where=f"the CNN run {Path(bundle_path).parent}")
    return dataclasses.replace(recipe, save_bundle=False)


def _head_choice(cfg, fused_head: str) -> str:
    from fer_utils.study.fusion_study import REFERENCE_HEAD
    from fer_utils.models.heads.registry import head_info, list_heads

    if cfg.cnn_head:
        if cfg.cnn_head not in list_heads():
            raise ConfigError(f"08_class_weights: unknown cnn_head {cfg.cnn_head!r}; known: {', '.join(list_heads())}")
        if head_info(cfg.cnn_head).needs_both:
            raise ConfigError(f"08_class_weights: cnn_head {cfg.cnn_head!r} needs both modalities; "
                              "the CNN side has CNN features only")
        return cfg.cnn_head
    return REFERENCE_HEAD if head_info(fused_head).needs_both else fused_head


def _reproduced(runs: Sequence[SettingRun], fusion_record: dict, heads: dict[str, tuple[str, str]]) -> list[dict]:
    """The plain runs beside the fusion study's runs of the same head, input and seed (the same
    training: the numbers must be equal)."""
    theirs = pd.DataFrame(fusion_record["metrics"]["runs"])
    out = []
    for r in runs:
        if r.setting != PLAIN or r.group not in heads:
            continue
        head, inputs = heads[r.group]
        match = theirs[(theirs["variant"] == "main") & (theirs["head"] == head) & (theirs["inputs"] == inputs)
                       & (theirs["seed"] == r.seed)]
        if not match.empty:
            out.append({"group": r.group, "seed": r.seed, "macro_f1": r.metrics["macro_f1"],
                        "fusion_macro_f1": float(match["macro_f1"].iloc[0])})
    return out


def run_imbalance(cfg, inputs=None, progress: bool = False, echo: Callable | None = None) -> AblationRun:
    """Every treatment (every beta of the effective number) and seed on the heads of the fusion
    study's inputs and, with ``cfg.train_cnn``, on the CNN; see the module docstring. ``echo``
    (e.g. ``print``) reports progress."""
    echo = echo or (lambda *_: None)
    from fer_utils.data import class_counts
    from fer_utils.data.weights import class_weights
    from fer_utils.data.synthetic.writer import RAFDB_TRAIN_COUNTS
    from fer_utils.models.heads.registry import fuse
    from fer_utils.study.fusion import train_head
    from fer_utils.study.fusion_study import head_training_config, load_inputs

    check_imbalance(cfg)
    fcfg, fusion_record = fusion_config(cfg)
    inputs = inputs or load_inputs(fcfg, progress)
    fd = inputs.fd
    fused_head = fusion_record["metrics"]["controls_and_sweep_head"]
    cnn_head = _head_choice(cfg, fused_head)
    tcfg = head_training_config(fcfg)
    y_train = fd.labels[fd.split("train")]
    cnn_dim, text_dim = fd.cnn.shape[1], fd.text.shape[1]
    sides = {"cnn_head": (cnn_head, fuse(fd.cnn, None, "cnn"), "cnn", (cnn_dim, 0)),
             "fused_head": (fused_head, fuse(fd.cnn, fd.text, "fused", fcfg.fusion_norm), "fused", (cnn_dim, text_dim))}
    runs: list[SettingRun] = []
    for group, (head, x, which, (cd, td)) in sides.items():
        for seed in cfg.seeds:
            for setting, treatment, beta in candidates(cfg):
                head_cfg = with_treatment(tcfg, treatment_params(treatment, beta or 0.999, cfg.focal_gamma), y_train)
                hr = train_head(head, x, fd, cd, td, seed, head_cfg, variant=setting, inputs=which)
                runs.append(SettingRun(group, setting, seed, hr.val_macro_f1, hr.metrics, hr.test_pred,
                                       hr.val_proba.argmax(1), hr.epochs_run, None, hr.seconds, beta))
        echo(f"{group} ({head} on {which} features): {len(cfg.seeds) * len(candidates(cfg))} head runs")
    groups = {"cnn_head": f"the head on the frozen CNN features ({cnn_head})",
              "fused_head": f"the fusion study's head on fused features ({fused_head})"}
    plain_training = with_treatment(tcfg, treatment_params(PLAIN), y_train)
    if cfg.train_cnn:
        # this study's data, device and cache, not those recorded with the bundle (maybe another machine's)
        recipe = dataclasses.replace(cnn_recipe(inputs.bundle["path"]), data_path=cfg.data_path, device=cfg.device,
                                     cache_dir=cfg.cache_dir)
        val_set = _val_set(recipe, fd.index)
        for seed in cfg.seeds:
            for setting, treatment, beta in candidates(cfg):
                rcfg = dataclasses.replace(recipe, **treatment_params(treatment, beta or recipe.class_weight_beta,
                                                                      cfg.focal_gamma))
                start = time.perf_counter()
                trained = train_cnn_on(rcfg, fd.index, fd.data, rcfg.augmentation, rcfg.rrc_scale_min, seed=seed,
                                       n_bootstrap=0, progress=progress)
                runs.append(_from_trained(trained, "cnn", setting, seed, val_set, time.perf_counter() - start, beta))
                echo(f"CNN {setting} seed {seed}: validation macro F1 {runs[-1].val_macro_f1:.3f}")
        groups["cnn"] = (f"the CNN trained end to end ({display_name(recipe.model)}, {recipe.image_size} px, "
                         f"{'ImageNet' if recipe.pretrained else 'random'} weights, "
                         f"{recipe.augmentation} augmentation)")
    table = pd.DataFrame([r.row() for r in runs])
    chosen_beta = {group: ablation.choose_beta(table[table["group"] == group]) for group in groups} \
        if "effective" in cfg.treatments else {}
    settings = {group: [f"effective_{chosen_beta[group]:g}" if t == "effective" else t for t in cfg.treatments]
                for group in groups}
    counts = class_counts(y_train)
    rafdb = np.repeat(np.arange(len(EMOTIONS)), [RAFDB_TRAIN_COUNTS[name] for name in EMOTIONS])
    weights = {"counts": counts.tolist(), "rafdb_counts": [RAFDB_TRAIN_COUNTS[name] for name in EMOTIONS],
               "inverse": class_weights(y_train, "inverse").tolist(),
               **{f"effective_{b:g}": class_weights(y_train, "effective", beta=b).tolist()
                  for b in cfg.class_weight_betas},
               **{f"rafdb_effective_{b:g}": class_weights(rafdb, "effective", beta=b).tolist()
                  for b in cfg.class_weight_betas},
               "rafdb_inverse": class_weights(rafdb, "inverse").tolist()}
    metrics = summarize(runs, fd.index, settings, groups, cfg.n_bootstrap, cfg.seed,
                        chosen_beta=chosen_beta, betas=list(cfg.class_weight_betas), focal_gamma=cfg.focal_gamma,
                        class_weights=weights,
                        fusion={"run": cfg.fusion_run, "fused_head": fused_head, "cnn_head": cnn_head,
                                "fusion_norm": fcfg.fusion_norm, "cnn_bundle": inputs.bundle["path"],
                                "cnn_model": inputs.bundle["model"], "training": plain_training.to_dict(),
                                "reproduced": _reproduced(runs, fusion_record, {"cnn_head": (cnn_head, "cnn"),
                                                                                "fused_head": (fused_head, "fused")})},
                        train_cnn=bool(cfg.train_cnn))
    return AblationRun(runs, metrics, fd.data, fd.index, plain_training)


__all__ = ["AblationRun", "SettingRun", "candidates", "check_augmentation", "check_imbalance", "cnn_recipe",
           "fusion_config", "predictions_long", "run_augmentation", "run_imbalance", "save_ablation_run", "summarize",
           "treatment_params", "with_treatment"]

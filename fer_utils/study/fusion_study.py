"""The fusion notebook's steps (``notebooks/06_fusion.ipynb``): features in, every head and
control trained, compared with the CNN-only head, recorded.

:func:`load_inputs` gathers the CNN features (a CNN bundle, through the feature cache), the
captions and their embeddings (through the caption cache) and aligns them by image id;
:func:`run_fusion` trains the heads, late fusion, the controls and the sweep of simulated captions;
:func:`save_fusion_run` writes the run record: ``metrics.json`` (every head run's scores, the
comparisons with the CNN-only head, the chosen head) and ``predictions.csv`` in long form (one row
per variant, head, inputs, seed and test image).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.training import repro
from fer_utils.errors import ConfigError
from fer_utils.study.experiment import load_data, record
from fer_utils.study.fusion import (
    FusionData, HeadRun, align, compare_to_cnn, head_inputs, late_fusion, train_head, vote_proba,
)
from fer_utils.labels import NUM_CLASSES
from fer_utils.models.heads.registry import fuse
from fer_utils.options import FUSION_CONTROLS, FUSION_INPUTS, FUSION_NORMS
from fer_utils.training.train import TrainConfig
from fer_utils.vlm.prompts import CONSTANT_CAPTION

REFERENCE_HEAD = "mlp1"
"""The CNN-only reference of fused variants without a CNN-only run of their own (heads that need
both modalities, late fusion): the original's 1-layer MLP. Every other head is compared with
itself on CNN features alone."""


def check_config(cfg) -> None:
    """List parameters' elements, which the config's ``choices`` cannot check."""
    from fer_utils.models.heads.registry import list_heads

    known = list_heads()
    for name in cfg.heads:
        if name not in known:
            raise ConfigError(f"06_fusion: unknown head {name!r} in heads; known: {', '.join(known)}")
    if REFERENCE_HEAD not in cfg.heads:
        raise ConfigError(f"06_fusion: heads must include {REFERENCE_HEAD!r}, the CNN-only reference")
    for name in cfg.inputs:
        if name not in FUSION_INPUTS:
            raise ConfigError(f"06_fusion: unknown input {name!r}; choose from {', '.join(FUSION_INPUTS)}")
    if "cnn" not in cfg.inputs or "fused" not in cfg.inputs:
        raise ConfigError("06_fusion: inputs must include cnn (the reference) and fused")
    for name in cfg.controls:
        if name not in FUSION_CONTROLS:
            raise ConfigError(f"06_fusion: unknown control {name!r}; choose from {', '.join(FUSION_CONTROLS)}")
    for p in cfg.sweep_accuracies:
        if not 0 <= p <= 1:
            raise ConfigError(f"06_fusion: sweep accuracy {p!r} is not in [0, 1]")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"06_fusion: seeds must be distinct and at least one, got {cfg.seeds!r}")


def cnn_bundle_of(cfg, data: dict) -> Path:
    """The CNN bundle: ``cfg.cnn_bundle``, or the validation-best one trained on this data set."""
    from fer_utils.inference.bundle import choose_bundle

    if cfg.cnn_bundle:
        return Path(cfg.cnn_bundle)
    return Path(choose_bundle(cfg.runs_root, data["fingerprint"], kind="cnn")["path"])


@dataclasses.dataclass
class FusionInputs:
    fd: FusionData
    bundle: dict                     # the CNN bundle's summary
    captions: pd.DataFrame           # id, raw, caption, vote, ... (index order)
    captioner: dict                  # describe_captioner
    encoder: object                  # the text encoder (the sweep and the constant control embed more text)


def load_inputs(cfg, progress: bool = False) -> FusionInputs:
    """CNN features, captions and embeddings of ``cfg``'s data set, aligned by image id."""
    import torch

    from fer_utils.training.features import extract_features
    from fer_utils.inference.bundle import bundle_summary
    from fer_utils.inference.predict import Predictor
    from fer_utils.study.prompt_study import captioner_of, describe_captioner, encoder_of, settings_of
    from fer_utils.vlm.pipeline import caption_index, embed_texts
    from fer_utils.vlm.prompts import resolve_prompt

    index, data = load_data(cfg)
    bundle = cnn_bundle_of(cfg, data)
    predictor = Predictor.from_bundle(bundle, device="cpu" if cfg.device == "auto" else cfg.device)
    if predictor.manifest.get("data", {}).get("fingerprint") != data["fingerprint"]:
        raise ConfigError(f"06_fusion: the CNN bundle {bundle} was trained on another data set "
                          f"({predictor.manifest.get('data', {}).get('fingerprint')}) than {cfg.data_path} "
                          f"({data['fingerprint']})")
    ids, cnn = extract_features(predictor.model, index, predictor.preprocessing, num_workers=0,
                                device=str(predictor.device), cache_dir=cfg.cache_dir)
    cnn = align(index, ids, cnn, f"CNN features of {bundle}")
    captioner = captioner_of(cfg)
    captions = caption_index(index, captioner, resolve_prompt(cfg.prompt)[1], settings_of(cfg), cfg.cache_dir,
                             postprocess=cfg.postprocess, progress=progress)
    encoder = encoder_of(cfg)
    text, _ = embed_texts(captions.table["caption"], encoder, cfg.cache_dir, progress=progress)
    text = align(index, captions.table["id"], text, "caption embeddings")
    with torch.inference_mode():   # the CNN's own classifier on its features: the original's comparison
        head = predictor.model.head
        logits = head(torch.as_tensor(cnn[(index["split"] == "test").to_numpy()], device=predictor.device))
        own = torch.softmax(logits.float(), dim=1).cpu().numpy()
    fd = FusionData(index.reset_index(drop=True), cnn, text, data, own)
    return FusionInputs(fd, bundle_summary(bundle), captions.table, describe_captioner(captioner), encoder)


@dataclasses.dataclass
class FusionRun:
    runs: list[HeadRun]
    comparisons: pd.DataFrame
    best_head: str                   # chosen on validation macro F1 (mean over seeds), fused inputs
    metrics: dict


def head_training_config(cfg) -> TrainConfig:
    """How the fusion study trains its heads: the config's budget (batch size, lr, epochs, patience,
    monitor) in float32 on its device (``auto``: the CPU)."""
    return TrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs, patience=cfg.patience,
                       monitor=cfg.monitor, device="cpu" if cfg.device == "auto" else cfg.device, amp=False)


def _mean_val(runs: list[HeadRun], variant: str, head: str, inputs: str = "fused") -> float:
    values = [r.val_macro_f1 for r in runs if (r.variant, r.head, r.inputs) == (variant, head, inputs)]
    return float(np.mean(values)) if values else float("nan")


def run_fusion(cfg, inputs: FusionInputs | None = None, progress: bool = False, echo=print) -> FusionRun:
    """Every head on every input and seed, late fusion, the controls and the sweep (see module)."""
    from fer_utils.vlm.pipeline import embed_texts

    check_config(cfg)
    repro.seed_everything(cfg.seed)
    inputs = inputs or load_inputs(cfg, progress)
    fd = inputs.fd
    cnn_dim, text_dim = fd.cnn.shape[1], fd.text.shape[1]
    dims = {"cnn": (cnn_dim, 0), "text": (0, text_dim), "fused": (cnn_dim, text_dim)}
    tcfg = head_training_config(cfg)
    runs: list[HeadRun] = []

    def train(name, x, variant, which, seed, text_dim=None):
        cnn_d, text_d = dims[which]
        run = train_head(name, x, fd, cnn_d, text_d if text_dim is None else text_dim, seed, tcfg, variant=variant,
                         inputs=which)
        runs.append(run)
        return run

    features = {which: fuse(fd.cnn, fd.text, which, cfg.fusion_norm) for which in cfg.inputs}
    for seed in cfg.seeds:
        for name in cfg.heads:
            for which in head_inputs(name, cfg.inputs):
                train(name, features[which], "main", which, seed)
    echo(f"main grid: {len(runs)} head runs")
    reference = {r.seed: r for r in runs if (r.variant, r.head, r.inputs) == ("main", REFERENCE_HEAD, "cnn")}
    if cfg.late_fusion:
        votes = inputs.captions["vote"].to_numpy(dtype=object)
        votes_val = vote_proba(votes[fd.split("val")])
        votes_test = vote_proba(votes[fd.split("test")])
        for seed, cnn_run in reference.items():
            if "text" in cfg.inputs:
                text_run = next(r for r in runs if (r.variant, r.head, r.inputs, r.seed)
                                == ("main", REFERENCE_HEAD, "text", seed))
                run, _ = late_fusion(cnn_run, text_run.val_proba, text_run.test_proba, fd, "late_text", seed)
                runs.append(run)
            run, _ = late_fusion(cnn_run, votes_val, votes_test, fd, "late_vote", seed)
            runs.append(run)
    fused_heads = sorted({r.head for r in runs if r.inputs == "fused" and r.variant in ("main", "late")})
    best = max(fused_heads, key=lambda h: (_mean_val(runs, "main", h) if not h.startswith("late")
                                           else _mean_val(runs, "late", h)))
    trainable_best = best if not best.startswith("late") else max(
        (h for h in fused_heads if not h.startswith("late")), key=lambda h: _mean_val(runs, "main", h))
    echo(f"validation-best fused head: {best} (controls and sweep use {trainable_best})")
    if "constant" in cfg.controls:
        constant, _ = embed_texts([CONSTANT_CAPTION], inputs.encoder, cfg.cache_dir)
    for control in cfg.controls:
        for seed in cfg.seeds:
            if control == "shuffled":   # captions moved to other images: the pairing is broken
                text = fd.text[np.random.default_rng(seed).permutation(len(fd.text))]
            else:
                text = np.repeat(constant, len(fd.text), axis=0)
            train(trainable_best, fuse(fd.cnn, text, "fused", cfg.fusion_norm), f"control:{control}", "fused", seed)
    other_norm = next(n for n in FUSION_NORMS if n != cfg.fusion_norm)
    for seed in cfg.seeds:   # the other normalisation of the fused vector, same head
        train(trainable_best, fuse(fd.cnn, fd.text, "fused", other_norm), f"norm:{other_norm}", "fused", seed)
    if cfg.second_encoder:   # a second pretrained encoder in place of the captions
        from fer_utils.vlm.image_encoders import embed_images, make_image_encoder

        image = make_image_encoder(cfg.second_encoder, device="cpu" if cfg.device == "auto" else cfg.device)
        embedded, _ = embed_images(fd.index, image, cfg.cache_dir, progress=progress)
        for seed in cfg.seeds:
            train(trainable_best, fuse(fd.cnn, embedded, "fused", cfg.fusion_norm), "control:image_encoder", "fused",
                  seed, text_dim=embedded.shape[1])
    sweep = []
    for p in cfg.sweep_accuracies:
        text, vote_acc = simulated_text(fd, inputs.encoder, p, cfg.seed, cfg.cache_dir)
        sweep.append({"p": p, "vote_accuracy": vote_acc})
        for seed in cfg.seeds:
            train(trainable_best, fuse(fd.cnn, text, "fused", cfg.fusion_norm), f"sweep:p={p:g}", "fused", seed)
    faithful = run_faithful(cfg, inputs) if cfg.original_cnn_run else None
    leakage = None
    if cfg.crossfit_folds:
        leakage = run_leakage(cfg, inputs, tcfg, runs)
        echo(f"leakage: {cfg.crossfit_folds} folds + the leaky CNN trained in {leakage['seconds']:.0f} s")
    comparisons = compare_to_cnn(runs, fd, REFERENCE_HEAD, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    metrics = summarize(cfg, inputs, runs, comparisons, best, trainable_best, sweep)
    metrics["leakage"] = leakage
    metrics["faithful"] = faithful
    return FusionRun(runs, comparisons, best, metrics)


ORIGINAL_HEADS = ("mlp1", "original_attention")
"""The original's two headline heads: the 1-layer MLP on the fused vector and "MLP + Attention"."""


def run_faithful(cfg, inputs: FusionInputs) -> dict:
    """The faithful-reproduction row: features of a CNN trained under the original's protocol (the
    02 run ``cfg.original_cnn_run``'s bundle) on its half of the data, the original's two headline
    heads trained its way (10 % validation split, Adam 1e-3, batch 64, up to 50 epochs, early
    stopping on validation accuracy with patience 5, last epoch's weights), each seed compared with
    the same head on CNN features alone and with the CNN's own classifier, on the half test set."""
    import torch

    from fer_utils.training.evaluate import evaluate
    from fer_utils.training.features import extract_features
    from fer_utils.options import ORIGINAL_PROTOCOL
    from fer_utils.inference.predict import Predictor

    cfg_o = dataclasses.replace(cfg, subset=ORIGINAL_PROTOCOL["subset"], val_fraction=ORIGINAL_PROTOCOL["val_fraction"])
    index, data = load_data(cfg_o)
    bundle = Path(cfg.runs_root) / "02_cnn_baselines" / cfg.original_cnn_run / "bundle"
    predictor = Predictor.from_bundle(bundle, device="cpu" if cfg.device == "auto" else cfg.device)
    protocol = (predictor.manifest.get("provenance") or {}).get("protocol")
    if protocol != "original":
        raise ConfigError(f"06_fusion: original_cnn_run {cfg.original_cnn_run!r}: {bundle} was not trained under the "
                          f"original study's protocol (its bundle says {protocol!r})")
    ids, cnn = extract_features(predictor.model, index, predictor.preprocessing, num_workers=0,
                                device=str(predictor.device), cache_dir=cfg.cache_dir)
    cnn = align(index, ids, cnn, f"CNN features of {bundle}")
    text = align(index, inputs.fd.index["id"], inputs.fd.text, "caption embeddings")
    test = (index["split"] == "test").to_numpy()
    with torch.inference_mode():
        own = torch.softmax(predictor.model.head(torch.as_tensor(cnn[test])).float(), dim=1).numpy()
    fd = FusionData(index.reset_index(drop=True), cnn, text, data, own)
    tcfg = TrainConfig(batch_size=64, lr=1e-3, epochs=50, patience=5, monitor=ORIGINAL_PROTOCOL["monitor"],
                       restore_best=ORIGINAL_PROTOCOL["restore_best"], amp=False,
                       device="cpu" if cfg.device == "auto" else cfg.device)
    runs = []
    for seed in cfg.seeds:
        runs.append(train_head("mlp1", fuse(cnn, None, "cnn"), fd, cnn.shape[1], 0, seed, tcfg, "original", "cnn"))
        for head in ORIGINAL_HEADS:
            runs.append(train_head(head, fuse(cnn, text, "fused", cfg.fusion_norm), fd, cnn.shape[1], text.shape[1],
                                   seed, tcfg, "original", "fused"))
    comparisons = compare_to_cnn(runs, fd, REFERENCE_HEAD, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    return {"cnn_run": cfg.original_cnn_run, "model": predictor.manifest.get("architecture"),
            "n_test": int(test.sum()), "cnn_own_classifier": evaluate(fd.labels[test], own),
            "runs": results_table(runs).to_dict(orient="records"),
            "comparisons": comparisons.to_dict(orient="records")}


def simulated_text(fd: FusionData, encoder, accuracy: float, seed: int, cache_dir) -> tuple[np.ndarray, float]:
    """Embeddings of simulated captions of ``accuracy`` for every image, and their vote accuracy on test."""
    from fer_utils.vlm.base import GenerationSettings
    from fer_utils.vlm.pipeline import caption_index, embed_texts
    from fer_utils.vlm.postprocess import vote_scores
    from fer_utils.vlm.simple import SimulatedCaptioner

    table = caption_index(fd.index, SimulatedCaptioner(accuracy, seed=seed), "", GenerationSettings(), None).table
    text, _ = embed_texts(table["caption"], encoder, cache_dir)
    votes = [None if pd.isna(v) else int(v) for v in table["vote"].to_numpy(dtype=object)[fd.split("test")]]
    return text, vote_scores(votes, fd.labels[fd.split("test")])["accuracy"]


def frozen_features(cfg, fd: FusionData) -> np.ndarray:
    """Penultimate features of ``cfg.frozen_backbone`` with its ImageNet weights, not fine-tuned
    (224 px, ImageNet normalisation; WeightsNotFoundError naming the file when they are missing)."""
    from fer_utils.training.features import extract_features
    from fer_utils.models import create_model
    from fer_utils.options import Preprocessing

    model = create_model(cfg.frozen_backbone, pretrained=True)
    ids, features = extract_features(model, fd.index, Preprocessing.preset(224, "imagenet"), num_workers=0,
                                     device="cpu" if cfg.device == "auto" else cfg.device, cache_dir=cfg.cache_dir)
    return align(fd.index, ids, features, f"frozen {cfg.frozen_backbone} features")


def run_leakage(cfg, inputs: FusionInputs, tcfg: TrainConfig, runs: list[HeadRun]) -> dict:
    """The leakage comparison (:mod:`fer_utils.study.crossfit`): the reference head on leaky and on
    cross-fitted CNN probabilities, alone and fused with the study's captions and with simulated
    captions of ``cfg.leakage_accuracy``; appends the runs, returns what was done."""
    from fer_utils.study.crossfit import CNNRecipe, crossfit_probabilities

    fd = inputs.fd
    recipe = CNNRecipe(model=cfg.crossfit_model, image_size=cfg.crossfit_image_size, epochs=cfg.crossfit_epochs,
                       pretrained=cfg.crossfit_pretrained)
    cf = crossfit_probabilities(fd.index, recipe, cfg.crossfit_folds, cfg.seed)
    simulated, vote_acc = simulated_text(fd, inputs.encoder, cfg.leakage_accuracy, cfg.seed, cfg.cache_dir)
    texts = {"study captions": fd.text, f"simulated p={cfg.leakage_accuracy:g}": simulated}
    for source, proba in (("leaky", cf.leaky), ("cross-fitted", cf.oof)):
        for seed in cfg.seeds:
            runs.append(train_head(REFERENCE_HEAD, fuse(proba, None, "cnn"), fd, NUM_CLASSES, 0, seed, tcfg,
                                   variant=f"leakage:{source}", inputs="cnn"))
            for name, text in texts.items():
                runs.append(train_head(REFERENCE_HEAD, fuse(proba, text, "fused", cfg.fusion_norm), fd, NUM_CLASSES,
                                       text.shape[1], seed, tcfg, variant=f"leakage:{source}/{name}", inputs="fused"))
    if cfg.frozen_backbone:   # ImageNet features, never trained on these images: no leakage either
        frozen = frozen_features(cfg, fd)
        for seed in cfg.seeds:
            runs.append(train_head(REFERENCE_HEAD, fuse(frozen, None, "cnn"), fd, frozen.shape[1], 0, seed, tcfg,
                                   variant="leakage:frozen", inputs="cnn"))
            for name, text in texts.items():
                runs.append(train_head(REFERENCE_HEAD, fuse(frozen, text, "fused", cfg.fusion_norm), fd,
                                       frozen.shape[1], text.shape[1], seed, tcfg, variant=f"leakage:frozen/{name}",
                                       inputs="fused"))
    train = fd.split("train")
    y = fd.labels
    confidence = {source: {"train accuracy": float((proba[train].argmax(1) == y[train]).mean()),
                           "test accuracy": float((proba[fd.split("test")].argmax(1) == y[fd.split("test")]).mean())}
                  for source, proba in (("leaky", cf.leaky), ("cross-fitted", cf.oof))}
    return {"folds": cf.folds, "recipe": dataclasses.asdict(recipe), "seconds": cf.seconds,
            "simulated_vote_accuracy": vote_acc, "cnn": confidence}


def attention_check(inputs: FusionInputs, cfg, seed: int = 0) -> pd.DataFrame:
    """The original attention heads on the test split's fused inputs: the range of their attention
    weights, and the largest change of their logits when the caption half is replaced by zeros
    (freshly initialised: the flaw is in the arithmetic, whatever the weights)."""
    import torch

    from fer_utils.models.heads.fusion import attention_weights
    from fer_utils.models.heads.registry import create_head

    fd = inputs.fd
    x = torch.as_tensor(fuse(fd.cnn, fd.text, "fused", cfg.fusion_norm)[fd.split("test")])
    cnn_dim = fd.cnn.shape[1]
    blanked = x.clone()
    blanked[:, cnn_dim:] = 0
    rows = []
    for name in ("original_attention", "original_cross_attention", "original_self_attention"):
        torch.manual_seed(seed)
        head = create_head(name, cnn_dim=cnn_dim, text_dim=fd.text.shape[1]).eval()
        with torch.inference_mode():
            weights = attention_weights(head, x)
            change = (head(x) - head(blanked)).abs().max().item()
        rows.append({"head": name, "attention weights": f"{weights.min().item():.6f} to {weights.max().item():.6f}",
                     "largest logit change without the caption": change,
                     "uses the caption": "yes (as one linear layer)" if change > 0 else "no"})
    return pd.DataFrame(rows).set_index("head")


def vote_accuracy(inputs: FusionInputs) -> float:
    """The study's captions' VLM-vote accuracy on the test split (a missing vote counts as wrong)."""
    from fer_utils.vlm.postprocess import vote_scores

    fd = inputs.fd
    votes = inputs.captions["vote"].to_numpy(dtype=object)[fd.split("test")]
    return vote_scores([None if pd.isna(v) else int(v) for v in votes], fd.labels[fd.split("test")])["accuracy"]


def results_table(runs: list[HeadRun]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in runs])


def summarize(cfg, inputs: FusionInputs, runs: list[HeadRun], comparisons: pd.DataFrame, best: str,
              trainable_best: str, sweep: list[dict]) -> dict:
    """The run record's metrics: the headline (the validation-best fused variant, mean over seeds),
    every head run, the comparisons, the CNN's own classifier and what produced the inputs."""
    from fer_utils.training.evaluate import evaluate

    table = results_table(runs)
    chosen = table[(table["head"] == best) & (table["inputs"] == "fused") & table["variant"].isin(["main", "late"])]
    y_test = inputs.fd.labels[inputs.fd.split("test")]
    own = evaluate(y_test, inputs.fd.cnn_own_test_proba) if inputs.fd.cnn_own_test_proba is not None else None
    return {
        "accuracy": float(chosen["accuracy"].mean()), "macro_f1": float(chosen["macro_f1"].mean()),
        "weighted_f1": float(chosen["weighted_f1"].mean()), "val_macro_f1": float(chosen["val_macro_f1"].mean()),
        "best_head": best, "controls_and_sweep_head": trainable_best, "seeds": list(cfg.seeds),
        "runs": table.to_dict(orient="records"),
        "comparisons": comparisons.to_dict(orient="records"),
        "sweep": sweep,
        "cnn_bundle": {k: inputs.bundle[k] for k in ("path", "model", "val_macro_f1")},
        "cnn_own_classifier": own,
        "captioner": inputs.captioner,
        "encoder": {"name": inputs.encoder.name, "dim": int(inputs.encoder.dim), "identity": inputs.encoder.identity},
        "dims": {"cnn": int(inputs.fd.cnn.shape[1]), "text": int(inputs.fd.text.shape[1])},
    }


def predictions_long(runs: list[HeadRun], fd: FusionData) -> pd.DataFrame:
    """One row per (variant, head, inputs, seed, test image): id, true, predicted."""
    ids = fd.test_ids
    y = fd.labels[fd.split("test")]
    frames = [pd.DataFrame({"variant": r.variant, "head": r.head, "inputs": r.inputs, "seed": r.seed,
                            "id": ids, "true": y, "predicted": r.test_pred}) for r in runs]
    return pd.concat(frames, ignore_index=True)


def export_bundle(cfg, inputs: FusionInputs, run: FusionRun) -> Path | None:
    """The validation-best servable fused model as a bundle in ``<run_dir>/bundle`` (None when the
    captions cannot be made for a new image: simulated or precomputed captions).

    The head is the best trainable fused head of the main grid and the seed its best on validation;
    it is trained again (same seed, same data: the same weights) rather than kept from the grid."""
    from fer_utils.inference.bundle import is_servable_captioner
    from fer_utils.inference.fused_bundle import save_fused_bundle
    from fer_utils.study.prompt_study import settings_of
    from fer_utils.vlm.prompts import resolve_prompt

    if not is_servable_captioner(cfg.captioner):
        return None
    head = run.metrics["controls_and_sweep_head"]
    candidates = [r for r in run.runs if (r.variant, r.head, r.inputs) == ("main", head, "fused")]
    best = max(candidates, key=lambda r: (r.val_macro_f1, -r.seed))
    fd = inputs.fd
    cnn_dim, text_dim = fd.cnn.shape[1], fd.text.shape[1]
    model, again = train_head(head, fuse(fd.cnn, fd.text, "fused", cfg.fusion_norm), fd, cnn_dim, text_dim,
                              best.seed, head_training_config(cfg), return_model=True)
    captioner = {"name": cfg.captioner, "model_id": cfg.model_id if cfg.captioner == "blip2" else "",
                 "revision": cfg.revision, "seed": cfg.seed, "dtype": cfg.dtype,
                 "identity": inputs.captioner["identity"]}
    encoder = {"name": cfg.text_encoder, **({"model_id": cfg.text_model_id} if cfg.text_model_id else {}),
               "identity": inputs.encoder.identity}
    metrics = {"val_macro_f1": again.val_macro_f1, "seed": best.seed,
               **{k: again.metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1")}}
    return save_fused_bundle(Path(cfg.run_dir) / "bundle", cnn_bundle=inputs.bundle["path"], captioner=captioner,
                             prompt=resolve_prompt(cfg.prompt)[1], settings=settings_of(cfg),
                             postprocess=cfg.postprocess, encoder=encoder, head_name=head, head=model,
                             cnn_dim=cnn_dim, text_dim=text_dim, fusion_norm=cfg.fusion_norm, metrics=metrics,
                             data=fd.data)


def save_fusion_run(cfg, inputs: FusionInputs, run: FusionRun) -> tuple[Path, Path | None]:
    """The run record (``predictions.csv`` in long form) and, when ``cfg.save_bundle`` and the
    captions are servable, the fused model bundle inside it. Returns ``(record, bundle or None)``."""
    folder = Path(record(cfg, run.metrics, inputs.fd.data, predictions=predictions_long(run.runs, inputs.fd)))
    bundle = export_bundle(cfg, inputs, run) if cfg.save_bundle else None
    return folder, bundle


__all__ = ["FusionInputs", "FusionRun", "REFERENCE_HEAD", "attention_check", "check_config", "cnn_bundle_of", "export_bundle",
           "head_training_config", "load_inputs",
           "predictions_long", "results_table", "run_fusion", "save_fusion_run", "summarize", "vote_accuracy"]

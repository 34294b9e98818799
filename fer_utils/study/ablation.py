"""The statistics, tables and text of the ablation pages (``07_augmentation``, ``08_class_weights``),
from their run record (:mod:`fer_utils.study.ablation_study` writes it):

- :func:`compare_to_plain`: every setting against the plain one (``none``) on the same images,
  the macro-F1 difference averaged over seeds with its paired-bootstrap 95 % interval, McNemar's
  test on the first seed, both p-values Holm-adjusted over the settings of a group;
- :func:`adopt`: the setting the study adopts, from validation predictions only (:data:`RULE`);
- :func:`results_table` (validation and test macro F1 first, fear and disgust recall beside),
  :func:`recall_table`, :func:`tests_table`, :func:`weights_table` and :func:`beta_table`;
- the page's text: :func:`seeds_note` ("n = 1" for one seed, never a mean ± std over one run),
  :func:`scope_note` (what this run left out of the full grid), :func:`adoption_text`,
  :func:`failure_text`, :func:`beta_text`, :func:`reproduced_text`, :func:`conclusion`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fer_utils.errors import DataError
from fer_utils.labels import EMOTIONS, NUM_CLASSES
from fer_utils.study.report import ALPHA, verdict
from fer_utils.training.stats import holm, macro_f1, mcnemar, paired_bootstrap_seeds

PLAIN = "none"
"""The plain setting (no augmentation; the unweighted cross-entropy): every other is compared with it."""
MINORITY = ("fear", "disgust")
"""The classes the original study left poorly learned: their recall is shown beside every setting."""
RULE = ("The study adopts the setting with the highest validation macro F1 (mean over seeds) when its "
        "validation gain over the plain setting has a paired-bootstrap 95 % interval above 0; otherwise it "
        "keeps the plain setting, because the validation images cannot tell the two apart. The test split "
        "is read once per model and chooses nothing.")
COMPARISON_COLUMNS = ("group", "setting", "seeds", "macro_f1", "plain_macro_f1", "gain", "gain_low", "gain_high",
                      "p_bootstrap", "p_holm", "mcnemar_seed", "mcnemar_b", "mcnemar_c", "p_mcnemar", "p_mcnemar_holm")


# --------------------------------------------------------------------------------------------------
# Statistics (run time, stored in the record)
# --------------------------------------------------------------------------------------------------

def _by_seed(frame: pd.DataFrame, setting: str) -> dict[int, pd.DataFrame]:
    return {int(seed): part.sort_values("id", kind="stable").reset_index(drop=True)
            for seed, part in frame[frame["setting"] == setting].groupby("seed")}


def compare_to_plain(predictions: pd.DataFrame, settings: Mapping[str, Sequence[str]], reference: str = PLAIN,
                     n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each setting of ``settings`` (group -> settings) against ``reference`` of the same group, on
    the images of ``predictions`` (long form: group, setting, seed, id, true, predicted), seed s
    against seed s: the macro-F1 difference (mean over the shared seeds) with its paired-bootstrap
    95 % interval and p-value (:func:`~fer_utils.training.stats.paired_bootstrap_seeds`), McNemar's test on the
    first shared seed, both p-values Holm-adjusted over the settings of each group
    (``p_holm``, ``p_mcnemar_holm``). Runs of one seed that differ in their images are a DataError."""
    rows = []
    for group, names in settings.items():
        own = predictions[predictions["group"] == group]
        plain = _by_seed(own, reference)
        for name in names:
            other = _by_seed(own, name)
            seeds = sorted(set(plain) & set(other))
            if name == reference or not seeds:
                continue
            for s in seeds:
                if not other[s]["id"].equals(plain[s]["id"]):
                    raise DataError(f"{group}: {name} and {reference} (seed {s}) were scored on different images")
            y = plain[seeds[0]]["true"].to_numpy()
            ours = [other[s]["predicted"].to_numpy() for s in seeds]
            theirs = [plain[s]["predicted"].to_numpy() for s in seeds]
            test = paired_bootstrap_seeds(y, ours, theirs, "macro_f1", n_boot=n_bootstrap, seed=seed,
                                          num_classes=NUM_CLASSES)
            first = mcnemar(y, ours[0], theirs[0])
            rows.append({"group": group, "setting": name, "seeds": len(seeds),
                         "macro_f1": float(np.mean([macro_f1(y, p, NUM_CLASSES) for p in ours])),
                         "plain_macro_f1": float(np.mean([macro_f1(y, p, NUM_CLASSES) for p in theirs])),
                         "gain": test["difference"], "gain_low": test["low"], "gain_high": test["high"],
                         "p_bootstrap": test["p_value"], "p_holm": np.nan, "mcnemar_seed": seeds[0],
                         "mcnemar_b": first["b"], "mcnemar_c": first["c"], "p_mcnemar": first["p_value"],
                         "p_mcnemar_holm": np.nan})
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for _, index in table.groupby("group").groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p_bootstrap"].to_numpy())
        table.loc[index, "p_mcnemar_holm"] = holm(table.loc[index, "p_mcnemar"].to_numpy())
    return table


def adopt(runs: pd.DataFrame, val_predictions: pd.DataFrame, settings: Mapping[str, Sequence[str]],
          reference: str = PLAIN, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per group, the setting the study adopts by :data:`RULE`, from validation numbers only:
    ``{"adopted", "best_on_validation", "val_macro_f1": {setting: mean over seeds}, "reason"}`` and,
    where the best is not the plain setting, its validation gain with the interval and p-value
    (:func:`compare_to_plain` on ``val_predictions``). ``reason``: ``plain_best`` (the plain setting
    is best on validation; ties go to it), ``val_gain`` (adopted: the interval is above 0) or
    ``val_unclear`` (the plain setting kept)."""
    out = {}
    for group, names in settings.items():
        rows = runs[(runs["group"] == group) & runs["setting"].isin(names)]
        val = rows.groupby("setting")["val_macro_f1"].mean().reindex(list(names)).dropna()
        best = max(val.index, key=lambda s: (val[s], s == reference))
        entry = {"adopted": reference, "best_on_validation": best, "val_macro_f1": val.to_dict(),
                 "reason": "plain_best"}
        if best != reference:
            test = compare_to_plain(val_predictions, {group: [best]}, reference, n_bootstrap, seed).iloc[0]
            entry.update(val_gain=float(test["gain"]), val_low=float(test["gain_low"]),
                         val_high=float(test["gain_high"]), val_p=float(test["p_bootstrap"]),
                         reason="val_gain" if test["gain_low"] > 0 else "val_unclear")
            entry["adopted"] = best if test["gain_low"] > 0 else reference
        out[group] = entry
    return out


def choose_beta(runs: pd.DataFrame) -> float:
    """The effective number's beta with the highest mean validation macro F1 over seeds among the
    ``effective_<beta>`` runs of one group (ties: the smallest beta)."""
    effective = runs[runs["setting"].str.startswith("effective_")]
    if effective.empty:
        raise DataError("no effective-number runs to choose a beta from")
    return float(effective.groupby("beta")["val_macro_f1"].mean().idxmax())


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

def setting_label(setting: str, metrics: Mapping | None = None) -> str:
    """How a page's tables and plots name a setting, briefly: ``rrc_0.8`` -> ``crop 0.8–1``,
    ``effective_0.99`` -> ``effective β=0.99`` (:func:`settings_legend` says what each one is)."""
    metrics = metrics or {}
    if setting.startswith("rrc_"):
        return f"crop {setting[4:]}–1"
    if setting.startswith("effective_"):
        return f"effective β={setting[10:]}"
    labels = {
        PLAIN: "none (plain)",
        "hflip": "flip p=0.5",
        "hflip_rotate": f"flip + rotate ±{metrics.get('rotate_degrees', 15):g}°",
        "minority": "minority only",
        "hflip_always": "always flip (p=1)",
        "inverse": "inverse frequency",
        "focal": f"focal γ={metrics.get('focal_gamma', 2):g}",
        "sampler": "balanced sampler",
    }
    return labels.get(setting, setting)


def _describe(setting: str, metrics: Mapping) -> str:
    if setting.startswith("rrc_"):
        return (f"`RandomResizedCrop`: a random part covering {100 * float(setting[4:]):.0f} to 100 % of the image's "
                "area "
                "(aspect ratio 3:4 to 4:3), resized back to the input size")
    if setting.startswith("effective_"):
        return (f"class weights (1 − β) / (1 − β^n_c) from the effective number of samples (Cui et al., 2019), "
                f"β = {setting[10:]} (chosen on validation)")
    minority = ", ".join(metrics.get("minority_classes") or []) or "the classes below the median training count"
    degrees = f"{metrics.get('rotate_degrees', 15):g}"
    return {
        PLAIN: ("the unweighted cross-entropy, batches shuffled" if "betas" in metrics else "no augmentation")
        + "; the reference of every comparison",
        "hflip": "`RandomHorizontalFlip(p=0.5)`: half the training images mirrored, a different half every epoch",
        "hflip_rotate": f"the flip and a random rotation of up to ±{degrees}°",
        "minority": f"the flip and the rotation for the minority classes only ({minority}: training count below the "
                    "median class's); the other classes unaugmented",
        "hflip_always": "`RandomHorizontalFlip(p=1.0)`, the original study's \"flip\": every training image mirrored "
                        "and no test image, so it adds no variety (a mirrored training set)",
        "inverse": "class weights N / (K n_c): a class's weight inversely proportional to its training count",
        "focal": f"the focal loss −(1 − p)^γ log p with γ = {metrics.get('focal_gamma', 2):g}, no class weights: "
                 "the "
                 "loss of images already classified with confidence is turned down",
        "sampler": "batches drawn class-balanced (each class equally likely, images drawn with replacement), "
                   "the unweighted cross-entropy",
    }.get(setting, setting)


def settings_legend(metrics: Mapping, group: str) -> str:
    """What each setting of a group is, as a Markdown list under the names the tables use."""
    return "\n".join(f"- **{setting_label(s, metrics)}**: {_describe(s, metrics)}"
                     for s in _settings(metrics, group)) + "\n"


def history_of(history: pd.DataFrame, metrics: Mapping, group: str, seed: int | None = None) -> pd.DataFrame:
    """The epochs of a group's runs of one seed (the first by default), settings named as the
    tables name them, in the run's order (for :func:`fer_utils.study.plots.training_curves`)."""
    seed = metrics["seeds"][0] if seed is None else seed
    rows = history[(history["group"] == group) & (history["seed"] == seed)
                   & history["setting"].isin(_settings(metrics, group))]
    order = {s: k for k, s in enumerate(_settings(metrics, group))}
    rows = rows.sort_values(["setting", "epoch"], key=lambda c: c.map(order) if c.name == "setting" else c)
    return rows.assign(setting=[setting_label(s, metrics) for s in rows["setting"]])


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _settings(metrics: Mapping, group: str) -> list[str]:
    return list(metrics["settings"][group])


def _runs(metrics: Mapping, group: str, settings: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs of a group (of ``settings``, by default those compared), recall flattened into
    ``recall_<class>`` columns."""
    table = pd.DataFrame(metrics["runs"])
    table = table[(table["group"] == group) & table["setting"].isin(settings or _settings(metrics, group))]
    recall = pd.DataFrame([{name: scores["recall"] for name, scores in per_class.items()}
                           for per_class in table["per_class"]], index=table.index).add_prefix("recall_")
    return pd.concat([table.drop(columns=["per_class", "confusion_matrix"]), recall], axis=1)


def _seeds(metrics: Mapping) -> int:
    return len(metrics["seeds"])


def _majority(metrics: Mapping) -> tuple[str, dict]:
    from fer_utils.study.compare import always_predicting

    support = [metrics["test_support"][name] for name in EMOTIONS]
    label, scores = always_predicting(np.repeat(np.arange(len(EMOTIONS)), support))
    return EMOTIONS[label], scores


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

RESULT_COLUMNS = {"val_macro_f1": "val macro F1", "macro_f1": "test macro F1", "accuracy": "test accuracy",
                  "weighted_f1": "test weighted F1", **{f"recall_{c}": f"{c} recall" for c in MINORITY}}


def results_table(metrics: Mapping, group: str) -> pd.DataFrame:
    """One row per setting, in the run's order: validation and test macro F1 first, then test
    accuracy, weighted F1 and the test recall of fear and disgust, ``n`` (seeds) and the epochs run;
    mean ± std where a setting has several seeds, the single value where it has one; last, the
    majority-class baseline (always predicting the most frequent test class)."""
    from fer_utils.study.compare import mean_pm_std, summarize

    runs = _runs(metrics, group)
    summary = summarize(runs, by="setting", metrics=list(RESULT_COLUMNS))
    shown = mean_pm_std(summary).reindex(_settings(metrics, group)).rename(columns={**RESULT_COLUMNS, "runs": "n"})
    epochs = runs.groupby("setting")["epochs_run"].agg(["min", "max"]).reindex(shown.index)
    shown["epochs"] = [f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"
                       for lo, hi in zip(epochs["min"], epochs["max"])]
    shown.index = [setting_label(s, metrics) for s in shown.index]
    shown = shown.astype(object)
    name, base = _majority(metrics)
    shown.loc[f"always {name} (majority)"] = {
        "val macro F1": "", "test macro F1": f"{base['macro_f1']:.3f}", "test accuracy": f"{base['accuracy']:.3f}",
        "test weighted F1": f"{base['weighted_f1']:.3f}", "n": "", "epochs": "",
        **{f"{c} recall": f"{base['per_class'][c]['recall']:.3f}" for c in MINORITY}}
    return shown


def recall_table(metrics: Mapping, group: str) -> pd.DataFrame:
    """Test recall per setting (rows, labelled) and class (columns), mean over seeds."""
    runs = _runs(metrics, group)
    table = runs.groupby("setting")[[f"recall_{c}" for c in EMOTIONS]].mean().reindex(_settings(metrics, group))
    table.columns = list(EMOTIONS)
    table.index = [setting_label(s, metrics) for s in table.index]
    return table


def _comparisons(metrics: Mapping, group: str) -> pd.DataFrame:
    table = pd.DataFrame(metrics["comparisons"], columns=list(COMPARISON_COLUMNS))
    return table[table["group"] == group].reset_index(drop=True)


def significant(row: Mapping) -> tuple[bool, bool]:
    """``(by McNemar, by the bootstrap)`` after Holm's adjustment (the bootstrap's interval must
    also exclude 0)."""
    by_bootstrap = row["p_holm"] <= ALPHA and (row["gain_low"] > 0 or row["gain_high"] < 0)
    return bool(row["p_mcnemar_holm"] <= ALPHA), bool(by_bootstrap)


def tests_table(metrics: Mapping, group: str) -> pd.DataFrame:
    """Each setting against the plain one on the test images: test macro F1 of both, the difference
    with its paired-bootstrap 95 % interval and Holm-adjusted p-value, McNemar's counts (b: images
    only the setting gets right, c: only the plain one; first seed) and Holm-adjusted p-value, and
    what that says."""
    table = _comparisons(metrics, group)
    several = _seeds(metrics) > 1
    mean = "mean " if several else ""
    return pd.DataFrame({
        "setting": [setting_label(s, metrics) for s in table["setting"]],
        f"macro F1 ({mean}setting / plain)": [f"{a:.3f} / {b:.3f}" for a, b in
                                              zip(table["macro_f1"], table["plain_macro_f1"])],
        "difference [95 % CI]": [f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]" for g, lo, hi in
                                 zip(table["gain"], table["gain_low"], table["gain_high"])],
        "p (Holm)": [f"{p:.3f}" for p in table["p_holm"]],
        "McNemar b / c" + (f" (seed {metrics['seeds'][0]})" if several else ""):
            [f"{b} / {c}" for b, c in zip(table["mcnemar_b"], table["mcnemar_c"])],
        "McNemar p (Holm)": [f"{p:.3f}" for p in table["p_mcnemar_holm"]],
        "verdict": [verdict(*significant(row)) for row in table.to_dict(orient="records")],
    }).set_index("setting").rename_axis(None)


def gains(metrics: Mapping, group: str) -> tuple[pd.DataFrame, list[str]]:
    """The comparisons of a group and their labels, for :func:`fer_utils.study.plots.gains`."""
    table = _comparisons(metrics, group)
    return table, [setting_label(s, metrics) for s in table["setting"]]


def weights_table(metrics: Mapping) -> pd.DataFrame:
    """Per class: the training count and each weighting's weights divided by its smallest weight
    (only the ratios matter to the loss), then a row with the largest ratio."""
    weights = metrics["class_weights"]
    schemes = {"inverse frequency": weights["inverse"],
               **{f"effective, β = {b:g}": weights[f"effective_{b:g}"] for b in metrics["betas"]}}
    table = pd.DataFrame({"training images": weights["counts"]}, index=list(EMOTIONS), dtype=object)
    for name, values in schemes.items():
        values = np.asarray(values, dtype=float)
        table[name] = [f"{v:.2f}" for v in values / values.min()]
    table.loc["largest / smallest"] = ["", *[f"{max(v) / min(v):.2f}" for v in schemes.values()]]
    return table


def _ratio(values) -> float:
    return float(max(values) / min(values))


def beta_table(metrics: Mapping) -> pd.DataFrame:
    """Per candidate beta: the weight ratio (largest / smallest) on these training counts and on
    RAF-DB's, and each group's validation macro F1 (mean over seeds; * marks the beta chosen)."""
    weights = metrics["class_weights"]
    rows = []
    for beta in metrics["betas"]:
        row = {"": f"β = {beta:g}", "weight ratio (these counts)": f"{_ratio(weights[f'effective_{beta:g}']):.2f}",
               "weight ratio (RAF-DB counts)": f"{_ratio(weights[f'rafdb_effective_{beta:g}']):.2f}"}
        for group, label in metrics["groups"].items():
            runs = pd.DataFrame(metrics["runs"])
            runs = runs[(runs["group"] == group) & (runs["setting"] == f"effective_{beta:g}")]
            chosen = metrics["chosen_beta"].get(group) == beta
            row[f"{'mean ' * (_seeds(metrics) > 1)}val macro F1: {label}"] = (f"{runs['val_macro_f1'].mean():.3f}"
                                                                              + (" *" if chosen else ""))
        rows.append(row)
    return pd.DataFrame(rows).set_index("").rename_axis(None)


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------

def _noun(metrics: Mapping) -> str:
    """What the page calls its settings: the imbalance study's are treatments."""
    return "treatment" if "betas" in metrics else "setting"


def seeds_note(metrics: Mapping) -> str:
    """How many training runs stand behind each number (Markdown)."""
    seeds = metrics["seeds"]
    noun = _noun(metrics)
    if len(seeds) == 1:
        return (f"**n = 1 per {noun}** (seed {seeds[0]}): every number on this page is one training run, not a "
                "mean ± standard deviation over seeds. The paired-bootstrap intervals cover the resampling of the "
                "test images only, not how much another seed would move a number; a difference smaller than a "
                "seed's spread can look significant here.")
    return (f"**n = {len(seeds)} per {noun}** (seeds {', '.join(map(str, seeds))}): numbers are mean ± standard "
            f"deviation over the seeds; the paired tests average each seed's difference with the plain {noun}'s "
            "run of the same seed.")


_SCOPE = {"settings": "settings", "treatments": "treatments", "class_weight_betas": "betas of the effective number",
          "seeds": "seeds"}


def scope_note(cfg) -> str:
    """What this run left out of the full grid (the config's defaults are the full study's), as
    Markdown: the settings or treatments, betas and seeds it did not run, a shorter or smaller
    training, the CNN not trained end to end; empty when it ran the full grid."""
    full = type(cfg)()
    parts = []
    for key, noun in _SCOPE.items():
        ours, theirs = getattr(cfg, key, None), getattr(full, key, None)
        if ours is None or list(ours) == list(theirs):
            continue
        missing = [str(v) for v in theirs if v not in ours]
        parts.append(f"{len(ours)} of the {len(theirs)} {noun}"
                     + (f" ({', '.join(missing)} left out)" if missing else ""))
    if getattr(cfg, "epochs", None) is not None and cfg.epochs != full.epochs:
        parts.append(f"at most {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} of training instead of {full.epochs}")
    if getattr(cfg, "image_size", None) is not None and cfg.image_size != full.image_size:
        parts.append(f"{cfg.image_size} px images instead of {full.image_size} px")
    if getattr(full, "train_cnn", False) and not cfg.train_cnn:
        parts.append("no CNN trained end to end: every treatment is studied on heads trained on cached features "
                     "(seconds each), the CNN side as a head on the frozen features of the CNN bundle")
    if not parts:
        return ""
    return ("**Reduced grid.** To fit its share of the time budget this run covers " + "; ".join(parts)
            + ". The full profile (`fer study run --profile full --data /path/to/RAF-DB`) runs the whole grid.")


def budget_note(metrics: Mapping, group: str) -> str:
    """How many of a group's models were still improving when their epoch budget ended (their best
    validation epoch the last one they ran): compared at that budget, a setting that learns more
    slowly loses, whatever it would reach trained longer. Empty where no run records its best epoch."""
    runs = _runs(metrics, group)
    runs = runs[runs["best_epoch"].notna()]
    if runs.empty:
        return ""
    last = runs[runs["best_epoch"] == runs["epochs_run"]]
    if last.empty:
        return ""
    names = [setting_label(s, metrics) for s in _settings(metrics, group) if s in set(last["setting"])]
    return (f"**Still learning.** {len(last)} of the {len(runs)} models had their best validation macro F1 at the last "
            f"epoch they ran ({', '.join(names)}): the budget ended before they stopped improving. Read the "
            "comparisons as made at this budget: a setting that makes the training images harder learns more slowly, "
            "and here that shows as a loss whatever it would reach trained longer.\n")


def _val_counts(metrics: Mapping) -> str:
    support = metrics.get("val_support") or {}
    if not support:
        return ""
    return (f" ({sum(support.values())} images, {', '.join(f'{c} {support[c]}' for c in MINORITY)})")


def adoption_text(metrics: Mapping, group: str) -> str:
    """Which setting the study adopts for ``group`` and why, from the validation numbers (Markdown)."""
    entry = metrics["adoption"][group]
    val = entry["val_macro_f1"]
    mean = "mean " if _seeds(metrics) > 1 else ""
    best, plain = entry["best_on_validation"], val[PLAIN]
    ranked = sorted(val, key=val.get, reverse=True)
    runner = next((s for s in ranked if s != best), None)
    label = setting_label(entry["adopted"], metrics)
    if entry["reason"] == "plain_best":
        text = (f"**Adopted: {label}.** It has the highest {mean}validation macro F1 ({plain:.3f}"
                + (f"; next {setting_label(runner, metrics)} {val[runner]:.3f}" if runner else "") + ").")
    else:
        interval = f"{entry['val_gain']:+.3f} [{entry['val_low']:+.3f}, {entry['val_high']:+.3f}]"
        if entry["reason"] == "val_gain":
            text = (f"**Adopted: {label}.** It has the highest {mean}validation macro F1 ({val[best]:.3f} against "
                    f"{plain:.3f} for the plain setting), and the paired-bootstrap interval of that validation gain, "
                    f"{interval}, is above 0.")
        else:
            text = (f"**Adopted: {label}.** {_capital(setting_label(best, metrics))} has the highest {mean}validation "
                    f"macro F1 ({val[best]:.3f} against {plain:.3f} for the plain setting), but the paired-bootstrap "
                    "interval of "
                    f"that validation gain, {interval}, includes 0: the validation split{_val_counts(metrics)} cannot "
                    "tell them apart, so the simpler plain setting stays.")
        if best.startswith("effective_"):
            text += " (Its β was chosen on the same validation split, which flatters its validation score.)"
    runs = _runs(metrics, group, [entry["adopted"]])
    text += (f" On the test split it scores {mean}macro F1 {runs['macro_f1'].mean():.3f}, fear recall "
             f"{runs['recall_fear'].mean():.3f} and disgust recall {runs['recall_disgust'].mean():.3f}.")
    return text + "\n"


def failure_text(metrics: Mapping, predictions: pd.DataFrame, groups: Sequence[str] | None = None) -> str:
    """The settings whose model learned (next to) nothing (of ``groups``, by default all), said in
    plain words beside the budget they had (:func:`fer_utils.study.compare.failure_report`); empty when
    every model learned something."""
    from fer_utils.study.compare import failure_report

    records = {}
    many = len(metrics["groups"]) > 1
    for group, label in metrics["groups"].items():
        if groups is not None and group not in groups:
            continue
        for row in _runs(metrics, group).to_dict(orient="records"):
            pred = predictions[(predictions["group"] == group) & (predictions["setting"] == row["setting"])
                               & (predictions["seed"] == row["seed"])]
            name = setting_label(row["setting"], metrics) + (f", {label}" if many else "")
            run = (f"{group}-" if many else "") + f"{row['setting']}-s{row['seed']}"
            records[run] = {"params": {"setting": name}, "metrics": row, "predictions": pred}
    text = failure_report(records, by="setting")
    if not text:
        return ""
    return text + ("\n\nThese models had the budget of the other settings (the table's epochs); a setting that makes "
                   "the task harder learns more slowly, and under a short budget can stop before it leaves the "
                   "majority class. Their comparisons with the plain setting measure that, not what the setting "
                   "would do trained to convergence.\n")


def beta_text(metrics: Mapping) -> str:
    """What the candidate betas do to the weights on these counts and on RAF-DB's, and which was chosen."""
    weights = metrics["class_weights"]
    counts = dict(zip(EMOTIONS, weights["counts"]))
    rafdb = dict(zip(EMOTIONS, weights["rafdb_counts"]))
    low, high = min(counts, key=counts.get), max(counts, key=counts.get)
    raf_low, raf_high = min(rafdb, key=rafdb.get), max(rafdb, key=rafdb.get)
    betas = metrics["betas"]
    ratios = {b: _ratio(weights[f"effective_{b:g}"]) for b in betas}
    raf = {b: _ratio(weights[f"rafdb_effective_{b:g}"]) for b in betas}
    near = [b for b in betas if ratios[b] < 1.25]
    text = (f"The effective number's weight of a class is (1 − β) / (1 − β^n). On these training counts ({low} "
            f"{counts[low]} to {high} {counts[high]} images), "
            + ", ".join(f"β = {b:g} makes the largest weight {ratios[b]:.2f} times the smallest" for b in betas)
            + f"; inverse frequency {_ratio(weights['inverse']):.2f} times. ")
    if near:
        text += (f"So β = {', '.join(f'{b:g}' for b in near)} gives almost equal weights: almost the plain loss. ")
    raf_near = [b for b in betas if raf[b] < 1.25]
    text += (f"On RAF-DB's counts ({raf_low} {rafdb[raf_low]:,} to {raf_high} {rafdb[raf_high]:,}) the ratios are "
             + ", ".join(f"{raf[b]:.2f}" for b in betas) + " for the same betas"
             + (f": there β = {', '.join(f'{b:g}' for b in raf_near)} is the plain loss in all but name."
                if raf_near else ".")
             + " ")
    chosen = metrics.get("chosen_beta") or {}
    text += "Chosen on validation: " + "; ".join(f"β = {chosen[g]:g} for {label}"
                                                  for g, label in metrics["groups"].items() if g in chosen) + "."
    return text + "\n"


def reproduced_text(metrics: Mapping) -> str:
    """Whether the plain head runs equal the fusion study's runs of the same head, input and seed."""
    rows = (metrics.get("fusion") or {}).get("reproduced") or []
    if not rows:
        return ""
    differ = [r for r in rows if abs(r["macro_f1"] - r["fusion_macro_f1"]) > 1e-9]
    if not differ:
        return (f"**The plain heads are the fusion study's.** Each of the {len(rows)} plain runs here (head, input and "
                "seed) repeats the fusion study's run of the same head, input and seed to the last digit of test macro "
                f"F1 (e.g. {rows[0]['macro_f1']:.4f} in both): the two pages measure the same models, and the "
                "treatment is the only change.\n")
    listed = "; ".join(f"{metrics['groups'][r['group']]}, seed {r['seed']}: {r['macro_f1']:.4f} here, "
                       f"{r['fusion_macro_f1']:.4f} there" for r in differ)
    return (f"**{len(differ)} of the {len(rows)} plain heads do not repeat the fusion study's run of the same head, "
            f"input and seed** ({listed}): the inputs or the training changed since the fusion run was recorded; "
            "re-run `fer study run --only 06_fusion`.\n")


def conclusion(metrics: Mapping) -> str:
    """What each group's comparisons say (Markdown): the settings better or worse than the plain one
    on test after Holm's correction, by both tests or by one only (weak evidence), the rest; the best
    recall of fear and disgust another setting reaches against the plain one's; what is adopted."""
    parts = []
    support = metrics["test_support"]
    noun = _noun(metrics)
    for group, label in metrics["groups"].items():
        table = _comparisons(metrics, group)
        recall = recall_table(metrics, group)
        plain_label = setting_label(PLAIN, metrics)
        found: dict[str, list[str]] = {}
        for row in table.to_dict(orient="records"):
            tests = significant(row)
            if any(tests):
                key = ("better" if row["gain"] > 0 else "worse") + (" by both tests" if all(tests) else
                                                                    " by one test only (weak evidence)")
                found.setdefault(key, []).append(f"{setting_label(row['setting'], metrics)} ({row['gain']:+.3f})")
        rest = len(table) - sum(map(len, found.values()))
        text = f"**{_capital(label)}.** Against the plain {noun}, in test macro F1 after Holm's correction: "
        text += "; ".join([f"{key}: {', '.join(names)}" for key, names in found.items()]
                          + ([f"no significant difference for {'the other ' if found else ''}{rest} of the "
                              f"{len(table)}"] if rest else [])) + ". "
        others = recall.drop(index=plain_label)
        best = {c: others[c].idxmax() for c in MINORITY}
        reached = {name: [f"{c} {others.loc[name, c]:.2f}" for c in MINORITY if best[c] == name]
                   for name in dict.fromkeys(best.values())}
        text += (f"The plain {noun} recalls {recall.loc[plain_label, 'fear']:.2f} of the fear and "
                 f"{recall.loc[plain_label, 'disgust']:.2f} of the disgust test images; the best of the others: "
                 + "; ".join(f"{name} {' and '.join(values)}" for name, values in reached.items())
                 + f" (with {support['fear']} fear and {support['disgust']} disgust test images, one image moves a "
                 f"recall by {1 / max(1, min(support[c] for c in MINORITY)):.2f}). "
                 f"Adopted: {setting_label(metrics['adoption'][group]['adopted'], metrics)}.")
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def show_group(metrics: Mapping, predictions: pd.DataFrame, group: str, legend: bool = True) -> None:
    """Display one group's part of a page in a notebook: (with ``legend``) :func:`settings_legend`,
    :func:`results_table`, :func:`failure_text`, :func:`budget_note`, the recall heatmap (fear and
    disgust boxed), :func:`tests_table` with the gains plot, and :func:`adoption_text`."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from fer_utils.study import plots
    from fer_utils.study.report import show

    if legend:
        show(settings_legend(metrics, group))
    display(results_table(metrics, group))
    show(failure_text(metrics, predictions, [group]))
    show(budget_note(metrics, group))
    seeds = metrics["seeds"]
    plots.recall_heatmap(recall_table(metrics, group), MINORITY, title="Recall per class (test"
                         + (f", mean over {len(seeds)} seeds)" if len(seeds) > 1 else f", seed {seeds[0]})"))
    plt.show()
    display(tests_table(metrics, group))
    table, labels = gains(metrics, group)
    plots.gains(table, labels, title=f"Each {_noun(metrics)} minus the plain one, test macro F1")
    plt.show()
    show(adoption_text(metrics, group))


__all__ = ["COMPARISON_COLUMNS", "MINORITY", "PLAIN", "RULE", "adopt", "adoption_text", "beta_table", "beta_text",
           "budget_note", "choose_beta", "compare_to_plain", "conclusion", "failure_text", "gains", "history_of",
           "recall_table", "reproduced_text", "results_table", "scope_note", "seeds_note", "setting_label",
           "settings_legend", "show_group", "significant", "tests_table", "weights_table"]

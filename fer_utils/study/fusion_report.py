"""Page text and tables of the fusion page, from its run record (torch-free to import).

- :func:`heads_table`: every head on every input, mean ± std over seeds, beside the CNN's own
  classifier and the majority-class baseline;
- :func:`gains_table`: each fused variant minus the CNN-only head on the same test images, with
  its paired-bootstrap interval, Holm-adjusted p-value and McNemar's test;
- :func:`per_class_change`: per-class F1 of the chosen fused head minus the CNN-only head's;
- :func:`conclusion`: what the numbers say, "no significant gain" included when that is what
  they say.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fer_utils.labels import EMOTIONS

ALPHA = 0.05
ORIGINAL_RESULTS = {
    "cnn_own": {"accuracy": 0.7697, "weighted_f1": 0.7666, "macro_f1": 0.6667},
    "mlp1": {"accuracy": 0.8226, "weighted_f1": 0.8220, "macro_f1": 0.7440},
    "original_attention": {"accuracy": 0.8226, "weighted_f1": 0.8224, "macro_f1": 0.7392},
}
"""The original's numbers on its 1,533-image half test set, re-read from its notebooks' outputs
(REFERENCE.md §1): DenseNet121's own classifier, the 1-layer MLP on the fused vector, and "MLP +
Attention" (the head that ignores the caption)."""
SCORES = ("val_macro_f1", "macro_f1", "weighted_f1", "accuracy")


def _pm(values: pd.Series, digits: int = 3) -> str:
    values = values.dropna()
    if len(values) == 0:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def heads_table(metrics: Mapping, majority: Mapping | None = None) -> pd.DataFrame:
    """Test macro F1 per head (rows) on CNN-only, text-only and fused inputs (columns), mean ± std
    over seeds, with the fused runs' validation macro F1 and weighted F1 beside; then the CNN's own
    classifier (the original's comparison) and the majority-class baseline. Main grid and late
    fusion."""
    table = pd.DataFrame(metrics["runs"])
    table = table[table["variant"].isin(["main", "late"])]
    rows = []
    for head, group in table.groupby("head", sort=False):
        by = {inputs: g for inputs, g in group.groupby("inputs")}
        fused = by.get("fused", group.iloc[:0])
        rows.append({"head": head, **{f"{inputs}": _pm(by[inputs]["macro_f1"]) if inputs in by else ""
                                      for inputs in ("cnn", "text", "fused")},
                     "fused val": _pm(fused["val_macro_f1"]), "fused weighted F1": _pm(fused["weighted_f1"])})
    own = metrics.get("cnn_own_classifier")
    if own:
        rows.append({"head": f"the CNN's own classifier ({metrics['cnn_bundle']['model']})",
                     "cnn": f"{own['macro_f1']:.3f}", "fused weighted F1": ""})
    if majority:
        rows.append({"head": f"majority class (always {majority['label']})", "cnn": f"{majority['macro_f1']:.3f}",
                     "text": f"{majority['macro_f1']:.3f}", "fused": f"{majority['macro_f1']:.3f}",
                     "fused weighted F1": f"{majority['weighted_f1']:.3f}"})
    out = pd.DataFrame(rows).set_index("head").fillna("")
    return out.rename(columns={"cnn": "CNN-only", "text": "text-only"})


def collapsed(row: Mapping) -> bool:
    """Whether a comparison row's fused head predicted a single class on some seed (older run
    records, without the count, never say so)."""
    count = row.get("classes_predicted")
    return count is not None and not pd.isna(count) and int(count) <= 1


def unchanged(row: Mapping) -> bool:
    """Whether a comparison row's fused head predicted exactly what its CNN-only reference did, on
    every seed (late fusion that gave the other source no weight)."""
    same = row.get("same_predictions")
    return same is not None and not pd.isna(same) and bool(same)


def gains_table(metrics: Mapping, family: str | None = None) -> pd.DataFrame:
    """Fused minus CNN-only on the same test images, one row per head of a ``family`` of variants
    (main, late, control, sweep): the fused and CNN-only macro F1 (mean over seeds), the gain with
    its 95 % paired-bootstrap interval, the Holm-adjusted bootstrap p-value, the weighted-F1 gain,
    McNemar's p (first seed). The CNN-only reference is the same head on CNN features; a head
    marked * (it needs both modalities, or is late fusion) is compared with mlp1's; one marked
    "[one class only]" collapsed (:func:`collapsed`): its gain measures nothing."""
    table = pd.DataFrame(metrics["comparisons"])
    if table.empty:
        return table
    if family is not None:
        table = table[table["variant"].str.split(":").str[0] == family]
    names = [h + ("*" if r != h else "") + ("" if v in ("main", "late") else f" ({v.split(':', 1)[-1]})")
             + (" [one class only]" if collapsed(row) else "")
             for h, r, v, row in zip(table["head"], table["reference"], table["variant"],
                                     table.to_dict(orient="records"))]
    out = pd.DataFrame({
        "head": names,
        "fused": table["macro_f1"].map(lambda v: f"{v:.3f}"), "CNN-only": table["cnn_macro_f1"].map(lambda v: f"{v:.3f}"),
        "gain [95 % CI]": [f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]" for g, lo, hi in
                           zip(table["gain"], table["gain_low"], table["gain_high"])],
        "p (Holm)": table["p_holm"].map(lambda p: f"{p:.3f}"),
        "weighted F1 gain": table["gain_weighted_f1"].map(lambda g: f"{g:+.3f}"),
        "McNemar p": table["p_mcnemar"].map(lambda p: f"{p:.3f}"),
    })
    return out.set_index("head")


def leakage_table(metrics: Mapping) -> pd.DataFrame:
    """Per CNN source (leaky: trained on the training images; cross-fitted: out of fold): its accuracy
    on the training images the head learns from and on the test images, and the CNN-only head's
    test macro F1 (mean over seeds)."""
    leakage = metrics.get("leakage")
    if not leakage:
        return pd.DataFrame()
    runs = pd.DataFrame(metrics["runs"])
    sources = list(leakage["cnn"]) + (["frozen"] if (runs["variant"] == "leakage:frozen").any() else [])
    rows = []
    for source in sources:
        scores = leakage["cnn"].get(source)
        own = runs[(runs["variant"] == f"leakage:{source}") & (runs["inputs"] == "cnn")]
        rows.append({"CNN input": source if scores else f"{source} (ImageNet features)",
                     "CNN accuracy on train images": f"{scores['train accuracy']:.3f}" if scores else "",
                     "on test images": f"{scores['test accuracy']:.3f}" if scores else "",
                     "CNN-only head macro F1": _pm(own["macro_f1"])})
    return pd.DataFrame(rows).set_index("CNN input")


def leakage_text(metrics: Mapping) -> str:
    """What the leakage comparison says (Markdown), or nothing when it was not run."""
    leakage = metrics.get("leakage")
    if not leakage:
        return ""
    table = pd.DataFrame(metrics["comparisons"])
    table = table[table["variant"].str.startswith("leakage:")]
    if table.empty:
        return ""
    gains = {v.split(":", 1)[1]: r for v, r in zip(table["variant"], table.to_dict(orient="records"))}
    cnn = leakage["cnn"]
    parts = [f"The leaky CNN is right on {cnn['leaky']['train accuracy']:.0%} of the training images the head learns "
             f"from but on {cnn['leaky']['test accuracy']:.0%} of the test images; out of fold, its training-image "
             f"accuracy ({cnn['cross-fitted']['train accuracy']:.0%}) is what a head meets at test time."]
    gap = cnn["leaky"]["train accuracy"] - cnn["leaky"]["test accuracy"]
    parts.append(f"That gap ({gap * 100:.0f} points) is what leakage feeds on: a head trained on the leaky "
                 "probabilities learns to trust a CNN that is right more often than it will be on new images. The "
                 "longer a CNN trains on its training images, the wider the gap (the full profile's CNNs train "
                 "for up to 30 epochs at 224 px).")
    for text in sorted({k.split("/", 1)[1] for k in gains}):
        leaky, crossed = gains.get(f"leaky/{text}"), gains.get(f"cross-fitted/{text}")
        if leaky and crossed:
            parts.append(f"Fused with {text}, the head gains {leaky['gain']:+.3f} [{leaky['gain_low']:+.3f}, "
                         f"{leaky['gain_high']:+.3f}] over its CNN-only twin on leaky CNN inputs and "
                         f"{crossed['gain']:+.3f} [{crossed['gain_low']:+.3f}, {crossed['gain_high']:+.3f}] on "
                         "cross-fitted ones.")
            for source, row in (("leaky", leaky), ("cross-fitted", crossed)):
                if collapsed(row):
                    parts.append(f"But the fused head on {source} CNN inputs with {text} predicts one class only "
                                 f"on some seed (mean macro F1 {row['macro_f1']:.3f}): it collapsed, "
                                 f"while its CNN-only twin reaches {row['cnn_macro_f1']:.3f}, so its "
                                 f"{row['gain']:+.3f} is a head that failed to train on those inputs within its "
                                 "budget, not a measurement of leakage.")
    return " ".join(parts) + "\n"


BLIND_HEADS = ("original_attention", "original_cross_attention")
"""The original heads whose output does not depend on the caption (their attention weight is always 1
and their value comes from the CNN half)."""


def faithful_table(metrics: Mapping) -> pd.DataFrame:
    """The faithful-reproduction row: ours under the original's protocol (mean ± std over seeds)
    beside the original's reported numbers, each cell "ours / original"."""
    faithful = metrics.get("faithful")
    if not faithful:
        return pd.DataFrame()
    runs = pd.DataFrame(faithful["runs"])
    rows = []
    own = faithful["cnn_own_classifier"]
    rows.append(("the CNN's own classifier", {k: f"{own[k]:.3f}" for k in ("accuracy", "weighted_f1", "macro_f1")},
                 ORIGINAL_RESULTS["cnn_own"]))
    for head, inputs, label in (("mlp1", "cnn", "1-layer MLP on CNN features"), ("mlp1", "fused", "1-layer MLP, fused"),
                                ("original_attention", "fused", '"MLP + Attention", fused')):
        group = runs[(runs["head"] == head) & (runs["inputs"] == inputs)]
        original = ORIGINAL_RESULTS.get(head) if inputs == "fused" else None
        rows.append((label, {k: _pm(group[k]) for k in ("accuracy", "weighted_f1", "macro_f1")}, original))
    names = {"accuracy": "accuracy", "weighted_f1": 'weighted F1 (the original\'s "F1")', "macro_f1": "macro F1"}
    out = pd.DataFrame([{"": label, **{f"{names[k]} (ours / original)": f"{ours[k]} / " + (f"{original[k]:.3f}" if original else "—")
                                       for k in names}} for label, ours, original in rows])
    return out.set_index("")


def faithful_text(metrics: Mapping) -> str:
    faithful = metrics.get("faithful")
    if not faithful:
        return ""
    table = pd.DataFrame(faithful["comparisons"])
    parts = [f"Under the original's protocol ({faithful['model']} trained on half of the data, its heads trained its "
             f"way; {faithful['n_test']} test images), the original's comparison, a fused head against the CNN's own "
             f"classifier (macro F1 {faithful['cnn_own_classifier']['macro_f1']:.3f}), mixes two changes: a new head "
             "and the captions."]
    for _, row in table.iterrows():
        blind = row["head"] in BLIND_HEADS
        parts.append(f"{row['head']} fused against the same budget on CNN features alone ({row['reference']}): "
                     f"{row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}] macro F1"
                     + (" — this head cannot see the caption, so that difference is the head's, not the captions'."
                        if blind else "."))
    return " ".join(parts) + "\n"


def significant(row: Mapping) -> bool:
    return row["p_holm"] <= ALPHA and (row["gain_low"] > 0 or row["gain_high"] < 0)


def sweep_table(metrics: Mapping) -> pd.DataFrame:
    """Per simulated accuracy p: the vote's accuracy and the fused head's gain over CNN-only."""
    comparisons = pd.DataFrame(metrics["comparisons"])
    rows = []
    for point in metrics.get("sweep", []):
        name = f"sweep:p={point['p']:g}"
        match = comparisons[comparisons["variant"] == name] if not comparisons.empty else comparisons
        if match.empty:
            continue
        row = match.iloc[0]
        rows.append({"p": point["p"], "vote_accuracy": point["vote_accuracy"], "gain": row["gain"],
                     "low": row["gain_low"], "high": row["gain_high"], "p_holm": row["p_holm"],
                     "cnn_macro_f1": row["cnn_macro_f1"]})
    return pd.DataFrame(rows)


def sweep_display(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep table as a page shows it: one row per simulated accuracy p."""
    return pd.DataFrame({
        "p": sweep["p"].map(lambda v: f"{v:g}"), "vote accuracy (test)": sweep["vote_accuracy"].map(lambda v: f"{v:.3f}"),
        "gain [95 % CI]": [f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]" for g, lo, hi in zip(sweep["gain"], sweep["low"], sweep["high"])],
        "p (Holm)": sweep["p_holm"].map(lambda v: f"{v:.3f}"),
    }).set_index("p")


def per_class_change(predictions: pd.DataFrame, head: str, variant: str = "main") -> pd.DataFrame:
    """Per class: F1 of ``head`` on fused inputs and of the CNN-only reference, mean over seeds, and the change."""
    from sklearn.metrics import f1_score

    def per_class(frame: pd.DataFrame) -> np.ndarray:
        return np.mean([f1_score(g["true"], g["predicted"], labels=range(len(EMOTIONS)), average=None, zero_division=0)
                        for _, g in frame.groupby("seed")], axis=0)

    fused = predictions[(predictions["variant"] == variant) & (predictions["head"] == head)
                        & (predictions["inputs"] == "fused")]
    cnn = predictions[(predictions["variant"] == "main") & (predictions["inputs"] == "cnn")]
    cnn = cnn[cnn["head"] == (head if (cnn["head"] == head).any() else "mlp1")]
    f_fused, f_cnn = per_class(fused), per_class(cnn)
    return pd.DataFrame({"class": EMOTIONS, "F1 fused": f_fused.round(3), "F1 CNN-only": f_cnn.round(3),
                         "change": (f_fused - f_cnn).round(3)}).set_index("class")


CHANCE = 1 / len(EMOTIONS)


def no_information_gain(metrics: Mapping) -> tuple[float, str] | None:
    """The gain fusion shows without any information in the captions, and where it was measured:
    the larger of the sweep's chance-level point (simulated accuracy 1/7: a caption names the
    true emotion no more often than a random one) and the controls' gains (shuffled or constant
    captions); None when neither ran."""
    table = pd.DataFrame(metrics["comparisons"])
    sweep = sweep_table(metrics)
    candidates = []
    chance = sweep[np.isclose(sweep["p"], CHANCE, atol=0.002)] if not sweep.empty else sweep
    if not chance.empty:
        candidates.append((float(chance["gain"].iloc[0]), "simulated captions at chance, p = 1/7"))
    controls = table[table["variant"].str.startswith("control:")] if not table.empty else table
    if not controls.empty:
        best = controls.loc[controls["gain"].idxmax()]
        candidates.append((float(best["gain"]), f"{best['variant'].split(':', 1)[1]} captions"))
    return max(candidates) if candidates else None


def sweep_text(metrics: Mapping) -> str:
    """What the sweep of simulated caption accuracy says (one paragraph, empty without a sweep):
    from which accuracy the fused head gains more than captions without information give it."""
    sweep = sweep_table(metrics)
    if sweep.empty:
        return ""
    base = f" over the same head on this CNN's features alone (test macro F1 {sweep['cnn_macro_f1'].iloc[0]:.3f})"
    floor = no_information_gain(metrics)
    if floor is None or floor[0] <= 0:
        paying = sweep[(sweep["low"] > 0) & (sweep["p_holm"] <= ALPHA)]
        return ("In the sweep of simulated captions, "
                + (f"fusion pays from a vote accuracy of about {paying['vote_accuracy'].min():.2f} "
                   f"(p = {paying['p'].min():g})" if not paying.empty else
                   "no caption accuracy tried gives a significant gain") + base + ".")
    gain, where = floor
    informative = sweep[~np.isclose(sweep["p"], CHANCE, atol=0.002)]
    paying = informative[(informative["low"] > gain) & (informative["p_holm"] <= ALPHA)].sort_values("p")
    return (f"In the sweep of simulated captions, captions that carry no information already give "
            f"{gain:+.3f} ({where}){base}: that much comes from the extra input itself (it changes the head's "
            "input and its training), not from what the captions say. "
            + (f"Captions add more than that, with the whole 95 % interval above it, from a vote accuracy of "
               f"about {paying['vote_accuracy'].min():.2f} (p = {paying['p'].min():g}: "
               f"{paying['gain'].iloc[0]:+.3f} [{paying['low'].iloc[0]:+.3f}, {paying['high'].iloc[0]:+.3f}])."
               if not paying.empty else "No caption accuracy tried adds clearly more than that."))


def conclusion(metrics: Mapping, simulated: bool = False, meaningless: bool = False) -> str:
    """What the fusion numbers say (Markdown)."""
    table = pd.DataFrame(metrics["comparisons"])
    main = table[table["variant"].isin(["main", "late"])]
    best = metrics["best_head"]
    text_only = pd.DataFrame(metrics.get("runs") or [], columns=["variant", "inputs", "macro_f1"])
    text_only = text_only[(text_only["variant"] == "main") & (text_only["inputs"] == "text")]
    parts = []
    best_rows = main[main["head"] == best]
    if not best_rows.empty:
        row = best_rows.iloc[0]
        verdict = ("a significant gain" if significant(row) and row["gain"] > 0 else
                   "a significant loss" if significant(row) else "no significant difference")
        parts.append(f"The head chosen on validation, **{best}** on fused inputs (mean validation macro F1 "
                     f"{row['val_macro_f1']:.3f} over {row['seeds']} seeds), scores test macro F1 {row['macro_f1']:.3f} "
                     f"against {row['cnn_macro_f1']:.3f} for {row['reference']} with the same budget on CNN features "
                     f"alone: a change of "
                     f"{row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}] (Holm-adjusted p "
                     f"{row['p_holm']:.3f}), {verdict}.")
    wins = [r for _, r in main.iterrows() if significant(r) and r["gain"] > 0]
    parts.append(f"{len(wins)} of the {len(main)} fused variants beat the CNN-only head significantly"
                 + (f" ({', '.join(r['head'] for r in wins)})" if wins else "")
                 + " (significant here: Holm-adjusted p at most 0.05 and a 95 % interval that excludes zero).")
    same = [r["head"] for _, r in main.iterrows() if unchanged(r)]
    if same:
        parts.append(f"{' and '.join(same)} predict exactly what the CNN-only head predicts, on every seed: the "
                     "weight chosen on validation gave the other source no say, so their gain is zero by "
                     "construction, not a measured tie.")
    broken = [r["head"] for _, r in main.iterrows() if collapsed(r)]
    if broken:
        parts.append(f"{', '.join(broken)} predicted one class only on some seed (marked in the tables): a head "
                     "that failed to train, whose gain measures nothing.")
    controls = table[table["variant"].str.startswith("control:")]
    if not controls.empty:
        described = "; ".join(f"{r['variant'].split(':')[1]} captions {r['gain']:+.3f} [{r['gain_low']:+.3f}, "
                              f"{r['gain_high']:+.3f}]" for _, r in controls.iterrows())
        surviving = [r for _, r in controls.iterrows() if significant(r) and r["gain"] > 0]
        above = [r for _, r in controls.iterrows() if r["gain_low"] > 0 and not significant(r)]
        text = f"Controls ({metrics['controls_and_sweep_head']}): {described}. "
        if surviving:
            text += ("A gain that survives a control cannot come from what the captions say about each face: "
                     "it is a gain of the extra input or of training noise.")
        elif above:
            names = " and ".join(f"the {r['variant'].split(':')[1]} captions (Holm-adjusted p {r['p_holm']:.3f})"
                                 for r in above)
            text += (f"Neither control is significant, but the interval of {names} excludes zero on its own: a small "
                     "gain from the extra input itself, whatever the captions say, cannot be ruled out, so a "
                     "fused head's gain means something about the captions only above it.")
        else:
            text += "Neither control shows a significant gain, as it must not."
        parts.append(text)
    norms = table[table["variant"].str.startswith("norm:")]
    for _, row in norms.iterrows():
        parts.append(f"Normalising each modality before concatenation ({row['head']}, {row['variant'].split(':')[1]}) "
                     f"changes macro F1 by {row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}] "
                     f"against the CNN-only head (Holm-adjusted p {row['p_holm']:.3f}); the original's concatenation "
                     f"gives {main[main['head'] == row['head']]['gain'].iloc[0]:+.3f}."
                     if (main["head"] == row["head"]).any() else "")
    parts.append(sweep_text(metrics))
    own = metrics.get("cnn_own_classifier")
    if own:
        parts.append(f"The original compared its fused head with the CNN's own classifier (here {own['macro_f1']:.3f} "
                     "macro F1), not with a new head on the same CNN features: that comparison mixes the head's "
                     "effect with the captions'.")
    leak = leakage_text(metrics)
    if leak:
        parts.append(leak.strip())
    if meaningless:
        parts.append("The captions here come from a tiny BLIP-2 with random weights: they describe nothing, so the "
                     "main grid can only show the machinery and the size of noise; the sweep is where the captions "
                     "carry a known signal."
                     + (f" The text-only heads score macro F1 {text_only['macro_f1'].min():.3f} to "
                        f"{text_only['macro_f1'].max():.3f}: at or near always predicting the majority class, which "
                        "is what text without meaning allows." if not text_only.empty else ""))
    if simulated:
        parts.append("The captions here are simulated (a control of known accuracy), not written by a model.")
    return "\n\n".join(p for p in parts if p) + "\n"


__all__ = ["CHANCE", "ORIGINAL_RESULTS", "collapsed", "conclusion", "faithful_table", "faithful_text", "gains_table", "heads_table", "leakage_table", "leakage_text", "no_information_gain", "per_class_change", "significant",
           "sweep_display", "sweep_table", "sweep_text", "unchanged"]

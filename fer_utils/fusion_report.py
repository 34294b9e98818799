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


def gains_table(metrics: Mapping, family: str | None = None) -> pd.DataFrame:
    """Fused minus CNN-only on the same test images, one row per head of a ``family`` of variants
    (main, late, control, sweep): the fused and CNN-only macro F1 (mean over seeds), the gain with
    its 95 % paired-bootstrap interval, the Holm-adjusted bootstrap p-value, the weighted-F1 gain,
    McNemar's p (first seed). The CNN-only reference is the same head on CNN features; a head
    marked * (it needs both modalities, or is late fusion) is compared with mlp1's."""
    table = pd.DataFrame(metrics["comparisons"])
    if table.empty:
        return table
    if family is not None:
        table = table[table["variant"].str.split(":").str[0] == family]
    names = [h + ("*" if r != h else "") + ("" if v in ("main", "late") else f" ({v.split(':', 1)[-1]})")
             for h, r, v in zip(table["head"], table["reference"], table["variant"])]
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
    for text in sorted({k.split("/", 1)[1] for k in gains}):
        leaky, crossed = gains.get(f"leaky/{text}"), gains.get(f"cross-fitted/{text}")
        if leaky and crossed:
            parts.append(f"Fused with {text}, the head gains {leaky['gain']:+.3f} [{leaky['gain_low']:+.3f}, "
                         f"{leaky['gain_high']:+.3f}] over its CNN-only twin on leaky CNN inputs and "
                         f"{crossed['gain']:+.3f} [{crossed['gain_low']:+.3f}, {crossed['gain_high']:+.3f}] on "
                         "cross-fitted ones.")
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
                 + (f" ({', '.join(r['head'] for r in wins)})" if wins else "") + ".")
    controls = table[table["variant"].str.startswith("control:")]
    if not controls.empty:
        described = "; ".join(f"{r['variant'].split(':')[1]} captions {r['gain']:+.3f} [{r['gain_low']:+.3f}, "
                              f"{r['gain_high']:+.3f}]" for _, r in controls.iterrows())
        surviving = [r for _, r in controls.iterrows() if significant(r) and r["gain"] > 0]
        parts.append(f"Controls ({metrics['controls_and_sweep_head']}): {described}. "
                     + ("A gain that survives a control cannot come from what the captions say about each face: "
                        "it is a gain of the extra input or of training noise." if surviving else
                        "Neither control shows a significant gain, as it must not."))
    norms = table[table["variant"].str.startswith("norm:")]
    for _, row in norms.iterrows():
        parts.append(f"Normalising each modality before concatenation ({row['head']}, {row['variant'].split(':')[1]}) "
                     f"changes macro F1 by {row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}] "
                     f"against the CNN-only head (Holm-adjusted p {row['p_holm']:.3f}); the original's concatenation "
                     f"gives {main[main['head'] == row['head']]['gain'].iloc[0]:+.3f}."
                     if (main["head"] == row["head"]).any() else "")
    sweep = sweep_table(metrics)
    if not sweep.empty:

        paying = sweep[(sweep["low"] > 0) & (sweep["p_holm"] <= ALPHA)]
        parts.append("In the sweep of simulated captions, "
                     + (f"fusion pays from a vote accuracy of about {paying['vote_accuracy'].min():.2f} "
                        f"(p = {paying['p'].min():g})" if not paying.empty else
                        "no caption accuracy tried gives a significant gain")
                     + f" over the same head on this CNN's features alone (test macro F1 "
                       f"{sweep['cnn_macro_f1'].iloc[0]:.3f}).")
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


__all__ = ["ORIGINAL_RESULTS", "conclusion", "faithful_table", "faithful_text", "gains_table", "heads_table", "leakage_table", "leakage_text", "per_class_change", "significant", "sweep_display",
           "sweep_table"]

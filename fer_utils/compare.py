"""Comparisons across run records: summary tables (mean ± std over seeds), the original study's
reported numbers beside ours, per-run confidence intervals and per-class scores, and paired tests
(McNemar, paired bootstrap of the macro-F1 difference) between models on the same test images."""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

import numpy as np

from .labels import EMOTIONS
from .runs import collect_runs, load_run
from .stats import mcnemar, paired_bootstrap

ORIGINAL_REPORTED = pd.DataFrame(
    # The write-up's CNN table (1,533-image half test set); its "F1" is weighted F1 (flaw 2).
    {"accuracy": [0.6680, 0.7462, 0.7697], "weighted_f1": [0.6558, 0.7348, 0.7666],
     "macro_f1": [None, None, 0.6667]},
    index=pd.Index(["vgg16", "resnet18", "densenet121"], name="model"),
)
"""The original study's reported CNN numbers; DenseNet121's macro F1 re-read from its notebook."""

SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def load_records(runs_root: str | Path, notebook: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The runs table of one notebook and each run's full record, keyed by run name."""
    table = collect_runs(runs_root, notebook=notebook)
    if table.empty:
        raise FileNotFoundError(f"no run records of notebook {notebook!r} under {runs_root}; "
                                f"run `fer study run --only {notebook}` first")
    return table, {row.run: load_run(row.run_dir) for row in table.itertuples()}


def summarize(table: pd.DataFrame, by: str = "param.model", metrics=SUMMARY_METRICS) -> pd.DataFrame:
    """Mean, std and number of runs per group (std is NaN for a single run)."""
    grouped = table.groupby(by)[list(metrics)]
    out = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1)}, axis=1)
    out[("runs", "n")] = grouped.size()
    return out


def mean_pm_std(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """'0.812 ± 0.010' strings per metric (just the mean where there is one run)."""
    out = {}
    for metric in summary["mean"].columns:
        mean, std = summary[("mean", metric)], summary[("std", metric)]
        out[metric] = [f"{m:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}")
                       for m, s in zip(mean, std)]
    frame = pd.DataFrame(out, index=summary.index)
    frame["runs"] = summary[("runs", "n")]
    return frame


def beside_original(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Our mean ± std next to the original study's reported numbers, per model."""
    ours = mean_pm_std(summary, digits).add_prefix("ours: ")
    theirs = ORIGINAL_REPORTED.add_prefix("original: ")
    return ours.join(theirs, how="left")


def per_class_f1(records: dict[str, dict], by: str = "model") -> pd.DataFrame:
    """Long table: one row per run and class with the test F1."""
    rows = []
    for run, rec in records.items():
        for name in EMOTIONS:
            rows.append({"run": run, by: rec["params"].get(by), "class": name,
                         "f1": rec["metrics"]["per_class"][name]["f1"]})
    return pd.DataFrame(rows)


def histories(records: dict[str, dict], by: str = "model") -> pd.DataFrame:
    frames = []
    for run, rec in records.items():
        if rec["history"] is not None:
            frames.append(rec["history"].assign(run=run, **{by: rec["params"].get(by)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pairwise_tests(records: dict[str, dict], by: str = "model", n_bootstrap: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Paired tests for every pair of runs that share a seed and the same test images: McNemar's
    test on their disagreements and, with ``n_bootstrap > 0``, the macro-F1 difference A − B with
    its paired percentile-bootstrap 95 % interval (resamples seeded by ``seed``)."""
    rows = []
    for (ra, a), (rb, b) in itertools.combinations(records.items(), 2):
        if a["params"].get("seed") != b["params"].get("seed") or a["predictions"] is None \
                or b["predictions"] is None:
            continue
        pa, pb = a["predictions"], b["predictions"]
        merged = pa.merge(pb, on="id", suffixes=("_a", "_b"))
        if len(merged) != len(pa) or len(merged) != len(pb) or \
                (merged["true_a"] != merged["true_b"]).any():
            continue  # not the same test images: no paired test
        test = mcnemar(merged["true_a"], merged["predicted_a"], merged["predicted_b"])
        row = {"A": a["params"].get(by), "B": b["params"].get(by), "seed": a["params"].get("seed"),
               "A right, B wrong": test["b"], "A wrong, B right": test["c"],
               "p_value": test["p_value"], "method": test["method"]}
        if n_bootstrap > 0:
            diff, low, high = paired_bootstrap(merged["true_a"], merged["predicted_a"], merged["predicted_b"],
                                               "macro_f1", n_boot=n_bootstrap, seed=seed)
            row.update({"macro F1 A − B": diff, "95% CI low": low, "95% CI high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_summary(tests: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`pairwise_tests` for reading: one narrow row per pair, the macro-F1 difference with
    its interval as ``'0.206 [0.150, 0.262]'`` and McNemar's p-value with its test."""
    if tests.empty:
        return tests
    out = tests[["A", "B", "seed", "A right, B wrong", "A wrong, B right"]].copy()
    out["McNemar p"] = [f"{p:.{digits}g} ({'exact' if m.startswith('exact') else 'chi-square'})"
                        for p, m in zip(tests["p_value"], tests["method"])]
    if "macro F1 A − B" in tests:
        out["macro F1 A − B [95% CI]"] = [f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" for d, lo, hi in
                                          zip(tests["macro F1 A − B"], tests["95% CI low"], tests["95% CI high"])]
    return out


def failure_notes(records: dict[str, dict], by: str = "model") -> list[str]:
    """Plain-language notes on runs that learned (next to) nothing, for a page to show beside
    their numbers: a run that predicts one class for every test image, and a run whose accuracy
    or macro F1 is not above the majority-class baseline (always predicting the most frequent
    test class). An empty list means no run is broken in these ways."""
    notes = []
    for run, rec in records.items():
        pred = rec.get("predictions")
        if pred is None or pred.empty:
            continue
        name, m = rec["params"].get(by, run), rec["metrics"]
        true, predicted = pred["true"].to_numpy(), pred["predicted"].to_numpy()
        majority = np.bincount(true, minlength=len(EMOTIONS)).argmax()
        share = float(np.mean(true == majority))
        baseline_f1 = 2 * share / (1 + share) / len(EMOTIONS)   # macro F1 of always predicting it
        if len(np.unique(predicted)) == 1:
            notes.append(f"{name} (run {run}) predicts {EMOTIONS[predicted[0]]!r} for all {len(pred)} test "
                         f"images: it learned nothing, and its accuracy {m['accuracy']:.3f} is that class's share.")
        elif m["accuracy"] <= share or m["macro_f1"] <= baseline_f1:
            notes.append(f"{name} (run {run}) is not above the majority-class baseline (always "
                         f"{EMOTIONS[majority]!r}: accuracy {share:.3f}, macro F1 {baseline_f1:.3f}); it has "
                         f"accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}.")
    return notes


def failure_report(records: dict[str, dict], by: str = "model") -> str:
    """:func:`failure_notes` as Markdown for a results page ("" when every run learned something)."""
    notes = failure_notes(records, by)
    if not notes:
        return ""
    return ("**Read these numbers as failures, not results.** On this data and budget:\n\n"
            + "\n".join(f"- {note}" for note in notes))


def per_class_table(metrics: dict) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (rows in class order) of one run's metrics."""
    return pd.DataFrame(metrics["per_class"]).T.loc[list(EMOTIONS)]


def ci_table(records: dict[str, dict], by: str = "model", digits: int = 3) -> pd.DataFrame:
    """One row per run: each metric as 'value [low, high]' (95 % bootstrap interval)."""
    rows = []
    for run, rec in records.items():
        m = rec["metrics"]
        row = {"run": run, by: rec["params"].get(by), "seed": rec["params"].get("seed")}
        for name in SUMMARY_METRICS:
            low, high = (m.get("ci95") or {}).get(name, (None, None))
            row[name] = f"{m[name]:.{digits}f}" + ("" if low is None else f" [{low:.{digits}f}, {high:.{digits}f}]")
        rows.append(row)
    return pd.DataFrame(rows)


def first_seed_per(records: dict[str, dict], by: str = "model") -> dict[str, dict]:
    """The record with the lowest seed for each value of ``by`` (e.g. one run per model)."""
    firsts: dict[str, dict] = {}
    for rec in sorted(records.values(), key=lambda r: r["params"].get("seed", 0)):
        firsts.setdefault(rec["params"].get(by), rec)
    return firsts


def data_records(records: dict[str, dict]) -> list[dict]:
    """The distinct data records (``provenance.data``) of the compared runs, in run order."""
    seen: list[dict] = []
    for rec in records.values():
        data = rec["provenance"].get("data")
        if data not in seen:
            seen.append(data)
    return seen

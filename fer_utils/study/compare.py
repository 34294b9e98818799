"""Comparisons across run records: summary tables (mean ± std over seeds, refusing to average
runs that are not repeats of one setting), the original study's reported numbers beside ours, a
majority-class baseline row on every table, per-run confidence intervals and per-class scores,
and paired tests (McNemar with Holm's correction, paired bootstrap of the macro-F1 difference)
between models on the same test images."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from fer_utils.errors import ConfigError
from fer_utils.training.evaluate import evaluate
from fer_utils.labels import EMOTIONS
from fer_utils.options import ORIGINAL_PROTOCOL
from fer_utils.study.runs import collect_runs, load_run
from fer_utils.training.stats import SCORES, holm, mcnemar, paired_bootstrap

ORIGINAL_REPORTED = pd.DataFrame(
    # The write-up's CNN table (1,533-image half test set); its "F1" is weighted F1 (flaw 2).
    {"accuracy": [0.6680, 0.7462, 0.7697], "weighted_f1": [0.6558, 0.7348, 0.7666],
     "macro_f1": [None, None, 0.6667]},
    index=pd.Index(["vgg16", "resnet18", "densenet121"], name="model"),
)
"""The original study's reported CNN numbers; DenseNet121's macro F1 re-read from its notebook."""

TEST_METRICS = SCORES
"""The test-split metrics of a run record (each with a bootstrap interval in ``ci95``)."""
SUMMARY_METRICS = (*TEST_METRICS, "val_macro_f1")
"""The columns of :func:`summarize`: the test metrics and the validation macro F1 that selection
may use ("best" means best on validation; the test split is read once)."""
RUN_SPECIFIC_PARAMS = ("seed", "run_dir", "cache_dir")
"""The only parameters in which runs averaged together may differ: the seed, and where the run's
record and the project's caches are kept (cache entries are keyed by content: a cache folder
changes no result)."""
DATA_FINGERPRINT = "data.fingerprint"
"""The column :func:`load_records` adds to the runs table: the fingerprint of each run's data set."""


def load_records(runs_root: str | Path, notebook: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The runs table of one notebook and each run's full record, keyed by run name. The table
    gains a :data:`DATA_FINGERPRINT` column (``provenance.data.fingerprint``), which
    :func:`summarize` checks."""
    table = collect_runs(runs_root, notebook=notebook)
    if table.empty:
        raise FileNotFoundError(f"no run records of notebook {notebook!r} under {runs_root}; "
                                f"run `fer study run --only {notebook}` first")
    loaded = [load_run(run_dir) for run_dir in table["run_dir"]]
    table[DATA_FINGERPRINT] = [_data_fingerprint(rec) for rec in loaded]
    return table, dict(zip(table["run"], loaded))


def _data_fingerprint(record: dict) -> str | None:
    data = record["provenance"].get("data")
    return data.get("fingerprint") if isinstance(data, dict) else None


def _columns(by: str | list[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def check_alike(table: pd.DataFrame, by: str | list[str] = "param.model") -> None:
    """Raise :class:`~fer_utils.errors.ConfigError` when a group of ``table`` holds runs that are
    not repeats of one setting: a different data set (the :data:`DATA_FINGERPRINT` column, where
    the table has it) or any parameter other than :data:`RUN_SPECIFIC_PARAMS`. The message names
    each such group, its runs and the differing keys with every run's value."""
    keys = [c for c in table.columns if c not in _columns(by) and (
        c == DATA_FINGERPRINT or (c.startswith("param.") and c.removeprefix("param.") not in RUN_SPECIFIC_PARAMS))]
    problems = []
    for group, rows in table.groupby(by, dropna=False):
        names = [str(r) for r in (rows["run"] if "run" in rows else rows.index)]
        differing = [c for c in keys if rows[c].nunique(dropna=False) > 1]
        if differing:
            values = "; ".join(f"{c.removeprefix('param.')}: " + ", ".join(
                f"{n}={v!r}" for n, v in zip(names, rows[c].tolist())) for c in differing)
            problems.append(f"{by} = {group!r} (runs {', '.join(names)}) differ in {values}")
    if problems:
        raise ConfigError("cannot average runs that are not repeats of one setting (only "
                          f"{', '.join(RUN_SPECIFIC_PARAMS)} may differ): " + " | ".join(problems)
                          + ". Group by the differing parameter too, or compare runs made alike.")


def _mean_std_n(table: pd.DataFrame, by: str | list[str], metrics) -> pd.DataFrame:
    grouped = table.reindex(columns=[*_columns(by), *metrics]).groupby(by)[list(metrics)]
    out = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1)}, axis=1)
    out[("runs", "n")] = grouped.size()
    return out


def summarize(table: pd.DataFrame, by: str | list[str] = "param.model", metrics=SUMMARY_METRICS) -> pd.DataFrame:
    """Mean, std and number of runs per group (std is NaN for a single run; a metric a run lacks
    is NaN). Refuses (:func:`check_alike`) to average runs that differ in more than the seed."""
    check_alike(table, by)
    return _mean_std_n(table, by, metrics)


def runs_note(table: pd.DataFrame, by: str = "param.model") -> str:
    """One Markdown line saying how many runs (and which seeds) stand behind each row of
    :func:`summarize`, so that a page never claims a mean ± std over seeds it did not run."""
    noun, counts, described = by.removeprefix("param."), {}, {}
    for name, rows in table.groupby(by):
        seeds = sorted(rows["param.seed"].dropna().tolist()) if "param.seed" in rows else []
        counts[name] = len(rows)
        described[name] = f"{len(rows)} run{'s' * (len(rows) > 1)}" + (
            f" (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})" if seeds else "")
    if len(set(described.values())) == 1:
        head = f"**{next(iter(described.values()))} per {noun}**"
    else:
        head = f"**Runs per {noun}**: " + ", ".join(f"{name} {text}" for name, text in described.items())
    if max(counts.values()) == 1:
        return head + (": every number is a single run, not a mean ± standard deviation over seeds; "
                       "the bootstrap intervals over test images are its only measure of uncertainty.")
    return head + (f". Numbers are mean ± standard deviation over a {noun}'s runs"
                   + ("." if min(counts.values()) > 1 else " where it has several, the single run's value where it has one."))


def always_predicting(y_true, label: int | None = None) -> tuple[int, dict]:
    """``(class, metrics)``: :func:`~fer_utils.training.evaluate.evaluate` of predicting ``label`` for every
    image; by default the most frequent class of ``y_true`` (the majority-class baseline)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    if label is None:
        label = int(np.bincount(y_true, minlength=len(EMOTIONS)).argmax())
    return label, evaluate(y_true, np.full_like(y_true, label))


def majority_baseline(records: dict[str, dict], by: str = "param.model") -> pd.DataFrame:
    """A :func:`summarize`-shaped row "majority class (always <class>)": the test metrics of always
    predicting the most frequent test class, from the runs' test labels (mean ± std over the
    distinct test sets when runs differ in theirs). No validation score and no run count (it is
    not a run); empty when no record has predictions."""
    test_sets = {}
    for rec in records.values():
        pred = rec.get("predictions")
        if pred is not None and not pred.empty:
            test_sets[(tuple(pred["id"]), tuple(pred["true"]))] = pred["true"].to_numpy()
    if not test_sets:
        return _mean_std_n(pd.DataFrame(columns=[by]), by, SUMMARY_METRICS)
    label, _ = always_predicting(np.concatenate(list(test_sets.values())))
    name = f"majority class (always {EMOTIONS[label]})"
    rows = [{by: name, **always_predicting(true, label)[1]} for true in test_sets.values()]
    out = _mean_std_n(pd.DataFrame(rows), by, SUMMARY_METRICS)
    out[("runs", "n")] = np.nan
    return out


def mean_pm_std(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """'0.812 ± 0.010' strings per metric (just the mean where there is one run; empty where there
    is no value) and the number of runs (empty for a baseline row)."""
    out = {}
    for metric in summary["mean"].columns:
        mean, std = summary[("mean", metric)], summary[("std", metric)]
        out[metric] = ["" if pd.isna(m) else f"{m:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}")
                       for m, s in zip(mean, std)]
    frame = pd.DataFrame(out, index=summary.index)
    frame["runs"] = ["" if pd.isna(n) else int(n) for n in summary[("runs", "n")]]
    return frame


BESIDE = " (ours / original)"
"""Suffix of the test-metric columns of :func:`beside_original`."""


def beside_original(summary: pd.DataFrame, records: dict[str, dict], digits: int = 3) -> pd.DataFrame:
    """Our mean ± std per model, with the majority-class baseline of the ``records``' test labels
    as a last row (:func:`majority_baseline`), and in the same cell the original study's reported
    number where it reported one (``'0.707 / 0.746'``): one column per metric keeps the table
    narrow enough for a page. Then the validation macro F1 and the number of runs (ours only)."""
    ours = mean_pm_std(pd.concat([summary, majority_baseline(records, summary.index.name)]), digits)
    table = pd.DataFrame(index=ours.index)
    for metric in TEST_METRICS:
        theirs = ORIGINAL_REPORTED[metric].reindex(ours.index)
        table[metric + BESIDE] = [o if pd.isna(t) else f"{o} / {t:.{digits}f}" for o, t in zip(ours[metric], theirs)]
    table["val_macro_f1"], table["runs"] = ours["val_macro_f1"], ours["runs"]
    return table


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
    test on their disagreements, its p-value Holm-adjusted over the pairs of that seed
    (``p_holm``), and, with ``n_bootstrap > 0``, the macro-F1 difference A − B over all 7 classes
    (as :func:`~fer_utils.training.evaluate.evaluate` reports it) with its paired percentile-bootstrap 95 %
    interval (resamples seeded by ``seed``)."""
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
                                               "macro_f1", n_boot=n_bootstrap, seed=seed, num_classes=len(EMOTIONS))
            row.update({"macro F1 A − B": diff, "95% CI low": low, "95% CI high": high})
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out.insert(out.columns.get_loc("p_value") + 1, "p_holm",
                   out.groupby("seed", dropna=False)["p_value"].transform(holm))
    return out


def pairwise_summary(tests: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`pairwise_tests` for reading: one narrow row per pair, the macro-F1 difference with
    its interval as ``'0.206 [0.150, 0.262]'``, McNemar's p-value with its test, and that p-value
    Holm-adjusted over the pairs of the same seed (the one to read when several pairs are shown)."""
    if tests.empty:
        return tests
    out = tests[["A", "B", "seed", "A right, B wrong", "A wrong, B right"]].copy()
    out["McNemar p"] = [f"{p:.{digits}g} ({'exact' if m.startswith('exact') else 'chi-square'})"
                        for p, m in zip(tests["p_value"], tests["method"])]
    out["McNemar p, Holm-adjusted"] = [f"{p:.{digits}g}" for p in tests["p_holm"]]
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
        predicted = pred["predicted"].to_numpy()
        majority, baseline = always_predicting(pred["true"])
        share, baseline_f1 = baseline["accuracy"], baseline["macro_f1"]
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
    table = pd.DataFrame(metrics["per_class"]).T.loc[list(EMOTIONS)]
    return table.astype({"support": int}) if "support" in table else table


def ci_table(records: dict[str, dict], by: str = "model", digits: int = 3) -> pd.DataFrame:
    """One row per run: each test metric as 'value [low, high]' (95 % bootstrap interval); then
    the majority-class baseline of the runs' test labels (:func:`majority_baseline`)."""
    rows = []
    for run, rec in records.items():
        m = rec["metrics"]
        row = {"run": run, by: rec["params"].get(by), "seed": rec["params"].get("seed")}
        for name in TEST_METRICS:
            low, high = (m.get("ci95") or {}).get(name, (None, None))
            row[name] = f"{m[name]:.{digits}f}" + ("" if low is None else f" [{low:.{digits}f}, {high:.{digits}f}]")
        rows.append(row)
    baseline = mean_pm_std(majority_baseline(records, by), digits)
    rows += [{"run": "", by: name, "seed": "", **values[list(TEST_METRICS)]} for name, values in baseline.iterrows()]
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


# --------------------------------------------------------------------------- the faithful reproduction

PROTOCOLS = ("corrected", "original")


def protocol_of(params: dict) -> str:
    """``"original"`` for a run with every parameter of the original study's protocol
    (:data:`~fer_utils.options.ORIGINAL_PROTOCOL`: half data, 10 % validation, always-flip,
    validation accuracy, last-epoch weights), else ``"corrected"``."""
    return "original" if all(params.get(k) == v for k, v in ORIGINAL_PROTOCOL.items()) else "corrected"


def split_protocols(table: pd.DataFrame, records: dict[str, dict]) -> dict[str, tuple[pd.DataFrame, dict]]:
    """``{protocol: (runs table, records)}`` for the protocols (:func:`protocol_of`) that have runs,
    corrected first: each is compared on its own (their validation and test sets differ)."""
    out = {}
    for protocol in PROTOCOLS:
        runs = [run for run, rec in records.items() if protocol_of(rec["params"]) == protocol]
        if runs:
            out[protocol] = (table[table["run"].isin(runs)], {run: records[run] for run in runs})
    return out


REPRODUCTION_COLUMNS = ("accuracy", "weighted_f1", "macro_f1", "test images", "runs")


def reproduction_table(protocols: dict[str, tuple[pd.DataFrame, dict]], by: str = "param.model",
                       digits: int = 3) -> pd.DataFrame:
    """One row per model and source: the original study's reported numbers, ours under its
    protocol, ours under the corrected one (mean ± std over seeds where there are several), and
    the majority-class baseline of each protocol's test set. Models are those with a run under
    the original protocol."""
    if "original" not in protocols:
        return pd.DataFrame(columns=["model", "numbers from", *REPRODUCTION_COLUMNS])
    summaries = {p: summarize(t, by=by) for p, (t, _) in protocols.items()}
    sizes = {p: _test_images(r) for p, (_, r) in protocols.items()}
    sources = {"original": "ours, the original's protocol", "corrected": "ours, corrected protocol"}
    rows = []
    for model in summaries["original"].index:
        if model in ORIGINAL_REPORTED.index:
            reported = ORIGINAL_REPORTED.loc[model]
            rows.append({"model": model, "numbers from": "the original study (reported, RAF-DB)",
                         **{k: "" if pd.isna(reported[k]) else f"{reported[k]:.{digits}f}" for k in TEST_METRICS},
                         "test images": 1533, "runs": 1})
        for protocol in PROTOCOLS:
            if protocol in summaries and model in summaries[protocol].index:
                cells = mean_pm_std(summaries[protocol].loc[[model]], digits).iloc[0]
                rows.append({"model": model, "numbers from": sources[protocol],
                             **{k: cells[k] for k in TEST_METRICS}, "test images": sizes[protocol],
                             "runs": cells["runs"]})
    for protocol, (_, records) in protocols.items():
        base = mean_pm_std(majority_baseline(records), digits)
        for name, cells in base.iterrows():
            rows.append({"model": name, "numbers from": f"{protocol} protocol's test set",
                         **{k: cells[k] for k in TEST_METRICS}, "test images": sizes[protocol], "runs": ""})
    return pd.DataFrame(rows, columns=["model", "numbers from", *REPRODUCTION_COLUMNS])


def _test_images(records: dict[str, dict]) -> int | str:
    sizes = sorted({int(rec["metrics"]["n"]) for rec in records.values()})
    return sizes[0] if len(sizes) == 1 else "/".join(map(str, sizes))

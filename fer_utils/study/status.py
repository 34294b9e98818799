"""The book's status section, written from the run records at build time (never typed by hand).

:func:`write_status` (called by :func:`fer_utils.study.runner.build_book`) writes :data:`STATUS_FILE`,
which ``book/intro.md`` includes: a table of what the study has measured (each notebook of the
manifest with its runs, data set and date) and what is planned (the manifest's
``book: planned:``), then a one-paragraph summary of the findings so far, drawn from the CNN
baselines' run records by the same functions as the comparison page.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fer_utils.cache import write_if_changed
from fer_utils.options import display_name as _name
from fer_utils.study.runs import collect_runs

STATUS_FILE = Path("book") / "generated" / "status.md"
"""Where :func:`write_status` writes, relative to the project folder (not committed)."""
BASELINES = "02_cnn_baselines"
PROMPTS = "04_vlm_prompts"
FUSION = "06_fusion"


def _data_label(records: list[dict]) -> str:
    """The data sets of run records (a comparison's record lists those of the runs it compares)."""
    labels = []
    for rec in records:
        data = rec["provenance"].get("data") or {}
        for one in data if isinstance(data, list) else [data]:
            name = str(one.get("name", "?"))
            label = name + (" (synthetic)" if one.get("synthetic") and "synthetic" not in name.lower() else "")
            if label not in labels:
                labels.append(label)
    return ", ".join(labels) or "?"


def status_table(manifest: dict, runs_root: str | Path) -> pd.DataFrame:
    """One row per notebook of the manifest (measured: its runs' count, data set and latest date;
    or not run yet), then one per planned experiment (``book: planned:`` of the manifest)."""
    from fer_utils.study.runs import load_run

    rows = []
    for stem, spec in manifest["notebooks"].items():
        table = collect_runs(runs_root, notebook=stem)
        title = (spec or {}).get("title", stem)
        if table.empty:
            rows.append({"experiment": title, "status": "not run yet", "runs": 0, "data": "", "last run": ""})
            continue
        records = [load_run(d) for d in table["run_dir"]]
        dates = sorted(str(r["provenance"].get("created") or "")[:10] for r in records)
        rows.append({"experiment": title, "status": "measured", "runs": len(records),
                     "data": _data_label(records), "last run": dates[-1] if dates else ""})
    for title in (manifest.get("book") or {}).get("planned") or []:
        rows.append({"experiment": title, "status": "planned", "runs": 0, "data": "", "last run": ""})
    return pd.DataFrame(rows, columns=["experiment", "status", "runs", "data", "last run"])


def findings(runs_root: str | Path) -> str:
    """The findings so far, as one Markdown paragraph from the CNN baselines' records."""
    from fer_utils.study.compare import always_predicting, failure_notes, load_records, split_protocols, summarize

    try:
        table, records = load_records(runs_root, BASELINES)
    except FileNotFoundError:
        return "No CNN baseline has been trained yet: run `make study` (or `fer study run`)."
    protocols = split_protocols(table, records)
    synthetic = any((rec["provenance"].get("data") or {}).get("synthetic") for rec in records.values())
    where = ("On the embedded **synthetic** data set (cartoon faces: these numbers show that the pipeline "
             "works, not how well emotions are recognised on real faces)" if synthetic else
             f"On {_data_label(list(records.values()))}")
    parts = []
    if "corrected" in protocols:
        ctable, crecords = protocols["corrected"]
        summary = summarize(ctable)
        val = summary[("mean", "val_macro_f1")].dropna().sort_values(ascending=False)
        several = (summary[("runs", "n")] > 1).any()
        mean = "mean " if several else ""
        scores = "; ".join(f"{_name(m)} {summary[('mean', 'macro_f1')][m]:.3f} ({summary[('mean', 'accuracy')][m]:.3f})"
                           for m in val.index)
        first = next(iter(crecords.values()))["predictions"]
        base = always_predicting(first["true"])[1] if first is not None else None
        parts.append(f"{where}, the CNNs trained with the corrected protocol reach {mean}test macro F1 "
                     f"(accuracy) {scores}" + (f", against {base['macro_f1']:.3f} ({base['accuracy']:.3f}) for "
                                               "always predicting the majority class" if base else "") + ".")
        if not val.empty:
            parts.append(f"{_name(val.index[0])} is the best on validation (the only score a choice rests on; "
                         f"{mean}validation macro F1 {val.iloc[0]:.3f}).")
    if "original" in protocols and "corrected" in protocols:
        osum, csum = summarize(protocols["original"][0]), summarize(protocols["corrected"][0])
        gaps = [f"{_name(m)} {osum[('mean', 'macro_f1')][m]:.3f} against {csum[('mean', 'macro_f1')][m]:.3f}"
                for m in osum.index if m in csum.index]
        if gaps:
            parts.append("Trained the original study's way (half the data, always-flip, last-epoch weights), "
                         "macro F1 is " + "; ".join(gaps) + " (original protocol against corrected).")
    broken = failure_notes(records)
    parts.append(f"{len(broken)} run(s) do not beat the majority-class baseline on every score: " + " ".join(broken) if broken
                 else "No model collapsed to one class or stayed at the majority-class baseline.")
    parts.append("Details, intervals and significance tests: *Comparing the CNN baselines*.")
    more = [text for text in (caption_findings(runs_root), fusion_findings(runs_root)) if text]
    return " ".join(parts) + "".join(f"\n\n{text}" for text in more)


def caption_findings(runs_root: str | Path) -> str:
    """One paragraph on the prompt-ablation runs (empty when there are none): which captioner wrote
    the captions, and what the text-only probe and the VLM vote recovered."""
    from fer_utils.study.compare import load_records
    from fer_utils.study.prompt_report import costed

    try:
        _, records = load_records(runs_root, PROMPTS)
    except FileNotFoundError:
        return ""
    parts = []
    real = {n: r for n, r in records.items() if not r["metrics"]["captioner"].get("simulated")}
    simulated = {n: r for n, r in records.items() if r["metrics"]["captioner"].get("simulated")}
    if real:
        names = sorted({r["metrics"]["captioner"]["name"] for r in real.values()})
        probes = sorted(r["metrics"]["probe"]["macro_f1"] for r in real.values())
        meaningless = all(r["metrics"]["captioner"].get("meaningful") is False for r in real.values())
        parts.append(f"**Captions.** {len(real)} prompt(s) captioned every face with {', '.join(names)}"
                     + (" (random weights: captions without meaning, so the prompt comparison shows only that "
                        "the path runs" + (" and what it costs)" if costed(real, real) else ")") if meaningless else "")
                     + f"; a text-only linear probe on their embeddings scores test macro F1 {probes[0]:.3f}"
                     + (f" to {probes[-1]:.3f}" if len(probes) > 1 else "") + ".")
    for name, rec in simulated.items():
        m = rec["metrics"]
        parts.append(f"The simulated control ({name}: captions naming the true emotion "
                     f"{m['captioner']['identity'].get('accuracy'):.0%} of the time) gives vote accuracy "
                     f"{m['vote']['accuracy']:.3f} and probe macro F1 {m['probe']['macro_f1']:.3f}: the pipeline "
                     "recovers the signal a caption carries.")
    if parts:
        parts.append("Details: *Captions and prompts*.")
    return " ".join(parts)


def fusion_findings(runs_root: str | Path) -> str:
    """One paragraph on the fusion study's latest record (empty when there is none)."""
    from fer_utils.study.compare import load_records
    from fer_utils.study.fusion_report import conclusion

    try:
        _, records = load_records(runs_root, FUSION)
    except FileNotFoundError:
        return ""
    rec = next(iter(records.values()))
    captioner = rec["metrics"].get("captioner", {})
    first = conclusion(rec["metrics"], simulated=bool(captioner.get("simulated")),
                       meaningless=captioner.get("meaningful") is False).split("\n\n")
    return "**Fusion.** " + " ".join(part.strip() for part in first[:2]) + " Details: *Fusion*."


def _markdown_table(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def status_markdown(manifest: dict, runs_root: str | Path) -> str:
    """The status table and the findings paragraph, as Markdown."""
    table = status_table(manifest, runs_root)
    return (f"{_markdown_table(table)}\n\n"
            f"**Findings so far** (generated from the run records when the book was built). {findings(runs_root)}\n")


def write_status(root: str | Path, manifest: dict, runs_root: str | Path) -> Path:
    """Write :data:`STATUS_FILE` under ``root`` and return its path."""
    path = Path(root) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_if_changed(path, status_markdown(manifest, runs_root))   # unchanged: no rebuild of the page
    return path

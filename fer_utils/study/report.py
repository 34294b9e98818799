"""Page text generated from what a run used and measured, so that a page never claims a data set,
a setting or a result that its run did not have:

- :func:`data_banner`: the synthetic-data warning, decided from the page's data record(s);
- :func:`settings_markdown` (one run: its config and resolved training settings) and
  :func:`settings_table` (the runs a page compares: their records): the settings used, beside
  the original study's (:data:`ORIGINAL_SETTINGS`);
- :func:`interpretation` (the runs of one page) and :func:`comparison_interpretation` (models
  compared): what the numbers say, and what they cannot say;
- :func:`show`: a notebook displays such text with it (nothing at all for an empty one).

Torch-free to import: the interpretations import :mod:`~fer_utils.study.compare` (which loads torch)
when they are called.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from fer_utils.options import NORMALIZATIONS, ORIGINAL_PROTOCOL, display_name

BANNER_TITLE = "Synthetic data"
BANNER_CELL_METADATA = {"mystnb": {"markdown_format": "myst"}}
"""The metadata of a notebook cell that shows :func:`data_banner`: myst-nb renders the Markdown
outputs of such a cell as MyST, so the banner's admonition becomes a warning box (under the
default CommonMark it would be a code block, and the strict book build fails on it)."""

ALPHA = 0.05
"""Significance level of the paired tests a comparison reads (after Holm's adjustment)."""
FEW_TEST_IMAGES = 30
"""A class with fewer test images than this has a per-class F1 too noisy to read."""

ORIGINAL_SETTINGS: dict[str, Any] = {
    "pretrained": True, **ORIGINAL_PROTOCOL, "image_size": 224, "normalization": "half",
    "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "warmup_epochs": 0.0, "epochs": 30, "patience": 5,
}
"""The original study's CNN settings by parameter name (``book/original_study.md``): ImageNet
weights fine-tuned on a half subset of RAF-DB with a 10 % validation split, every training image
mirrored, 224 px images normalised with mean = std = 0.5, batch 64, Adam with lr 1e-3, up to 30
epochs, early stopping on validation accuracy with patience 5, the last epoch's weights kept
(:data:`~fer_utils.options.ORIGINAL_PROTOCOL`)."""

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (momentum 0.9)"}


def _channels(values) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)


def _normalization(name: str) -> str:
    if name not in NORMALIZATIONS:
        return str(name)
    if name == "imagenet":   # three values per statistic: too long for a table cell
        return "ImageNet's mean and std"
    mean, std = NORMALIZATIONS[name]
    return f"{name} (mean {_channels(mean)}, std {_channels(std)})"


_model = display_name


SETTINGS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("model", "model", _model),
    ("pretrained", "initial weights", lambda v: "ImageNet-pretrained" if v else "random"),
    ("data_path", "data set", str),
    ("subset", "data used", lambda v: "the whole data set" if v >= 1 else f"a {v:.0%} subset"),
    ("val_fraction", "validation split", lambda v: "the data set's own" if v is None else f"{v:.0%} of train"),
    ("image_size", "image size", lambda v: f"{v} px"),
    ("normalization", "normalisation", _normalization),
    ("augmentation", "augmentation", str),
    ("class_weights", "class weights", str),
    ("loss", "loss", lambda v: "cross-entropy" if v == "cross_entropy" else f"{v} loss"),
    ("sampler", "training batches", lambda v: "class-balanced (sampled with replacement)" if v == "balanced"
     else "shuffled"),
    ("batch_size", "batch size", str),
    ("optimizer", "optimizer", lambda v: _OPTIMIZERS.get(v, str(v))),
    ("lr", "learning rate", lambda v: f"{v:g}"),
    ("warmup_epochs", "learning-rate warm-up", lambda v: "none" if not v else f"linear over {v:g} epoch{'s' * (v != 1)}"),
    ("epochs", "epochs at most", str),
    ("patience", "early-stopping patience", lambda v: f"{v} epoch{'s' * (v != 1)}"),
    ("monitor", "early stopping and selection on", str),
    ("restore_best", "weights tested", lambda v: "the best epoch's on validation" if v else "the last epoch's"),
    ("seed", "seed", str),
)
"""``(parameter, label, format)`` of the settings a page states, in the order it states them."""
_LABELS = {key: label for key, label, _ in SETTINGS}
_FORMATS = {key: fmt for key, _, fmt in SETTINGS}
EPOCHS_RUN = "epochs run"
"""The row of :func:`settings_table` with the epochs each run trained (after ``epochs at most``)."""


def data_banner(data: dict | list[dict] | None) -> str:
    """A MyST warning admonition (titled :data:`BANNER_TITLE`) when any of the data records
    (``provenance["data"]`` of a run, or :func:`~fer_utils.study.compare.data_records` of compared
    runs) is the embedded synthetic data set; ``""`` when none is. Show it in a cell with
    :data:`BANNER_CELL_METADATA`."""
    records = [d for d in (data if isinstance(data, list) else [data]) if isinstance(d, Mapping)]
    synthetic = [d for d in records if d.get("synthetic")]
    if not synthetic:
        return ""
    names = "; ".join(dict.fromkeys(f"`{d.get('name')}`, fingerprint `{d.get('fingerprint')}`" for d in synthetic))
    lead = ("This page is built from" if len(synthetic) == len(records) else
            f"**{len(synthetic)} of the {len(records)} data sets** behind this page are")
    lead += " the embedded **synthetic data set**"
    return (f"```{{admonition}} {BANNER_TITLE}\n:class: warning\n"
            f"{lead} ({names}): procedurally drawn cartoon faces in RAF-DB's on-disk layout and class "
            "proportions. Its numbers show that the pipeline works; they say nothing about emotion "
            "recognition on real faces. Real results need RAF-DB: "
            "`fer study run --profile full --data /path/to/RAF-DB`.\n```\n")


def show(markdown: str) -> None:
    """Display ``markdown`` in a notebook, or nothing when it is empty: an empty Markdown output
    would appear on the page as its plain-text stand-in ``<IPython.core.display.Markdown object>``."""
    from IPython.display import Markdown, display

    if markdown:
        display(Markdown(markdown))


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    return dict(obj) if isinstance(obj, Mapping) else obj.to_dict()


def _run_settings(params, training=None) -> dict[str, Any]:
    """A run's settings: its parameters, with the training settings they resolved to
    (``TrainConfig``) taking precedence; the training's class-weight values are not the
    parameter's scheme name and are left out."""
    resolved = {k: v for k, v in _as_dict(training).items() if k != "class_weights"}
    return {**_as_dict(params), **resolved}


def _differences(settings: dict) -> dict[str, tuple[str, str]]:
    """``{parameter: (ours, original)}``, formatted, where a run's setting is not the original's."""
    return {key: (_FORMATS[key](settings[key]), _FORMATS[key](theirs))
            for key, theirs in ORIGINAL_SETTINGS.items() if key in settings and settings[key] != theirs}


def settings_markdown(cfg, train_config=None) -> str:
    """The settings one run used, as Markdown: every :data:`SETTINGS` entry from the run's config
    (or its parameters) and the training settings it resolved to (a ``TrainConfig`` or its dict),
    each that differs from :data:`ORIGINAL_SETTINGS` with the original's value beside it."""
    settings = _run_settings(cfg, train_config)
    differ = _differences(settings)
    items = [f"- {label}: {fmt(settings[key])}" + (f" (*original: {differ[key][1]}*)" if key in differ else "")
             for key, label, fmt in SETTINGS if key in settings]
    if differ:
        head = (f"**Settings of this run**, from its parameters. It differs from the original study's "
                f"settings in {len(differ)} of the {len(ORIGINAL_SETTINGS)} it is compared on "
                f"({', '.join(_LABELS[k] for k in differ)}): its numbers are not the original's "
                "experiment repeated.")
    else:
        head = "**Settings of this run**, from its parameters: the original study's in every setting compared."
    return head + "\n\n" + "\n".join(items) + "\n"


def settings_table(records: dict[str, dict]) -> pd.DataFrame:
    """The settings of compared runs side by side: one column per run, from its record (its
    parameters, the training settings they resolved to and the epochs it ran), then the original
    study's (:data:`ORIGINAL_SETTINGS`); one row per :data:`SETTINGS` entry that a run has."""
    columns = {}
    for run, rec in records.items():
        settings = _run_settings(rec["params"], rec["params"].get("training"))
        columns[run] = {label: fmt(settings[key]) for key, label, fmt in SETTINGS if key in settings}
        columns[run][EPOCHS_RUN] = str(rec["metrics"].get("epochs_run", ""))
    columns["original study"] = {_LABELS[key]: _FORMATS[key](value) for key, value in ORIGINAL_SETTINGS.items()}
    rows = [label for _, label, _ in SETTINGS]
    rows.insert(rows.index(_LABELS["epochs"]) + 1, EPOCHS_RUN)
    present = {label for run in records for label in columns[run]}
    return pd.DataFrame(columns).reindex([r for r in rows if r in present]).fillna("")


def _with_ci(metrics: dict, name: str) -> str:
    low, high = (metrics.get("ci95") or {}).get(name) or (None, None)
    return f"{metrics[name]:.3f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")


def _limitations(records: dict[str, dict]) -> str:
    """The smallest class's test count and what it does to per-class scores, and how many
    training runs (seeds) stand behind each model."""
    supports: dict[str, int] = {}
    for rec in records.values():
        for name, scores in rec["metrics"]["per_class"].items():
            supports[name] = min(scores["support"], supports.get(name, scores["support"]))
    smallest = min(supports, key=supports.get)
    count = supports[smallest]
    if count == 0:
        classes = f"The class {smallest} has no test images: its F1 is 0 by definition and pulls macro F1 down."
    elif count < FEW_TEST_IMAGES:
        classes = (f"The class {smallest} has only {count} test images: one image more or less recognised moves its "
                   f"recall by {1 / count:.2f}, so its F1 is noise.")
    else:
        classes = (f"The smallest class, {smallest}, has {count} test images (one image moves its recall by "
                   f"{1 / count:.3f}).")
    seeds: dict[str, list] = {}
    for rec in records.values():
        seeds.setdefault(_model(rec["params"].get("model")), []).append(rec["params"].get("seed"))
    counts = {len(s) for s in seeds.values()}
    distinct = sorted({s for ss in seeds.values() for s in ss})
    if counts == {1}:
        runs = (f"One training run{' per model' * (len(seeds) > 1)} (seed{'s' * (len(distinct) > 1)} "
                f"{', '.join(map(str, distinct))}): the intervals cover "
                "resampling of the test images, not how much another seed would change the numbers.")
    else:
        runs = "Training runs: " + ", ".join(f"{m} {len(s)} (seeds {', '.join(map(str, sorted(s)))})"
                                             for m, s in seeds.items()) + "."
    return f"**Limitations.** {classes} {runs}"


def _paragraphs(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p) + "\n"


def never_recognised(predictions: pd.DataFrame) -> list[int]:
    """The classes present among a run's test labels of which it gets no test image right (recall
    and F1 0), in class order."""
    true, predicted = predictions["true"].to_numpy(), predictions["predicted"].to_numpy()
    return [int(c) for c in sorted(set(true.tolist())) if not ((true == c) & (predicted == c)).any()]


def interpretation(records: dict[str, dict]) -> str:
    """What the test numbers of a page's run(s) say, as Markdown: each run's macro F1 and accuracy
    with their 95 % intervals on its test images, beside always predicting the most frequent test
    class, and where training stopped; the failure notes (:func:`~fer_utils.study.compare.failure_report`);
    then the limitations (the smallest class's test count, the number of seeds)."""
    from fer_utils.study.compare import always_predicting, failure_report
    from fer_utils.labels import EMOTIONS

    results = []
    for rec in records.values():
        m, settings = rec["metrics"], _run_settings(rec["params"], rec["params"].get("training"))
        text = (f"{_model(settings.get('model'))} reached macro F1 {_with_ci(m, 'macro_f1')} and accuracy "
                f"{_with_ci(m, 'accuracy')} on {m['n']} test images")
        if rec.get("predictions") is not None:
            label, base = always_predicting(rec["predictions"]["true"])
            text += (f"; always predicting {EMOTIONS[label]} would score macro F1 {base['macro_f1']:.3f} "
                     f"and accuracy {base['accuracy']:.3f}")
            missed = never_recognised(rec["predictions"])
            if missed and len(missed) < len(EMOTIONS) - 1:      # one class only: the failure notes say it
                text += (f". It recognises none of the test images of {' or '.join(EMOTIONS[c] for c in missed)} "
                         f"({len(missed)} of {len(EMOTIONS)} classes at F1 0 in the macro average): it has not "
                         f"learned {'that class' if len(missed) == 1 else 'those classes'} in this budget")
        if "best_epoch" in m and settings.get("restore_best") is False:
            text += (f". It kept its last epoch's weights (epoch {m['kept_epoch']}, validation macro F1 "
                     f"{m['val_macro_f1']:.3f}), as the original did; epoch {m['best_epoch']} was best on "
                     f"{settings.get('monitor', 'validation')}")
        elif "best_epoch" in m:
            text += (f". It was selected at epoch {m['best_epoch']} of the {m['epochs_run']} it ran "
                     f"(validation macro F1 {m['val_macro_f1']:.3f})")
            if not m.get("stopped_early") and m["epochs_run"] == settings.get("epochs"):
                text += ", stopped by its epoch limit rather than by early stopping: longer training may change it"
        results.append(text + ".")
    return _paragraphs(" ".join(results), failure_report(records), _limitations(records))


def verdict(by_mcnemar: bool, by_bootstrap: bool | None) -> str:
    """How a paired comparison reads: significant by McNemar's test and/or by the paired-bootstrap
    interval (None: no interval computed), or not."""
    if by_bootstrap is None:                     # no bootstrap interval was computed
        return "significant" if by_mcnemar else "not significant"
    if by_mcnemar and by_bootstrap:
        return "significant by both tests"
    if by_mcnemar or by_bootstrap:
        return f"significant by {'McNemar' if by_mcnemar else 'the bootstrap'} only: weak evidence"
    return "not significant"


def _significance(tests: pd.DataFrame) -> str:
    if tests.empty:
        return "**Test differences**: no two runs share a seed and the same test images, so no paired test."
    several_seeds = tests["seed"].nunique(dropna=False) > 1
    bootstrap = "95% CI low" in tests
    lines = []
    for _, row in tests.iterrows():
        interval = (row["95% CI low"], row["95% CI high"]) if bootstrap else None
        excludes_0 = None if interval is None else bool(interval[0] > 0 or interval[1] < 0)
        said = verdict(row["p_holm"] < ALPHA, excludes_0)
        pair = f"{_model(row['A'])} vs {_model(row['B'])}" + (f" (seed {row['seed']})" if several_seeds else "")
        numbers = f"McNemar p = {row['p_holm']:.3g} after Holm"
        if interval:
            numbers += f"; difference in macro F1 {row['macro F1 A − B']:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"
        lines.append(f"- {pair}: {said} ({numbers})")
    rule = f"Holm-adjusted McNemar p < {ALPHA}" + (
        "; paired-bootstrap 95 % interval of the macro-F1 difference excluding 0" if bootstrap else "")
    return f"**Are the test differences significant?** ({rule})\n\n" + "\n".join(lines)


def comparison_interpretation(summary: pd.DataFrame, tests: pd.DataFrame, records: dict[str, dict]) -> str:
    """What a comparison of models says, as Markdown: the best model *on validation* (the only
    score a choice may rest on; ``summary`` from :func:`~fer_utils.study.compare.summarize`) with its
    test macro F1, whether each pair's test difference is significant (``tests`` from
    :func:`~fer_utils.study.compare.pairwise_tests`: Holm-adjusted McNemar p and the paired-bootstrap
    interval), the failure notes (:func:`~fer_utils.study.compare.failure_report`), then the
    limitations (smallest class, seeds)."""
    from fer_utils.study.compare import failure_report

    val = summary[("mean", "val_macro_f1")].dropna().sort_values(ascending=False)
    if val.empty:
        best = "**Best on validation**: no run records a validation score, so no model can be chosen."
    else:
        leaders = list(val.index[val == val.iloc[0]])
        mean = "mean " if (summary[("runs", "n")] > 1).any() else ""
        others = "; ".join(f"{_model(m)} {v:.3f}" for m, v in val.items() if m not in leaders)
        test = ", ".join(f"{_model(m)} {summary[('mean', 'macro_f1')][m]:.3f}" for m in leaders)
        best = (f"**Best on validation**: {' and '.join(map(_model, leaders))} "
                f"({'a tie at ' * (len(leaders) > 1)}{mean}validation macro F1 {val.iloc[0]:.3f}"
                + (f"; {others}" if others else "") + f"). On the test split: {mean}macro F1 {test}. "
                "The test columns report; they choose nothing.")
    return _paragraphs(best, _significance(tests), failure_report(records), _limitations(records))


def reproduction_interpretation(protocols: dict) -> str:
    """What the faithful-reproduction rows say, as Markdown: per model, test macro F1 and accuracy
    under the original's protocol and under the corrected one, and what the difference can and
    cannot be read as (``protocols`` from :func:`~fer_utils.study.compare.split_protocols`)."""
    from fer_utils.study.compare import summarize

    if "original" not in protocols:
        return ("**Faithful reproduction**: no run of the original's protocol (half data, 10 % validation, "
                "always-flip, validation accuracy, last-epoch weights) is among these records.")
    summaries = {p: summarize(t) for p, (t, _) in protocols.items()}
    lines = []
    for model in summaries["original"].index:
        orig = summaries["original"].loc[model]
        text = (f"{_model(model)}: macro F1 {orig[('mean', 'macro_f1')]:.3f}, accuracy "
                f"{orig[('mean', 'accuracy')]:.3f} under the original's protocol")
        if "corrected" in summaries and model in summaries["corrected"].index:
            corr = summaries["corrected"].loc[model]
            gap = corr[("mean", "macro_f1")] - orig[("mean", "macro_f1")]
            text += (f"; {corr[('mean', 'macro_f1')]:.3f} and {corr[('mean', 'accuracy')]:.3f} under the corrected "
                     f"one ({'+' if gap >= 0 else '−'}{abs(gap):.3f} macro F1 for the corrected protocol)")
        lines.append(f"- {text}.")
    only = ""
    if "corrected" in summaries:
        missing = [m for m in summaries["corrected"].index if m not in summaries["original"].index]
        if missing:
            only = (f"\n\n{', '.join(_model(m) for m in missing)} {'was' if len(missing) == 1 else 'were'} not "
                    "trained the original's way in this run of the study (the manifest's profile leaves "
                    f"{'it' if len(missing) == 1 else 'them'} out for time; the `full` profile trains every "
                    "model both ways).")
    return ("**Faithful reproduction.** The same models trained the original's way (half the data, 10 % of "
            "it for validation, every training image mirrored, early stopping on validation accuracy, "
            "the last epoch's weights kept) and the corrected way:\n\n" + "\n".join(lines) + only +
            "\n\nThe two protocols are scored on different test sets (half of the test split against all of "
            "it), so the difference is not a paired test; read it beside each run's interval in the table "
            "above. It bundles every flaw of the protocol together: half the training data, a smaller "
            "validation split, mirrored training images and the selection rule.")

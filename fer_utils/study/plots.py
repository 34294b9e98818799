"""Figures of the study's notebooks, and so of the book (matplotlib + seaborn).

Class names are shown in English with the Korean name beside it; Korean glyphs come from
``koreanize-matplotlib`` (NanumGothic) when it is installed.
"""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
from matplotlib.ticker import LogFormatter, MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns

from fer_utils.labels import EMOTIONS, KOREAN

try:  # registers NanumGothic for Hangul; optional outside the book extra
    import koreanize_matplotlib  # noqa: F401
except ImportError:  # pragma: no cover
    pass

matplotlib.rcParams["axes.unicode_minus"] = False


def class_label(name: str, korean: bool = True) -> str:
    return f"{name}\n{KOREAN[name]}" if korean else name


def class_distribution(counts: pd.DataFrame, ax=None, title: str = "Images per class and split"):
    """Grouped bar plot of a ``split_counts`` table (rows: classes, columns: splits)."""
    splits = [c for c in counts.columns if c != "total"]
    long = (counts[splits].rename_axis("class").reset_index()
            .melt(id_vars="class", var_name="split", value_name="images"))
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    sns.barplot(data=long, x="class", y="images", hue="split", ax=ax,
                order=[c for c in EMOTIONS if c in counts.index])
    ax.set_xticks(ax.get_xticks(), [class_label(c) for c in EMOTIONS if c in counts.index])
    ax.set_xlabel("")
    ax.set_title(title)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7)
    return ax


def sample_grid(index: pd.DataFrame, open_image, per_class: int = 6, seed: int = 0,
                size: float = 1.3):
    """A grid of sample images, one row per class (random, seeded)."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(EMOTIONS), per_class, figsize=(per_class * size, len(EMOTIONS) * size),
                             squeeze=False)
    for r, name in enumerate(EMOTIONS):
        rows = index[index["label"] == r]
        picks = rows.iloc[rng.permutation(len(rows))[:per_class]] if len(rows) else rows
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(picks):
                ax.imshow(open_image(picks.iloc[c]))
            if c == 0:
                ax.set_ylabel(class_label(name), rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def size_histogram(sizes: pd.DataFrame, ax=None):
    """Histogram of image widths and heights; when every image has one size, that size said in
    words instead (a single bar tells nothing)."""
    shapes = sizes[["width", "height"]].drop_duplicates()
    if len(shapes) == 1:
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.8))
        width, height = shapes.iloc[0]
        ax.text(0.5, 0.5, f"Image sizes: all {len(sizes):,} images are {width} × {height} px", ha="center",
                va="center", fontsize=11, transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    long = sizes.melt(id_vars=["split"], value_vars=["width", "height"], var_name="side", value_name="pixels")
    sns.histplot(data=long, x="pixels", hue="side", multiple="dodge", ax=ax, discrete=long["pixels"].nunique() < 30)
    ax.set_title("Image sizes")
    return ax


def confusion_matrix(cm, ax=None, normalize: bool = True, title: str = "Confusion matrix (rows: true)"):
    """Heatmap of a confusion matrix (list of lists in EMOTIONS order), annotated with counts.

    The colour is the row share (recall per true class) when ``normalize``, else the count; the
    numbers are always image counts, so a small class is not hidden behind a large share. Tick
    labels stay horizontal (English over Korean).
    """
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None) if normalize else cm
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    names = [class_label(c) for c in EMOTIONS]
    sns.heatmap(shown, annot=cm.astype(int), fmt="d", cmap="Blues", vmin=0,
                vmax=1 if normalize else None, xticklabels=names, yticklabels=names, ax=ax,
                cbar=False, annot_kws={"fontsize": 10}, linewidths=0.5, linecolor="white")
    ax.tick_params(axis="x", labelrotation=0, labelsize=9)
    ax.tick_params(axis="y", labelrotation=0, labelsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + (" — colour: share of the row" if normalize else ""))
    return ax


def per_class_f1(frame: pd.DataFrame, ax=None, hue: str = "model"):
    """Bar plot of per-class F1; ``frame`` has columns class, f1 and ``hue``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    sns.barplot(data=frame, x="class", y="f1", hue=hue, order=list(EMOTIONS), ax=ax)
    ax.set_xticks(ax.get_xticks(), [class_label(c) for c in EMOTIONS])
    ax.set_xlabel("")
    ax.set_ylim(0, 1)
    ax.set_title("F1 per class (test)")
    return ax


class _PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (``0.6``, ``1``, ``2``): the default mathtext labels
    (``6 x 10^-1``) need a minus glyph that the Korean-capable font lacks."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def training_curves(history: pd.DataFrame, hue: str | None = None, axes=None, legend_outside: bool | None = None):
    """Loss and validation macro F1 per epoch; ``hue`` names a column telling runs apart.
    ``legend_outside`` puts each legend right of its plot (by default whenever ``hue`` is given:
    a legend of several runs inside would cover their curves)."""
    if legend_outside is None:
        legend_outside = hue is not None
    if axes is None:  # legends outside: one plot above the other, each at the page's width
        _, axes = plt.subplots(2, 1, figsize=(9, 7)) if legend_outside else plt.subplots(1, 2, figsize=(10, 3.5))
    long = history.melt(id_vars=["epoch"] + ([hue] if hue else []),
                        value_vars=[c for c in ("train_loss", "val_loss") if c in history],
                        var_name="split", value_name="loss")
    sns.lineplot(data=long, x="epoch", y="loss", hue=hue, style="split", ax=axes[0], marker="o")
    axes[0].set_yscale("log")  # a first-epoch spike must not squash the rest of the curve
    axes[0].yaxis.set_major_formatter(_PlainLogFormatter())
    axes[0].yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    axes[0].set_title("Loss (log scale)")
    sns.lineplot(data=history, x="epoch", y="val_macro_f1", hue=hue, ax=axes[1], marker="o")
    axes[1].set_title("Validation macro F1")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if legend_outside and ax.get_legend() is not None:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=9, title_fontsize=9, frameon=False)
    if legend_outside:
        axes[0].figure.tight_layout()
    return axes


def confusion_matrices(matrices: dict[str, list], ncols: int = 1, normalize: bool = True):
    """One confusion-matrix heatmap per entry of ``matrices`` (title -> matrix), ``ncols`` per row
    (one by default: at a book page's width, counts in a 7 x 7 grid are legible only that way)."""
    n = len(matrices)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 6 * nrows), squeeze=False)
    for ax, (title, cm) in zip(axes.flat, matrices.items()):
        confusion_matrix(cm, ax=ax, normalize=normalize, title=title)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def caption_examples(examples: pd.DataFrame, open_image, ncols: int = 3, width: float = 2.6,
                     wrap: int = 30, max_chars: int = 140):
    """Faces with their caption and vote beneath: one panel per row of ``examples`` (columns
    ``label``, ``caption``, ``vote_label``; images through ``open_image(row)``), ordered as given."""
    import textwrap

    n = len(examples)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * width, nrows * (width + 1.3)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (_, row) in zip(axes.flat, examples.iterrows()):
        ax.imshow(open_image(row))
        # a random captioner writes byte tokens that decode to control, replacement or rare
        # letters the figure font lacks: show anything beyond Latin-1 as a middle dot
        caption = "".join(ch if ch.isprintable() and ord(ch) < 0x100 else "·" for ch in str(row["caption"]))
        if len(caption) > max_chars:
            caption = caption[:max_chars - 1] + "…"
        vote = row["vote_label"] or "no emotion word"
        ax.set_title(f"true: {EMOTIONS[int(row['label'])]}", fontsize=9)
        ax.text(0.5, -0.04, "\n".join(textwrap.wrap(f"“{caption}”", wrap)) + f"\nvote: {vote}",
                transform=ax.transAxes, ha="center", va="top", fontsize=9)
    fig.tight_layout()
    return fig


def prompt_comparison(frame: pd.DataFrame, metrics: tuple[str, ...] = ("vote macro F1", "probe macro F1"),
                      ax=None, by: str = "run", baseline: float | None = None,
                      baseline_label: str = "majority class"):
    """Grouped bars of ``metrics`` (columns of ``frame``) per ``by`` (a prompt-ablation summary),
    with a dashed line at ``baseline`` (the majority-class macro F1, say)."""
    long = frame.melt(id_vars=by, value_vars=list(metrics), var_name="metric", value_name="value")
    long["value"] = long["value"].astype(float)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.2 * len(frame)), 3.5))
    sns.barplot(data=long, x=by, y="value", hue="metric", ax=ax)
    ax.set_xlabel("")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=20)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7)
    if baseline is not None:
        ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label=f"{baseline_label} ({baseline:.2f})")
        ax.legend(fontsize=8)
    return ax


def gains(frame: pd.DataFrame, labels, ax=None, title: str = "",
          xlabel: str = "macro F1 gain (mean over seeds, 95 % interval)"):
    """One row per entry: a difference (``gain``) with its interval (``gain_low``, ``gain_high``),
    named by ``labels``, top to bottom; a dashed line at 0."""
    frame = frame.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(frame) + 1.2))
    y = np.arange(len(frame))
    ax.errorbar(frame["gain"], y, xerr=[frame["gain"] - frame["gain_low"], frame["gain_high"] - frame["gain"]],
                fmt="o", capsize=3)
    ax.axvline(0, color="0.4", linestyle="--", linewidth=1)
    ax.set_yticks(y, list(labels), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return ax


def fusion_gains(comparisons: pd.DataFrame, ax=None, title: str = "Fused minus CNN-only, test macro F1"):
    """Each fused variant's macro-F1 gain over the CNN-only head with its paired-bootstrap 95 %
    interval (a ``compare_to_cnn`` table); a line at 0."""
    labels = [h if v in ("main", "late") else f"{h} ({v})" for v, h in zip(comparisons["variant"], comparisons["head"])]
    return gains(comparisons, labels, ax=ax, title=title)


def recall_heatmap(recall: pd.DataFrame, highlight=("fear", "disgust"), ax=None,
                   title: str = "Recall per class (test)"):
    """Recall per setting (rows) and class (columns, :data:`EMOTIONS` order), annotated, with the
    ``highlight`` classes boxed and their names in bold: the minority classes a treatment is for."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5, 0.45 * len(recall) + 1.6))
    classes = [c for c in EMOTIONS if c in recall.columns]
    sns.heatmap(recall[classes].astype(float), annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False,
                xticklabels=[class_label(c) for c in classes], yticklabels=list(recall.index), ax=ax,
                linewidths=0.5, linecolor="white", annot_kws={"fontsize": 9})
    for k, name in enumerate(classes):
        if name in highlight:
            ax.add_patch(plt.Rectangle((k, 0), 1, len(recall), fill=False, edgecolor="tab:red", linewidth=2.5))
            ax.get_xticklabels()[k].set_fontweight("bold")
            ax.get_xticklabels()[k].set_color("tab:red")
    ax.tick_params(axis="x", labelrotation=0, labelsize=9)
    ax.tick_params(axis="y", labelrotation=0, labelsize=9)
    ax.set_title(title)
    return ax


def fusion_sweep(sweep: pd.DataFrame, real_vote_accuracy: float | None = None, ax=None,
                 no_information: tuple[float, str] | None = None):
    """The fused head's gain over CNN-only against the simulated captions' vote accuracy, with
    intervals; a dotted line where the study's captioner's vote accuracy sits, and a dashed one at
    ``no_information`` ``(gain, where measured)``: what captions without information give."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.errorbar(sweep["vote_accuracy"], sweep["gain"], yerr=[sweep["gain"] - sweep["low"], sweep["high"] - sweep["gain"]],
                fmt="o-", capsize=3, label="fused with simulated captions (95 % CI)")
    ax.axhline(0, color="0.4", linestyle="--", linewidth=1)
    if no_information is not None:
        ax.axhline(no_information[0], color="tab:orange", linestyle="--", linewidth=1.2,
                   label=f"no information: {no_information[1]} ({no_information[0]:+.3f})")
    if real_vote_accuracy is not None:
        ax.axvline(real_vote_accuracy, color="tab:red", linestyle=":", linewidth=1.8,
                   label=f"the study's captioner ({real_vote_accuracy:.2f})")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("caption vote accuracy on test (simulated captions)")
    ax.set_ylabel("macro F1 gain over CNN-only")
    ax.set_xlim(-0.03, 1.03)         # a line at 0 or 1 stays visible, the end ticks unclipped
    ax.figure.tight_layout()
    return ax


def class_change(frame: pd.DataFrame, ax=None, title: str = "Per-class F1: fused minus CNN-only"):
    """Bars of a ``per_class_change`` table's ``change`` column per class."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    colors = ["tab:green" if v >= 0 else "tab:red" for v in frame["change"]]
    ax.bar(range(len(frame)), frame["change"], color=colors)
    ax.set_xticks(range(len(frame)), [class_label(c) for c in frame.index], fontsize=8)
    ax.axhline(0, color="0.4", linewidth=1)
    ax.set_ylabel("F1 change")
    ax.set_title(title)
    return ax


def probability_bars(probabilities: dict[str, float], ax=None, compare: dict[str, float] | None = None,
                     compare_label: str | None = None, title: str = "Probability of each class"):
    """Horizontal bars of one image's class probabilities (classes in canonical order, the most
    probable highlighted); ``compare``: a second set drawn as outlines (e.g. the same image with a
    neutral caption)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 2.8))
    values = [probabilities[name] for name in EMOTIONS]
    best = int(np.argmax(values))
    y = np.arange(len(EMOTIONS))
    colours = ["#2563eb" if i == best else "#93c5fd" for i in range(len(EMOTIONS))]
    ax.barh(y, values, color=colours, label="probability" if compare else None)
    if compare is not None:
        ax.barh(y, [compare[name] for name in EMOTIONS], fill=False, edgecolor="#111827", linewidth=1.2,
                label=compare_label)
        ax.legend(fontsize=8, loc="lower right")
    for i, value in enumerate(values):
        ax.text(min(value + 0.01, 0.9), i, f"{100 * value:.1f}%", va="center", fontsize=8)
    ax.set_yticks(y, [f"{name} {KOREAN[name]}" for name in EMOTIONS], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(title, fontsize=10)
    return ax

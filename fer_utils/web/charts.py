"""The dashboard's charts (matplotlib, object API, so threads never share a pyplot state), with
a Korean-capable font (NanumGothic from ``koreanize-matplotlib``)."""
from __future__ import annotations

import io
from collections import Counter
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import koreanize_matplotlib  # noqa: E402,F401  (registers NanumGothic and makes it the default font)
from matplotlib.figure import Figure  # noqa: E402

from fer_utils.labels import EMOTIONS  # noqa: E402
from fer_utils.web.comments import label_name  # noqa: E402

CHARTS = ("counts", "timeline")
TITLES = {"ko": {"counts": "감정별 예측 수", "timeline": "날짜별 감정", "empty": "아직 예측이 없습니다",
                 "count": "예측 수", "date": "날짜 (UTC)"},
          "en": {"counts": "Predictions per emotion", "timeline": "Emotions over time",
                 "empty": "No predictions yet", "count": "predictions", "date": "date (UTC)"}}


def render(chart: str, rows: list[tuple[str, datetime]], lang: str) -> bytes:
    """PNG bytes of ``chart`` (``counts`` or ``timeline``) over ``rows`` of (label, created_at)."""
    lang = lang if lang in TITLES else "ko"
    text = TITLES[lang]
    fig = Figure(figsize=(7, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = [label_name(e, lang) for e in EMOTIONS]
    colours = matplotlib.colormaps["tab10"].colors
    if not rows:
        ax.text(0.5, 0.5, text["empty"], ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    elif chart == "counts":
        counts = Counter(label for label, _ in rows)
        values = [counts.get(e, 0) for e in EMOTIONS]
        ax.bar(names, values, color=colours[:len(EMOTIONS)])
        ax.set_ylabel(text["count"])
        ax.yaxis.get_major_locator().set_params(integer=True)
    else:
        days = sorted({created.date() for _, created in rows})
        per_day = Counter((created.date(), label) for label, created in rows)
        bottom = [0] * len(days)
        for i, emotion in enumerate(EMOTIONS):
            values = [per_day.get((day, emotion), 0) for day in days]
            if any(values):
                ax.bar([d.isoformat() for d in days], values, bottom=bottom, label=names[i], color=colours[i])
                bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xlabel(text["date"])
        ax.set_ylabel(text["count"])
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
        if len(days) < 4:  # a bar or two must not fill the whole width
            ax.set_xlim(-2, len(days) + 1)
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_title(text[chart])
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()

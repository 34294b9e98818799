"""Summaries of a data set index used by the data overview notebook and the book."""
from __future__ import annotations

import pandas as pd
from PIL import Image


def image_sizes(index: pd.DataFrame) -> pd.DataFrame:
    """Width, height and mode of every image (header read only for files; pixels arrays direct)."""
    rows = []
    for row in index.itertuples(index=False):
        if getattr(row, "pixels", None) is not None:
            h, w = row.pixels.shape[:2]
            mode = "L" if row.pixels.ndim == 2 else "RGB"
        else:
            with Image.open(row.path) as im:  # lazy: reads the header, not the pixels
                (w, h), mode = im.size, im.mode
        rows.append({"id": row.id, "split": row.split, "label": row.label,
                     "width": w, "height": h, "mode": mode})
    return pd.DataFrame(rows)


def size_summary(sizes: pd.DataFrame) -> pd.DataFrame:
    """describe() of width and height per split, one column per split and side (count, mean,
    std, min, quartiles and max as rows: narrow enough for a page)."""
    table = sizes.groupby("split")[["width", "height"]].describe().round(1).T.unstack(0).T
    return table.rename_axis(["split", "side"])

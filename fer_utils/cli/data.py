"""``fer data``: make and check data sets."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fer_utils.options import DATA_FORMATS, RAFDB_VARIANTS
from fer_utils.cli.base import FERGroup, project


@click.group(cls=FERGroup)
def data():
    """Make and check data sets."""


@data.command("synth")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder: new, empty, or an earlier synthetic set, which is replaced "
                   "(default: the project's data/synthetic).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--scale", type=float, default=None,
              help="Fraction of RAF-DB's size (default 0.08: 1,254 images with 20 per class and split at least).")
@click.option("--min-per-class", type=click.IntRange(min=1), default=None,
              help="At least this many images of every class in each split (default 20).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes drawing images (the output is the same whatever the number).")
def data_synth(out, seed, scale, min_per_class, workers):
    """Write the synthetic face data set in RAF-DB's exact on-disk layout."""
    out = out or project().synthetic   # before the imports: no project folder is said at once
    from fer_utils.data import synthetic

    seed = synthetic.DEFAULT_SEED if seed is None else seed
    scale = synthetic.DEFAULT_SCALE if scale is None else scale
    if scale <= 0:
        raise click.BadParameter("must be > 0", param_hint="--scale")
    min_per_class = synthetic.DEFAULT_MIN_PER_CLASS if min_per_class is None else min_per_class
    path = synthetic.generate(out, seed=seed, scale=scale, progress=True, workers=workers,
                              min_per_class=min_per_class)
    click.echo(f"synthetic data set (seed {seed}, scale {scale}) written to {path}")


@data.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", *DATA_FORMATS]), default="auto", show_default=True)
@click.option("--variant", type=click.Choice(RAFDB_VARIANTS), default="aligned", show_default=True,
              help="RAF-DB image folder to check, basic/Image/<variant>/ (other formats ignore it).")
def data_check(path, fmt, variant):
    """Validate a data set; print counts per class and split; exit 1 on any problem."""
    from fer_utils.data import check_dataset

    report = check_dataset(path, fmt=fmt, variant=variant)
    click.echo(report.format())
    sys.exit(0 if report.ok else 1)

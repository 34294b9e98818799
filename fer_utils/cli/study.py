"""``fer study``: run the parameterised notebooks of the study manifest."""
from __future__ import annotations

from pathlib import Path

import click

from .base import FERGroup


@click.group(cls=FERGroup)
def study():
    """Run the parameterised notebooks of the study."""


@study.command("run")
@click.option("--profile", default="default", show_default=True,
              help="quick (tests/CI), default (embedded data, CPU) or full (RAF-DB via --data, GPU).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Data set (default: the project's data/synthetic, generated if missing; "
                   "required by the profiles of the manifest's requires_data: full).")
@click.option("--only", multiple=True, help="Run only this notebook (stem or name); repeatable.")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=None,
              help="Where run records go (default: the project's data/runs).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where executed notebooks go (default: the project's book/experiments).")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Study manifest (default: the project's notebooks/study.yaml).")
def study_run(profile, data_path, only, runs_root, out_dir, manifest):
    """Execute the study manifest with papermill.

    Nothing is written until the plan (manifest, profile, --only, parameters) and the data set's
    layout are checked; without --data, the project's data set is generated first if missing,
    except for a profile listed under requires_data in the manifest (full, the real study), which
    is then an error.
    """
    from .. import study as st

    runs = st.plan_study(profile=profile, data_path=data_path, runs_root=runs_root, out_dir=out_dir,
                         only=only, manifest_path=manifest)
    if data_path is None:
        for path in st.data_sets(runs):  # the project's default data set, when a run reads it
            _generate_default_data(path)
    done = st.execute_study(runs, echo=click.echo)
    click.echo(f"{len(done)} notebook run(s) in {sum(s for _, s in done):.1f} s")


def _generate_default_data(path: Path) -> None:
    """Write the embedded synthetic data set at ``path`` unless something is there."""
    if path.exists():
        return
    from ..data import synthetic

    click.echo(f"{path} is missing: generating the embedded synthetic data set")
    synthetic.generate(path, seed=synthetic.DEFAULT_SEED, scale=synthetic.DEFAULT_SCALE)

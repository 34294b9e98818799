"""The ``fer`` command: data, study, book (and, from the model layer, predict)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import FERError


class _Group(click.Group):
    """Turn the package's own errors into one clear line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FERError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="fer_utils")
def main():
    """Reproducible facial expression recognition study (CNN vs CNN + caption features)."""


# ---------------------------------------------------------------- data
@main.group(cls=_Group)
def data():
    """Make and check data sets."""


@data.command("synth")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Output folder (default: data/synthetic).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--scale", type=float, default=None,
              help="Fraction of RAF-DB's size (default 0.1, about 1,534 images).")
def data_synth(out, seed, scale):
    """Write the synthetic face data set in RAF-DB's exact on-disk layout."""
    from .data import synthetic
    from .study import DEFAULT_DATA

    out = out or DEFAULT_DATA
    seed = synthetic.DEFAULT_SEED if seed is None else seed
    scale = synthetic.DEFAULT_SCALE if scale is None else scale
    if scale <= 0:
        raise click.BadParameter("must be > 0", param_hint="--scale")
    path = synthetic.generate(out, seed=seed, scale=scale, progress=True)
    click.echo(f"synthetic data set (seed {seed}, scale {scale}) written to {path}")


@data.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "rafdb", "fer2013", "imagefolder"]),
              default="auto", show_default=True)
def data_check(path, fmt):
    """Validate a data set; print counts per class and split; exit 1 on any problem."""
    from .data import check_dataset

    report = check_dataset(path, fmt=fmt)
    click.echo(report.format())
    sys.exit(0 if report.ok else 1)


# ---------------------------------------------------------------- study
@main.group(cls=_Group)
def study():
    """Run the parameterised notebooks of the study."""


@study.command("run")
@click.option("--profile", default="default", show_default=True,
              help="quick (tests/CI), default (embedded data, CPU) or full (RAF-DB, GPU).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Data set (default: data/synthetic, generated if missing).")
@click.option("--only", multiple=True, help="Run only this notebook (stem or name); repeatable.")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=None,
              help="Where run records go (default data/runs).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where executed notebooks go (default book/experiments).")
@click.option("--manifest", type=click.Path(path_type=Path), default=None)
def study_run(profile, data_path, only, runs_root, out_dir, manifest):
    """Execute the study manifest with papermill."""
    from . import study as st

    if data_path is None:
        data_path = st.DEFAULT_DATA
        if not data_path.exists():
            from .data import synthetic

            click.echo(f"{data_path} is missing: generating the embedded synthetic data set")
            synthetic.generate(data_path, seed=synthetic.DEFAULT_SEED, scale=synthetic.DEFAULT_SCALE)
    elif not data_path.exists():
        raise click.BadParameter(f"{data_path} does not exist", param_hint="--data")
    done = st.run_study(profile=profile, data_path=data_path, runs_root=runs_root or st.DEFAULT_RUNS,
                        out_dir=out_dir or st.DEFAULT_OUT, only=only,
                        manifest_path=manifest or st.DEFAULT_MANIFEST, echo=click.echo)
    click.echo(f"{len(done)} notebook run(s) in {sum(s for _, s in done):.1f} s")


# ---------------------------------------------------------------- predict
@main.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Model bundle folder (default: the newest bundle under data/).")
@click.option("--device", default="cpu", show_default=True)
def predict_cmd(images, bundle, device):
    """Predict the expression of each image; JSON on stdout (one object per image)."""
    from .predict import Predictor, find_latest_bundle
    from .study import REPO_ROOT

    bundle = bundle or find_latest_bundle(REPO_ROOT / "data")
    predictor = Predictor.from_bundle(bundle, device=device)
    results = predictor.predict_labeled([str(p) for p in images])
    out = [{"image": str(path), **res} for path, res in zip(images, results)]
    click.echo(json.dumps({"bundle": str(bundle), "predictions": out}, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------- book
@main.group(cls=_Group)
def book():
    """Build the Jupyter Book."""


@book.command("build")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with _config.yml and _toc.yml (default: the repository).")
@click.option("--no-strict", is_flag=True, help="Do not turn warnings into errors.")
def book_build(root, no_strict):
    """Build the book into <root>/_build/html (warnings are errors)."""
    import subprocess

    from . import study as st

    try:
        html = st.build_book(root or st.REPO_ROOT, strict=not no_strict)
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"jupyter-book build failed (exit {exc.returncode}); "
                                   "did `fer study run` produce book/experiments?")
    click.echo(f"book built: {html / 'index.html'}")


if __name__ == "__main__":  # pragma: no cover
    main()

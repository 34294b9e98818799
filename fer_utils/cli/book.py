"""``fer book``: build the Jupyter Book."""
from __future__ import annotations

import subprocess
from pathlib import Path

import click

from fer_utils.cli.base import FERGroup, project


@click.group(cls=FERGroup)
def book():
    """Build the Jupyter Book."""


@book.command("build")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with _config.yml (default: the project folder).")
@click.option("--no-strict", is_flag=True, help="Do not turn warnings into errors.")
def book_build(root, no_strict):
    """Write _toc.yml from the study manifest and build the book into <root>/_build/html (warnings are errors)."""
    import time

    from fer_utils.study import check as studycheck, runner as st

    runs = project().runs if root is None else None
    factor = None
    budget = st.budget_profile() if runs is not None else None
    if budget is not None and studycheck.timing_profile(runs) == budget:   # the book is a step of the budget
        from fer_utils.study import speed

        factor = speed.measure().factor
    start = time.perf_counter()
    try:
        html = st.build_book(root, strict=not no_strict)
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"jupyter-book build failed (exit {exc.returncode}); "
                                   "did `fer study run` produce book/experiments?")
    seconds = time.perf_counter() - start
    click.echo(f"book built in {seconds:.1f} s" + (f" (speed factor {factor:.2f})" if factor else "")
               + f": {html / 'index.html'}")
    if runs is not None:
        studycheck.add_book_seconds(runs, seconds, factor)

"""``fer runs``: move a study's results between machines as one archive."""
from __future__ import annotations

from pathlib import Path

import click

from fer_utils.cli.base import FERGroup, project


@click.group(cls=FERGroup)
def runs():
    """Export and import run records and executed notebooks (to build the book elsewhere)."""


@runs.command("export")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bundles", is_flag=True, help="Include the model bundles (weights; large).")
def runs_export(archive, bundles):
    """Write the project's run records and executed notebooks to ARCHIVE (.tar.gz, appended when
    the name lacks it)."""
    from fer_utils.study.archive import export_results

    if not archive.name.endswith((".tar.gz", ".tgz")):
        archive = archive.with_name(archive.name + ".tar.gz")
    paths = project()
    manifest = export_results(archive, paths.runs, paths.book_out, include_bundles=bundles)
    click.echo(f"{len(manifest['files'])} file(s) written to {archive}"
               + ("" if bundles else " (model bundles left out; --bundles includes them)"))


@runs.command("import")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite files that already exist.")
def runs_import(archive, replace):
    """Check ARCHIVE (made by `fer runs export`) and unpack it into this project; then
    `fer book build` builds the book from it. Nothing is written if any check fails."""
    from fer_utils.study.archive import import_results

    paths = project()
    written = import_results(archive, paths.runs, paths.book_out, replace=replace)
    click.echo(f"{len(written)} file(s) imported into {paths.runs} and {paths.book_out}; "
               "now run `fer book build`")

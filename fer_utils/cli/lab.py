"""``fer lab``: JupyterLab on the executed notebooks of the last study run."""
from __future__ import annotations

import subprocess

import click

from fer_utils.cli.base import project


@click.command("lab")
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True)
@click.option("--no-browser", is_flag=True, help="Do not open a browser (print the address only).")
@click.option("--sources", is_flag=True,
              help="Open on notebooks/ (the source notebooks, the original's settings as defaults) "
                   "instead of book/experiments/ (the executed pages).")
def lab_cmd(port, no_browser, sources):
    """Open JupyterLab on the executed notebooks (book/experiments/), served from the project
    folder on http://127.0.0.1:PORT/ (this machine only; Ctrl-C stops).

    Each executed page carries the parameters its run was made with (the cell tagged
    injected-parameters), and its kernel starts in the project folder, as under `fer study run`:
    "Run all" repeats that run and writes its record again (data/runs/<notebook>/<run>/). To run a
    source notebook with a profile's parameters, use `fer study run --only NAME --profile P` and
    open the page it writes."""
    from fer_utils.study.lab import lab_command

    root = project().root
    start = "notebooks" if sources else "book/experiments"
    if not (root / start).is_dir():
        raise click.ClickException(f"{root / start}: no executed notebooks yet; run `fer study run` (make study) first")
    click.echo(f"JupyterLab on http://127.0.0.1:{port}/lab/tree/{start} (kernels start in {root}; Ctrl-C stops)")
    try:
        raise SystemExit(subprocess.call(lab_command(root, port, not no_browser, start), cwd=root))
    except KeyboardInterrupt:
        raise SystemExit(0) from None

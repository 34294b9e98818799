"""``fer dashboard``: the Voila dashboard (the study's models on uploaded photos, and their test results)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click



TEMPLATE = "fer"
"""The dashboard's Voila template (``fer_utils/dashboard/share/voila/templates/fer``: "lab" with no CDN link)."""


def voila_command(port: int, notebook: Path | None = None) -> list[str]:
    """The Voila command line serving the dashboard on 127.0.0.1:``port`` (no browser opened)."""
    from fer_utils.dashboard import NOTEBOOK

    return [sys.executable, "-m", "voila", str(notebook or NOTEBOOK), f"--port={port}", "--no-browser",
            "--Voila.ip=127.0.0.1", "--show_tracebacks=False", f"--template={TEMPLATE}"]


def dashboard_environment(bundles: Path | None, data: Path | None, bundle: Path | None, env=None) -> dict:
    """The environment the dashboard's kernel reads its folders from (``FER_DASHBOARD_*``, ``FER_HOME``)."""
    from fer_utils.dashboard import ENV_BUNDLE, ENV_BUNDLES, ENV_DATA, NOTEBOOK

    from fer_utils.paths import ENV_DIRS, project_paths

    env = dict(os.environ if env is None else env)
    folders = project_paths(env)
    env["FER_HOME"] = str(folders.root)
    for name, variable in ENV_DIRS.items():  # absolute: Voila starts the kernel in the notebook's folder
        if env.get(variable):
            env[variable] = str(getattr(folders, name))
    share = str(Path(NOTEBOOK).parent / "share")  # where Voila finds the dashboard's template
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [share, env.get("JUPYTER_PATH")]))
    for name, value in ((ENV_BUNDLES, bundles), (ENV_DATA, data), (ENV_BUNDLE, bundle)):
        if value is not None:
            env[name] = str(Path(value).resolve())
    return env


@click.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535), default=8866, show_default=True)
@click.option("--bundle", type=click.Path(path_type=Path, exists=True), default=None,
              help="Preselect this model bundle (it is added to the list if it lies elsewhere).")
@click.option("--bundles", type=click.Path(path_type=Path), default=None,
              help="Folder searched for bundles (default: the project's runs, FER_BUNDLES_DIR).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Data set whose bundles are preferred and whose test split gives the test results "
                   "(default: data/synthetic).")
def dashboard_cmd(port, bundle, bundles, data_path):
    """Serve the Voila dashboard on http://127.0.0.1:PORT/ (this machine only; Ctrl-C stops)."""
    env = dashboard_environment(bundles, data_path, bundle)
    click.echo(f"dashboard on http://127.0.0.1:{port}/ (Ctrl-C stops)")
    try:
        raise SystemExit(subprocess.call(voila_command(port), env=env))
    except KeyboardInterrupt:
        raise SystemExit(0) from None

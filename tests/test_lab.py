"""`fer lab`: JupyterLab served from the project folder on 127.0.0.1, its kernels started in the
project folder whatever notebook they run (fer_utils.study.lab), so that an executed page's
relative paths mean what they meant under papermill. A real server, a real kernel."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from fer_utils.study.lab import lab_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, token: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab from ``fer lab``'s command line on a scratch project with one executed page."""
    root = tmp_path / "project"
    page = root / "book" / "experiments" / "01_data" / "default.ipynb"
    page.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, page)
    port, token = _free_port(), "fer-lab-test"
    command = lab_command(root, port, open_browser=False) + [f"--IdentityProvider.token={token}"]
    server = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "JUPYTER_NO_CONFIG": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _call(f"{base}/api/status", token)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {server.stdout.read()}")
            time.sleep(0.3)
    yield root, base, token
    server.terminate()
    server.wait(timeout=30)


def test_fer_lab_serves_the_executed_pages_and_starts_kernels_in_the_project(lab):
    """The lab page answers; a session for a page under book/experiments/ starts its kernel in the
    project folder (JupyterLab's default would be the page's own folder)."""
    from jupyter_client import BlockingKernelClient
    from jupyter_core.paths import jupyter_runtime_dir

    root, base, token = lab
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab/tree/book/experiments",
                                                       headers={"Authorization": f"token {token}"}), timeout=30) as r:
        assert r.status == 200 and b"JupyterLab" in r.read()
    listing = _call(f"{base}/api/contents/book/experiments/01_data", token)
    assert [item["name"] for item in listing["content"]] == ["default.ipynb"]
    session = _call(f"{base}/api/sessions", token, "POST", {"path": "book/experiments/01_data/default.ipynb",
                                                            "type": "notebook", "kernel": {"name": "python3"}})
    connection = Path(jupyter_runtime_dir()) / f"kernel-{session['kernel']['id']}.json"
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        printed = []
        client.execute_interactive("import os; print(os.getcwd())", timeout=60,
                                   output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
    finally:
        client.stop_channels()
    assert "".join(printed).strip() == str(root)

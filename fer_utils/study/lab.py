"""JupyterLab on the study's executed notebooks (``fer lab``): every kernel starts in the project
folder, as papermill starts the study's kernels, so that an executed page's injected parameters
(``data/synthetic``, ``data/runs/...``: relative to the project, :func:`fer_utils.study.runner.execute`)
mean what they meant when the page was made, and "Run all" reproduces it.

JupyterLab's own kernel manager starts a kernel in the folder of the notebook it runs
(``book/experiments/02_cnn_baselines/``), where those paths do not exist or, worse, would be
created anew. :class:`ProjectKernelManager` is the server's kernel manager with that one choice
changed; ``fer lab`` names it with ``--ServerApp.kernel_manager_class``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

KERNEL_MANAGER = f"{__name__}.ProjectKernelManager"


class ProjectKernelManager(AsyncMappingKernelManager):
    """Every kernel starts in the server's root folder (the project), whatever notebook it runs."""

    def cwd_for_path(self, path, **kwargs):
        return self.root_dir


def lab_command(root: Path, port: int, open_browser: bool = True, start: str = "book/experiments",
                allow_root: bool | None = None) -> list[str]:
    """The JupyterLab command line: served on 127.0.0.1:``port`` from the project folder ``root``,
    opening on ``start`` (a folder inside it), kernels in ``root`` (:class:`ProjectKernelManager`).
    ``allow_root`` (default: whether this process runs as root, as in a container or CI) passes
    ``--allow-root``, without which the server refuses to start as root; it listens on the
    loopback only, behind its token."""
    if allow_root is None:
        allow_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.kernel_manager_class={KERNEL_MANAGER}", f"--LabApp.default_url=/lab/tree/{start}",
            *([] if open_browser else ["--no-browser"]), *(["--allow-root"] if allow_root else [])]


__all__ = ["KERNEL_MANAGER", "ProjectKernelManager", "lab_command"]

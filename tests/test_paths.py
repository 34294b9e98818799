"""Project folders come from FER_HOME / the current folder and environment overrides, never from
where the package is installed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fer_utils.errors import ConfigError
from fer_utils.paths import ENV_DIRS, ENV_HOME, find_project, project_paths

REPO = Path(__file__).resolve().parent.parent


def _project(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "study.yaml", root / "notebooks" / "study.yaml")
    return root


def test_current_folder_holding_the_manifest_is_the_project(tmp_path):
    root = _project(tmp_path / "proj")
    paths = project_paths(env={}, cwd=root)
    assert paths.root == root.resolve() and paths.manifest == root.resolve() / "notebooks" / "study.yaml"
    assert paths.data == root.resolve() / "data" and paths.synthetic == paths.data / "synthetic"
    assert paths.runs == paths.data / "runs" and paths.bundles == paths.runs
    assert paths.cache == paths.data / "cache" and paths.instance == paths.data / "instance"
    assert paths.book_out == root.resolve() / "book" / "experiments"


def test_fer_home_and_overrides(tmp_path):
    root = _project(tmp_path / "proj")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {ENV_HOME: str(root), ENV_DIRS["data"]: "big-disk", ENV_DIRS["cache"]: str(tmp_path / "c")}
    paths = project_paths(env=env, cwd=elsewhere)
    assert paths.root == root.resolve()
    assert paths.data == (elsewhere / "big-disk").resolve()      # relative to the current folder
    assert paths.runs == paths.data / "runs" and paths.cache == (tmp_path / "c").resolve()


def test_no_project_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path} holds no notebooks/study.yaml.*set FER_HOME"):
        find_project(env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"FER_HOME=.*not found \(not a project folder\)"):
        find_project(env={ENV_HOME: str(tmp_path)}, cwd=tmp_path)


def test_package_outside_the_checkout_serves_a_project_folder(tmp_path):
    """The package copied elsewhere (as a non-editable install would be) knows nothing of this
    checkout: the study's folders are the project's, where the command runs."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "fer_utils", site / "fer_utils", ignore=shutil.ignore_patterns("__pycache__"))
    root = _project(tmp_path / "proj")
    code = ("import fer_utils, fer_utils.study.runner as st; from fer_utils.paths import project_paths; "
            "p = project_paths(); runs = st.plan(st.load_manifest(), 'quick', p.synthetic, p.runs, p.book_out, p.cache); "
            "print(fer_utils.__file__); print(p.root); print(runs[0].params['data_path']); print(runs[0].source)")
    env = {k: v for k, v in os.environ.items() if k != ENV_HOME and k not in ENV_DIRS.values()}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0] == str(site / "fer_utils" / "__init__.py")
    assert out[1] == str(root.resolve())
    assert out[2] == str(root.resolve() / "data" / "synthetic")
    assert out[3] == str(root.resolve() / "notebooks" / "01_data.ipynb")

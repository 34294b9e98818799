"""`fer study run` checks everything before it writes anything: bad input leaves the project folder
as it was (no synthetic data, no book pages, no run records) and exits 2 with one clear line."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_utils.study import runner
from fer_utils.cli import main
from fer_utils.data import synthetic
from fer_utils.paths import ENV_DIRS, ENV_HOME

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with the committed manifest and notebooks, as the current folder."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for var in (ENV_HOME, *ENV_DIRS.values()):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(root)
    return root


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def study_run(*args: str):
    return CliRunner().invoke(main, ["study", "run", *args])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


TYPO_MANIFEST = "notebooks:\n  01_data:\n    runs: {default: {sampels_per_class: 2}}\n"


@pytest.mark.parametrize("args, manifest, message", [
    (["--only", "nothing"], None,
     "error: --only 'nothing' matches no notebook; known: 01_data, 02_cnn_baselines, 03_cnn_compare"),
    (["--profile", "fast"], None, "error: unknown profile 'fast'; choose one of quick, default, full"),
    (["--only", "data"], TYPO_MANIFEST, "run 'default': unknown parameter(s) sampels_per_class"),
])
def test_a_bad_plan_is_reported_before_the_default_data_is_generated(project, args, manifest, message):
    if manifest is not None:
        (project / "notebooks" / "study.yaml").write_text(manifest)
    before = files(project)
    res = study_run(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "generating" not in res.output
    assert files(project) == before            # no data/synthetic, no book/, no data/runs


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent", "absent: no such file or folder"),
    (lambda tmp: _write(tmp / "labels.txt", "train_00001.jpg 1\n"),
     "labels.txt: not a recognised data set (a file that is not .csv)"),
    (lambda tmp: _write(tmp / "notes" / "README.md", "not a data set\n").parent,
     "notes: not a recognised data set (no label file, CSV, split or class folders)"),
])
def test_data_that_is_not_a_data_set_is_reported_before_any_notebook_runs(project, tmp_path, make, message):
    data = make(tmp_path)
    before = files(project)
    res = study_run("--profile", "quick", "--data", str(data))
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {data.parent}") and message in res.output
    assert "[1/" not in res.output              # no notebook was started
    if data.exists():
        assert "accepted layouts:" in res.output and "RAF-DB:" in res.output
    assert files(project) == before             # no failed page under book/, no run record


def test_the_default_data_is_generated_after_the_plan_and_checked_before_running(project, monkeypatch):
    """Without --data: plan, then generate the project's data set, check it, then execute."""
    calls = []
    monkeypatch.setattr(synthetic, "DEFAULT_SCALE", 0.003)                   # a handful of images
    monkeypatch.setattr(runner, "execute", lambda run, **_: calls.append(run) or 0.0)
    res = study_run("--profile", "quick", "--only", "data")
    assert res.exit_code == 0, res.output
    data = project / "data" / "synthetic"
    assert f"{data} is missing: generating" in res.output and "1 notebook run(s)" in res.output
    assert [(r.notebook, r.params["data_path"]) for r in calls] == [("01_data", str(data))]
    assert (data / "synthetic.json").is_file()

    calls.clear()                                # a plan that reads no data set generates none
    shutil.rmtree(data)
    res = study_run("--profile", "quick", "--only", "03")
    assert res.exit_code == 0, res.output
    assert "generating" not in res.output and not data.exists()
    assert [r.notebook for r in calls] == ["03_cnn_compare"]


def test_the_full_profile_without_data_is_an_error_not_the_synthetic_set(project, monkeypatch):
    """The full profile is the real study: no silent fallback to the generated synthetic data."""
    before = files(project)
    res = study_run("--profile", "full")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: profile 'full' is the real study") and res.output.count("\n") == 1
    assert "--data /path/to/RAF-DB" in res.output and "fer data check" in res.output
    assert "generating" not in res.output and files(project) == before

    calls = []                                   # a full run that reads no data set needs no --data
    monkeypatch.setattr(runner, "execute", lambda run, **_: calls.append(run) or 0.0)
    res = study_run("--profile", "full", "--only", "03")
    assert res.exit_code == 0, res.output
    assert [r.notebook for r in calls] == ["03_cnn_compare"] and "generating" not in res.output

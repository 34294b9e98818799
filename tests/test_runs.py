import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fer_utils.training import repro
from fer_utils.study import runs
from fer_utils.errors import DataError


def test_save_load_collect(tmp_path):
    for name, acc in [("a", 0.5), ("b", 0.75)]:
        runs.save_run(tmp_path / "nb" / name, params={"notebook": "nb", "model": name, "seed": 1},
                      metrics={"accuracy": acc, "per_class": {"fear": {"f1": acc / 2}},
                               "confusion_matrix": [[1, 0], [0, 1]]},
                      provenance=repro.provenance(data={"fingerprint": "abc"}),
                      predictions=pd.DataFrame({"id": ["x"], "true": [0], "predicted": [0]}),
                      history=pd.DataFrame({"epoch": [1], "train_loss": [1.0]}))
    record = runs.load_run(tmp_path / "nb" / "b")
    assert record["metrics"]["accuracy"] == 0.75
    assert record["provenance"]["data"]["fingerprint"] == "abc"
    assert list(record["predictions"].columns) == ["id", "true", "predicted"]
    table = runs.collect_runs(tmp_path)
    assert list(table["run"]) == ["a", "b"]
    assert list(table["accuracy"]) == [0.5, 0.75]
    assert list(table["per_class.fear.f1"]) == [0.25, 0.375]
    assert "confusion_matrix" not in table.columns
    assert list(table["param.model"]) == ["a", "b"]
    assert runs.collect_runs(tmp_path, notebook="other").empty


def test_non_finite_numbers_become_null(tmp_path):
    runs.write_json(tmp_path / "m.json", {"x": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None}


def test_missing_or_bad_record_files_are_named(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(DataError, match="params.json: run record file missing"):
        runs.load_run(tmp_path / "r")
    runs.save_run(tmp_path / "r", {"notebook": "n"}, {}, {})
    (tmp_path / "r" / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json: cannot be read"):
        runs.load_run(tmp_path / "r")


def git(*args: str, cwd: Path) -> str:
    """Run git in ``cwd`` with a fixed identity (and no signing) whatever the user's settings."""
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def head_of_checkout(path: Path) -> str | None:
    """The commit of the git checkout holding ``path``, asked of git directly; None outside one."""
    try:
        return git("rev-parse", "HEAD", cwd=path)
    except subprocess.CalledProcessError:
        return None


def test_provenance_has_the_essentials():
    p = repro.provenance(data={"fingerprint": "f"}, device="cpu")
    assert p["packages"]["torch"] and p["packages"]["fer_utils"]
    assert p["data"]["fingerprint"] == "f" and p["device"]["device"] == "cpu"
    head = head_of_checkout(Path(repro.__file__).parent)
    if head is None:                                  # an installed package: no checkout to name
        assert p["git_sha"] is None
    else:
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", p["git_sha"]) and p["git_sha"].split("+")[0] == head
    assert json.loads(json.dumps(p)) == p             # a provenance.json reads back as written


def test_git_sha_of_a_clean_and_a_dirty_checkout(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "train.py").write_text("print(1)\n")
    git("add", "train.py", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo)
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert repro.git_sha(repo) == head
    (repo / "notes.txt").write_text("untracked files do not make a checkout dirty\n")
    assert repro.git_sha(repo) == head
    (repo / "train.py").write_text("print(2)\n")
    assert repro.git_sha(repo) == f"{head}+dirty"
    (tmp_path / "plain").mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))   # git looks no higher than tmp_path
    assert repro.git_sha(tmp_path / "plain") is None


class Unprintable:
    """A cell whose text cannot be made: writing a table that holds one fails part-way."""

    def __str__(self):
        raise RuntimeError("cannot format this cell")


def test_a_failing_write_keeps_the_previous_record(tmp_path):
    run = tmp_path / "run"
    old = pd.DataFrame({"id": ["a", "b"], "true": [0, 1], "predicted": [0, 1]})
    runs.save_run(run, {"notebook": "n"}, {"accuracy": 1.0}, {}, predictions=old)
    before = (run / "predictions.csv").read_bytes()
    bad = pd.DataFrame({"id": ["c", "d"], "true": [2, 3], "predicted": [2, Unprintable()]})
    with pytest.raises(RuntimeError, match="cannot format"):
        runs.save_run(run, {"notebook": "n"}, {"accuracy": 0.5}, {}, predictions=bad)
    assert (run / "predictions.csv").read_bytes() == before  # not truncated, not half-written
    pd.testing.assert_frame_equal(runs.load_run(run)["predictions"], old)
    metrics = (run / "metrics.json").read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        runs.write_json(run / "metrics.json", {"accuracy": 0.5, "cell": Unprintable()})
    assert (run / "metrics.json").read_bytes() == metrics
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "params.json", "predictions.csv",
                                                     "provenance.json"]  # no temporary files left

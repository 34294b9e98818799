"""`fer runs export` / `fer runs import` on real files: a round trip, and hostile archives that must
be refused before anything is written."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_utils.study.archive import MANIFEST_NAME, export_results, import_results
from fer_utils.cli import main
from fer_utils.errors import DataError
from fer_utils.paths import ENV_DIRS, ENV_HOME


def _results(root: Path) -> tuple[Path, Path]:
    runs, book = root / "data" / "runs", root / "book" / "experiments"
    for rel, text in {"02_cnn_baselines/resnet18/params.json": '{"model": "resnet18"}',
                      "02_cnn_baselines/resnet18/metrics.json": '{"accuracy": 0.5}',
                      "02_cnn_baselines/resnet18/bundle/model.safetensors": "weights",
                      "study_times.json": '{"profile": "full"}'}.items():
        (runs / rel).parent.mkdir(parents=True, exist_ok=True)
        (runs / rel).write_text(text)
    (book / "02_cnn_baselines").mkdir(parents=True)
    (book / "02_cnn_baselines" / "resnet18.ipynb").write_text('{"cells": []}')
    return runs, book


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_leaves_the_same_files_and_bundles_only_on_request(tmp_path):
    runs, book = _results(tmp_path / "gpu")
    manifest = export_results(tmp_path / "results.tar.gz", runs, book)
    assert "runs/02_cnn_baselines/resnet18/bundle/model.safetensors" not in manifest["files"]
    written = import_results(tmp_path / "results.tar.gz", tmp_path / "here" / "runs", tmp_path / "here" / "book")
    assert len(written) == len(manifest["files"]) == 4
    expected = {k: v for k, v in _tree(runs).items() if "bundle" not in k}
    assert _tree(tmp_path / "here" / "runs") == expected
    assert _tree(tmp_path / "here" / "book") == _tree(book)
    with_bundles = export_results(tmp_path / "all.tar.gz", runs, book, include_bundles=True)
    assert "runs/02_cnn_baselines/resnet18/bundle/model.safetensors" in with_bundles["files"]


def test_existing_files_are_kept_unless_replace_is_given(tmp_path):
    runs, book = _results(tmp_path / "gpu")
    export_results(tmp_path / "r.tar.gz", runs, book)
    target = tmp_path / "here" / "runs" / "02_cnn_baselines" / "resnet18" / "metrics.json"
    target.parent.mkdir(parents=True)
    target.write_text("mine")
    before = _tree(tmp_path / "here")
    with pytest.raises(DataError, match="already exist.*nothing was imported.*--replace"):
        import_results(tmp_path / "r.tar.gz", tmp_path / "here" / "runs", tmp_path / "here" / "book")
    assert _tree(tmp_path / "here") == before
    import_results(tmp_path / "r.tar.gz", tmp_path / "here" / "runs", tmp_path / "here" / "book", replace=True)
    assert target.read_text() == '{"accuracy": 0.5}'


def _archive(path: Path, members: dict[str, bytes], listed: dict | None = None, links: dict | None = None) -> Path:
    """A tar.gz with a manifest listing ``listed`` (default: every member, right sizes, no digests)."""
    import hashlib

    files = listed if listed is not None else {
        n: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in members.items()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {MANIFEST_NAME: json.dumps({"files": files}).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("members, listed, links, match", [
    ({"runs/../../evil.txt": b"x"}, None, None, "not a relative path inside the archive"),
    ({"/etc/evil": b"x"}, None, None, "not a relative path"),
    ({"elsewhere/evil.txt": b"x"}, None, None, "outside runs/ and experiments/"),
    ({"runs": b"x"}, None, None, "a file in place of a folder"),
    ({"runs/a.json": b"x"}, None, {"runs/link": "/etc/passwd"}, "link or device"),
    ({"runs/a.json": b"x"}, {}, None, "not listed in"),
    ({"runs/a.json": b"x"}, {"runs/a.json": {"bytes": 1, "sha256": "0" * 64}}, None, "does not match its SHA-256"),
    ({"runs/a.json": b"x"}, {"runs/a.json": {"bytes": 5, "sha256": "0"}}, None, "has 1 bytes"),
    ({}, {"runs/gone.json": {"bytes": 1, "sha256": "0"}}, None, "missing"),
])
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, members, listed, links, match):
    archive = _archive(tmp_path / "bad.tar.gz", members, listed, links)
    with pytest.raises(DataError, match=match):
        import_results(archive, tmp_path / "here" / "runs", tmp_path / "here" / "book")
    assert not (tmp_path / "here").exists() and not (tmp_path / "evil.txt").exists()


def test_not_an_archive_is_a_clear_error(tmp_path):
    (tmp_path / "x.tar.gz").write_text("hello")
    with pytest.raises(DataError, match="x.tar.gz: cannot be read as a tar archive"):
        import_results(tmp_path / "x.tar.gz", tmp_path / "r", tmp_path / "b")
    with tarfile.open(tmp_path / "plain.tar.gz", "w:gz"):
        pass
    with pytest.raises(DataError, match="no FER_RESULTS.json"):
        import_results(tmp_path / "plain.tar.gz", tmp_path / "r", tmp_path / "b")


def test_the_cli_moves_results_between_two_projects(tmp_path, monkeypatch):
    for var in ENV_DIRS.values():
        monkeypatch.delenv(var, raising=False)
    for name in ("gpu", "laptop"):
        (tmp_path / name / "notebooks").mkdir(parents=True)
        (tmp_path / name / "notebooks" / "study.yaml").write_text("notebooks: {}\n")
    _results(tmp_path / "gpu")
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "gpu"))
    res = CliRunner().invoke(main, ["runs", "export", str(tmp_path / "r.tar.gz")])
    assert res.exit_code == 0, res.output
    assert "4 file(s) written" in res.output and "model bundles left out" in res.output
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "laptop"))
    res = CliRunner().invoke(main, ["runs", "import", str(tmp_path / "r.tar.gz")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "laptop" / "data" / "runs" / "02_cnn_baselines" / "resnet18" / "params.json").exists()
    assert (tmp_path / "laptop" / "book" / "experiments" / "02_cnn_baselines" / "resnet18.ipynb").exists()
    res = CliRunner().invoke(main, ["runs", "import", str(tmp_path / "r.tar.gz")])
    assert res.exit_code == 2 and "already exist" in res.output

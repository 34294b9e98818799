"""The study pipeline for real: papermill executes every notebook (quick profile) on a synthetic
data set made by the real generator, then Jupyter Book builds the pages with warnings as errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from fer_utils import runs, study
from fer_utils.config import NOTEBOOK_CONFIGS
from fer_utils.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_source_notebooks_carry_no_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def test_every_notebook_is_in_the_manifest_with_a_config_and_parameters_cell():
    manifest = study.load_manifest()
    assert set(manifest["notebooks"]) == {p.stem for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        assert path.stem in NOTEBOOK_CONFIGS
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        assert nb.metadata["kernelspec"]["name"] == "python3"


def _plan(manifest, profile="quick", only=None):
    return study.plan(manifest, profile, "/d", "/runs", "/out", "/cache", only=only)


def test_plan_injects_paths_and_validates():
    runs_ = _plan(study.load_manifest())
    data = [r for r in runs_ if r.notebook == "01_data"]
    assert data and data[0].params["data_path"] == "/d"
    assert data[0].params["run_dir"] == "/runs/01_data/default"
    assert data[0].output == Path("/out/01_data/default.ipynb")
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        _plan(study.load_manifest(), profile="fast")
    with pytest.raises(ConfigError, match="--only 'nothing' matches no notebook"):
        _plan(study.load_manifest(), only=["nothing"])
    assert {r.notebook for r in _plan(study.load_manifest(), only=["data"])} == {"01_data"}


def test_manifest_typos_are_errors_before_anything_runs(tmp_path):
    bad = {"notebooks": {"01_data": {"runs": {"default": {"sampels_per_class": 3}}}}}
    with pytest.raises(ConfigError, match="run 'default'.*unknown parameter.*sampels_per_class"):
        _plan(bad)
    bad = {"notebooks": {"01_data": {"profiles": {"quick": {"seed": "1"}}}}}
    with pytest.raises(ConfigError, match="profile 'quick'.*'seed' must be int"):
        _plan(bad)
    path = tmp_path / "m.yaml"
    path.write_text("notebooks:\n  01_data:\n    run: {}\n")
    with pytest.raises(ConfigError, match="unknown key.*run"):
        study.load_manifest(path)


def test_seeds_expand_runs():
    manifest = {"profiles": ["quick", "full"],
                "notebooks": {"01_data": {"runs": {"default": {}}, "seeds": {"full": [1, 2]}}}}
    assert [r.name for r in _plan(manifest, "full")] == ["default-s1", "default-s2"]
    assert [r.params["seed"] for r in _plan(manifest, "full")] == [1, 2]
    assert [r.name for r in _plan(manifest, "quick")] == ["default"]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, synthetic_rafdb):
    """Run the whole manifest (quick profile) into a scratch copy of the book sources."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("experiments"))
    done = study.run_study(profile="quick", data_path=synthetic_rafdb, runs_root=root / "runs",
                           out_dir=root / "book" / "experiments", cache_dir=root / "cache",
                           echo=lambda *_: None)
    return root, done


@pytest.mark.slow
def test_every_notebook_executes_and_writes_its_run_record(quick_study, synthetic_rafdb):
    root, done = quick_study
    assert {r.notebook for r, _ in done} == {p.stem for p in NOTEBOOKS}
    for run, _seconds in done:
        nb = nbformat.read(run.output, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors
        record = runs.load_run(run.params["run_dir"])
        assert record["params"]["notebook"] == run.notebook
        if "data_path" in record["params"]:
            assert record["params"]["data_path"] == str(synthetic_rafdb)
        assert record["provenance"]["data_fingerprint"]
    data = runs.load_run(root / "runs" / "01_data" / "default")
    meta = json.loads((synthetic_rafdb / "synthetic.json").read_text())
    assert data["metrics"]["n_images"] == sum(sum(c.values()) if isinstance(c, dict) else c
                                              for c in meta["counts"].values())
    table = runs.collect_runs(root / "runs")
    assert set(table["notebook"]) == {p.stem for p in NOTEBOOKS}


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(quick_study):
    root, _ = quick_study
    html = study.build_book(root)
    assert "book/intro.html" in (html / "index.html").read_text(encoding="utf-8")
    assert "Facial expression recognition" in (html / "book" / "intro.html").read_text(encoding="utf-8")
    data_page = html / "book" / "experiments" / "01_data" / "default.html"
    text = data_page.read_text(encoding="utf-8")
    assert "Synthetic data" in text and "<img" in text  # the plots were rendered
    compare = (html / "book" / "experiments" / "03_cnn_compare" / "default.html").read_text(encoding="utf-8")
    assert "densenet121" in compare and "original: accuracy" in compare

"""The study pipeline for real: papermill executes every notebook (quick profile) on a synthetic
data set made by the real generator, then Jupyter Book builds the pages with warnings as errors."""
from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from click.testing import CliRunner

from fer_utils.study import freshness, runner, runs
from fer_utils.cli import main
from fer_utils.study.config import NOTEBOOK_CONFIGS
from fer_utils.errors import ConfigError, DataError
from fer_utils.paths import ENV_DIRS, ENV_HOME, project_paths

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "notebooks" / "study.yaml"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_source_notebooks_carry_no_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def test_every_notebook_is_in_the_manifest_with_a_config_and_parameters_cell():
    manifest = runner.load_manifest(MANIFEST)
    assert set(manifest["notebooks"]) == {p.stem for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        assert path.stem in NOTEBOOK_CONFIGS
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        assert nb.metadata["kernelspec"]["name"] == "python3"


def _plan(manifest, profile="quick", only=None):
    return runner.plan(manifest, profile, "/d", "/runs", "/out", "/cache", only=only, notebooks_dir="/nb")


def test_plan_injects_paths_and_validates():
    runs_ = _plan(runner.load_manifest(MANIFEST))
    data = [r for r in runs_ if r.notebook == "01_data"]
    assert data and data[0].params["data_path"] == "/d"
    assert data[0].params["run_dir"] == "/runs/01_data/default"
    assert data[0].output == Path("/out/01_data/default.ipynb")
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        _plan(runner.load_manifest(MANIFEST), profile="fast")
    with pytest.raises(ConfigError, match="--only 'nothing' matches no notebook"):
        _plan(runner.load_manifest(MANIFEST), only=["nothing"])
    assert {r.notebook for r in _plan(runner.load_manifest(MANIFEST), only=["data"])} == {"01_data"}


@pytest.mark.parametrize("notebook, match", [
    ({"runs": {"default": {"sampels_per_class": 3}}}, "run 'default'.*unknown parameter.*sampels_per_class"),
    ({"profiles": {"quick": {"seed": "1"}}}, "profile 'quick'.*'seed' must be int"),
    ({"profiles": {"quik": {"samples_per_class": 2}}}, "notebook '01_data', profiles: unknown profile.*quik"),
    ({"seeds": {"ful": [1, 2]}}, "notebook '01_data', seeds: unknown profile.*ful"),
])
def test_manifest_typos_are_errors_before_anything_runs(notebook, match):
    with pytest.raises(ConfigError, match=match):
        _plan({"notebooks": {"01_data": notebook}})


@pytest.mark.parametrize("text, match", [
    ("notebooks:\n  01_data:\n    run: {}\n", "m.yaml: notebook '01_data': unknown key.*run"),
    ("profiles: [quick, full]\nnotebooks:\n  01_data:\n    seeds: {default: [1]}\n",
     "m.yaml: notebook '01_data', seeds: unknown profile.*default"),
])
def test_manifest_file_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        runner.load_manifest(path)


def test_seeds_expand_runs():
    manifest = {"profiles": ["quick", "full"],
                "notebooks": {"01_data": {"runs": {"default": {}}, "seeds": {"full": [1, 2]}}}}
    assert [r.name for r in _plan(manifest, "full")] == ["default-s1", "default-s2"]
    assert [r.params["seed"] for r in _plan(manifest, "full")] == [1, 2]
    assert [r.name for r in _plan(manifest, "quick")] == ["default"]


def test_a_profile_may_override_one_named_run():
    spec = {"runs": {"vgg": {"model": "vgg16"}, "res": {"model": "resnet18"}},
            "profiles": {"default": {"lr": 0.01, "runs": {"vgg": {"lr": 1e-4}}}}}
    manifest = {"notebooks": {"02_cnn_baselines": spec}}
    planned = {r.name: r.params for r in _plan(manifest, "default")}
    assert (planned["vgg"]["lr"], planned["res"]["lr"]) == (1e-4, 0.01)   # the run's override wins
    assert {r.params.get("lr") for r in _plan(manifest, "quick")} == {None}  # other profiles: untouched
    spec["profiles"]["default"]["skip"] = ["res"]
    assert [r.name for r in _plan(manifest, "default")] == ["vgg"]
    assert [r.name for r in _plan(manifest, "quick")] == ["vgg", "res"]
    spec["profiles"]["default"]["skip"] = ["resnet"]
    with pytest.raises(ConfigError, match="profile 'default', skip: unknown run.*resnet"):
        _plan(manifest, "default")
    del spec["profiles"]["default"]["skip"]
    spec["profiles"]["default"]["runs"] = {"vgg19": {"lr": 1e-4}}
    with pytest.raises(ConfigError, match="profile 'default', runs: unknown run.*vgg19"):
        _plan(manifest, "default")
    spec["profiles"]["default"]["runs"] = {"vgg": {"lr": "fast"}}
    with pytest.raises(ConfigError, match="profile 'default', run 'vgg'.*'lr' must be float"):
        _plan(manifest, "default")


@pytest.mark.parametrize("checks, match", [
    ({"profile": "fast", "minutes": 20}, "checks: 'profile' must be one of"),
    ({"profile": "default", "minutes": 1, "shares": {"01_data": 2}}, "shares add up to 2 minutes, more than"),
    ({"profile": "default", "minutes": 20, "shares": {"05_fusion": 2}}, "shares: unknown step.*05_fusion"),
    ({"profile": "default", "minutes": 20, "shares": {"book": 0}}, "shares: book: expected a positive number"),
    ({"profile": "default", "minutes": 20, "min_gain_over_majority": 2}, "min_gain_over_majority"),
    ({"profile": "default", "minutes": 20, "budget": 3}, "checks: unknown key.*budget"),
])
def test_the_checks_budget_is_checked(checks, match):
    with pytest.raises(ConfigError, match=match):
        runner.check_manifest({"checks": checks, "notebooks": {"01_data": {}}})


def test_the_committed_budget_gives_every_notebook_a_share_within_20_minutes():
    checks = runner.load_manifest(MANIFEST)["checks"]
    assert checks["profile"] == "default" and checks["minutes"] == 20
    assert set(checks["shares"]) == {"data", "book", *runner.load_manifest(MANIFEST)["notebooks"]}


def test_the_faithful_rows_follow_the_original_protocol_in_every_profile():
    from fer_utils.study.compare import protocol_of

    for profile in ("quick", "default"):
        planned = [r for r in _plan(runner.load_manifest(MANIFEST), profile) if r.notebook == "02_cnn_baselines"]
        protocols = {r.name: protocol_of(r.params) for r in planned}
        assert protocols == {r.name: "original" if r.name.endswith("-original") else "corrected" for r in planned}
        assert "original" in protocols.values() and "corrected" in protocols.values()


GRID = {"augmentation": ["none", "hflip"], "class_weights": ["none", "inverse", "effective"]}


def _grid_manifest(**spec):
    """A manifest with one grid notebook (02_cnn_baselines) whose quick profile runs two cells."""
    spec = {"grid": GRID, "profiles": {"quick": {"grid": {"augmentation": ["hflip"],
                                                          "class_weights": ["none", "inverse"]}}}, **spec}
    return {"profiles": ["quick", "default", "full"], "notebooks": {"02_cnn_baselines": spec}}


def test_grid_expands_into_named_cells_times_runs_times_seeds():
    full = _plan(_grid_manifest(), "full")
    assert [r.name for r in full] == ["none-none", "none-inverse", "none-effective",
                                      "hflip-none", "hflip-inverse", "hflip-effective"]
    assert {(r.params["augmentation"], r.params["class_weights"]) for r in full} == {
        (a, c) for a in GRID["augmentation"] for c in GRID["class_weights"]}
    assert full[4].params["run_dir"] == "/runs/02_cnn_baselines/hflip-inverse"
    assert full[4].output == Path("/out/02_cnn_baselines/hflip-inverse.ipynb")

    manifest = _grid_manifest(runs={"vgg16": {"model": "vgg16"}, "resnet18": {"model": "resnet18"}},
                              seeds={"full": [1, 2]})
    full = _plan(manifest, "full")
    assert len(full) == 2 * 6 * 2 and len({r.name for r in full}) == len(full)
    assert [r.name for r in full[:3]] == ["vgg16-none-none-s1", "vgg16-none-none-s2", "vgg16-none-inverse-s1"]
    last = full[-1]
    assert last.name == "resnet18-hflip-effective-s2"
    assert (last.params["model"], last.params["augmentation"], last.params["class_weights"],
            last.params["seed"]) == ("resnet18", "hflip", "effective", 2)


def test_grid_names_of_bools_and_numbers_are_readable_and_values_are_validated():
    manifest = _grid_manifest(grid={"pretrained": [True, False], "lr": [1, 0.001]}, profiles={})
    manifest["profiles"] = ["default"]
    runs_ = _plan(manifest, "default")
    assert [r.name for r in runs_] == ["pretrained-lr1", "pretrained-lr0p001", "no-pretrained-lr1",
                                       "no-pretrained-lr0p001"]
    assert runs_[0].params["lr"] == 1.0 and isinstance(runs_[0].params["lr"], float)  # as the config types it
    manifest = _grid_manifest(grid={**GRID, "class_weights": ["none", "inverse", "efective"]})
    with pytest.raises(ConfigError, match="notebook '02_cnn_baselines', grid.*'class_weights'.*efective"):
        _plan(manifest, "full")
    with pytest.raises(ConfigError, match="'class_weights'.*efective"):  # every value, not only the profile's
        _plan(manifest, "quick")
    with pytest.raises(ConfigError, match="grid.*unknown parameter.*augmentaton"):
        _plan(_grid_manifest(grid={"augmentaton": ["none"]}, profiles={}), "full")


def test_profiles_narrow_the_grid_to_subsets_only():
    manifest = _grid_manifest()
    manifest["notebooks"]["02_cnn_baselines"]["profiles"]["default"] = {"grid": {"augmentation": ["hflip"]}}
    assert [r.name for r in _plan(manifest, "quick")] == ["hflip-none", "hflip-inverse"]
    assert [r.name for r in _plan(manifest, "default")] == ["hflip-none", "hflip-inverse", "hflip-effective"]
    assert len(_plan(manifest, "full")) == 6
    manifest["notebooks"]["02_cnn_baselines"]["profiles"]["default"] = {"grid": {"augmentation": ["rrc"]}}
    with pytest.raises(ConfigError, match="notebook '02_cnn_baselines', profile 'default', grid: "
                                          "'augmentation' must be a non-empty subset.*'rrc'"):
        _plan(manifest, "quick")
    manifest["notebooks"]["02_cnn_baselines"]["profiles"]["default"] = {"grid": {"model": ["vgg16"]}}
    with pytest.raises(ConfigError, match="profile 'default', grid: unknown grid parameter.*model"):
        _plan(manifest, "quick")
    with pytest.raises(ConfigError, match="grid parameter 'augmentation' is also set by profile 'full'"):
        _plan(_grid_manifest(profiles={"quick": {"grid": {"augmentation": ["none"], "class_weights": ["none"]}},
                                       "full": {"augmentation": "hflip"}}), "quick")
    with pytest.raises(ConfigError, match="grid parameter 'augmentation' is also set by run 'a'"):
        _plan(_grid_manifest(runs={"a": {"augmentation": "hflip"}}), "quick")


def test_quick_runs_at_most_two_cells_of_every_grid():
    with pytest.raises(ConfigError, match="notebook '02_cnn_baselines': profile 'quick' runs 3 cells.*at most 2"):
        _plan(_grid_manifest(profiles={"quick": {"grid": {"augmentation": ["hflip"]}}}), "full")
    manifest = runner.load_manifest(MANIFEST)  # the committed manifest obeys it (checked on load)
    for stem, spec in manifest["notebooks"].items():
        cells = {tuple(r.params.get(k) for k in (spec or {}).get("grid") or {})
                 for r in _plan(manifest, "quick", only=[stem])}
        assert len(cells) <= 2, stem


ALL_ORIGINAL_ROWS = ["vgg16-original", "resnet18-original", "densenet121-original"]
PROFILE_ORIGINAL_ROWS = {"quick": ["resnet18-original"], "default": ["resnet18-original"], "full": ALL_ORIGINAL_ROWS}
PROFILE_MODELS = {"quick": ["resnet18", "densenet121"], "default": ["vgg16", "resnet18", "densenet121"],
                  "full": ["vgg16", "resnet18", "densenet121"]}   # quick: no 0.55 GB VGG16 bundle in the tests


def test_run_names_of_the_committed_manifest_are_unchanged():
    manifest = runner.load_manifest(MANIFEST)
    for profile in ("quick", "default", "full"):
        cnn = [r for r in _plan(manifest, profile) if r.notebook == "02_cnn_baselines"]
        expected = [*PROFILE_MODELS[profile], *PROFILE_ORIGINAL_ROWS[profile]]
        if profile == "full":
            expected = [f"{m}-s{s}" for m in expected for s in (1, 2, 3)]
        assert [r.name for r in cnn] == expected
        assert all(r.params["model"] == r.name.split("-")[0] for r in cnn)
        corrected = [r for r in cnn if not r.name.split("-s")[0].endswith("-original")]
        assert {r.params["augmentation"] for r in corrected if r.params["model"] != "vgg16"} == {"hflip"}


def test_committed_toc_is_rendered_from_the_manifest():
    """`fer book build` rewrites _toc.yml; the committed one must be what it writes."""
    assert (REPO / "_toc.yml").read_text(encoding="utf-8") == runner.render_toc(runner.load_manifest(MANIFEST))
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    chapters = toc["parts"][0]["chapters"]
    assert chapters[0] == {"file": "book/original_study"}
    sections = {c["file"]: c.get("sections") for c in chapters}
    assert sections["book/experiments/03_cnn_compare/default"] == [{"glob": "book/experiments/02_cnn_baselines/*"}]
    assert sections["book/experiments/05_vlm_compare/default"] == [{"glob": "book/experiments/04_vlm_prompts/*"}]
    assert chapters[-3:] == [{"file": f"book/experiments/{stem}/default"}
                             for stem in ("06_fusion", "07_augmentation", "08_class_weights")]


def test_toc_lists_runs_parts_and_children_and_rejects_bad_book_keys():
    manifest = {"profiles": ["quick", "full"], "book": {"root": "book/intro", "caption": "Study"},
                "notebooks": {"01_data": {}, "03_cnn_compare": {"book": {"part": "Comparisons"}},
                              "02_cnn_baselines": {"seeds": {"full": [1]}, "book": {"parent": "01_data"}}}}
    toc = yaml.safe_load(runner.render_toc(manifest))
    assert toc["root"] == "book/intro"
    assert toc["parts"] == [
        {"caption": "Study", "chapters": [{"file": "book/experiments/01_data/default", "sections": [
            {"glob": "book/experiments/02_cnn_baselines/*"}]}]},  # default in quick, default-s1 in full
        {"caption": "Comparisons", "chapters": [{"file": "book/experiments/03_cnn_compare/default"}]}]
    nb = manifest["notebooks"]
    nb["01_data"]["book"] = {"parent": "02_cnn_baselines"}
    with pytest.raises(ConfigError, match="parent '02_cnn_baselines' has several runs"):
        runner.render_toc(manifest)
    nb["01_data"]["book"] = {"parent": "03_cnn_compare"}
    nb["03_cnn_compare"]["book"] = {"parent": "01_data"}
    with pytest.raises(ConfigError, match="cycle"):
        runner.render_toc(manifest)
    nb["03_cnn_compare"]["book"] = {"parnt": "01_data"}
    with pytest.raises(ConfigError, match="notebook '03_cnn_compare', book: unknown key.*parnt"):
        runner.render_toc(manifest)
    with pytest.raises(ConfigError, match="book: unknown key.*chapters"):
        runner.check_manifest({"book": {"chapters": []}, "notebooks": {}})


def test_a_profile_that_requires_data_never_falls_back_to_the_synthetic_set():
    """requires_data: [full] in the manifest: the real study needs --data; others default to it."""
    manifest = runner.load_manifest(MANIFEST)
    assert manifest["requires_data"] == ["full"]
    with pytest.raises(ConfigError, match=r"profile 'full' is the real study.*--data /path/to/RAF-DB.*"
                                          r"fer data check /path/to/RAF-DB"):
        runner.plan(manifest, "full", None, "/runs", "/out", "/cache", notebooks_dir="/nb")
    assert runner.data_sets(_plan(manifest, "full")) == [Path("/d")]     # given: planned as usual
    compare = runner.plan(manifest, "full", None, "/runs", "/out", "/cache", only=["03"], notebooks_dir="/nb")
    assert [r.notebook for r in compare] == ["03_cnn_compare"]           # reads run records only
    assert _plan({"notebooks": {"01_data": {}}}, "full")                 # no requires_data: no rule


@pytest.mark.parametrize("requires, match", [
    (["ful"], "requires_data: unknown profile.*ful"),
    ("full", "requires_data: expected a list of profiles, got 'full'"),
])
def test_requires_data_names_profiles(requires, match):
    with pytest.raises(ConfigError, match=match):
        runner.check_manifest({"requires_data": requires, "notebooks": {}})


def test_the_full_profile_trains_with_dataloader_workers_and_the_others_without():
    """num_workers: auto (up to 8 on CUDA, 0 on a CPU without spare cores) in full only."""
    manifest = runner.load_manifest(MANIFEST)
    for profile, workers in (("quick", 0), ("default", 0), ("full", "auto")):
        cnn = [r for r in _plan(manifest, profile) if r.notebook == "02_cnn_baselines"]
        config = NOTEBOOK_CONFIGS["02_cnn_baselines"]
        assert cnn and {config.from_params(r.params).num_workers for r in cnn} == {workers}, profile


def _project(folder: Path) -> Path:
    (folder / "notebooks").mkdir(parents=True)
    shutil.copy(MANIFEST, folder / "notebooks" / "study.yaml")
    return folder.resolve()


def test_run_study_checks_the_data_set_before_running_anything(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HOME, str(_project(tmp_path / "project")))
    for var in ENV_DIRS.values():
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "faces.txt").write_text("train_00001.jpg 1\n")
    with pytest.raises(DataError, match=r"faces.txt: not a recognised data set(.|\n)*accepted layouts"):
        runner.run_study("quick", data_path=tmp_path / "faces.txt", echo=pytest.fail)
    assert [p.name for p in (tmp_path / "project").iterdir()] == ["notebooks"]  # no page, no run record
    manifest = runner.load_manifest()
    assert runner.data_sets(_plan(manifest)) == [Path("/d")]            # one data set, read by 01 and 02
    assert runner.data_sets(_plan(manifest, only=["03"])) == []         # 03 reads run records only
    with pytest.raises(DataError, match="/d: no such file or folder"):
        runner.check_data(_plan(manifest))


def test_plan_and_load_manifest_default_to_the_project_folder(tmp_path, monkeypatch):
    for var in (ENV_HOME, *ENV_DIRS.values()):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no project folder"):
        runner.load_manifest()
    project = _project(tmp_path / "here")
    monkeypatch.chdir(project)
    (data,) = runner.plan(runner.load_manifest(), "quick", only=["data"])
    assert data.params["data_path"] == str(project / "data" / "synthetic")
    assert data.params["run_dir"] == str(project / "data" / "runs" / "01_data" / "default")
    assert data.source == project / "notebooks" / "01_data.ipynb"
    assert data.output == project / "book" / "experiments" / "01_data" / "default.ipynb"
    compare = runner.plan(runner.load_manifest(), "quick", data_path="/d", only=["03"])[0]
    assert compare.params["runs_root"] == str(project / "data" / "runs")

    elsewhere = _project(tmp_path / "elsewhere")
    monkeypatch.setenv(ENV_HOME, str(elsewhere))
    monkeypatch.setenv(ENV_DIRS["runs"], str(tmp_path / "records"))
    (data,) = runner.plan(runner.load_manifest(), "quick", only=["data"])
    assert data.params["data_path"] == str(elsewhere / "data" / "synthetic")
    assert data.params["run_dir"] == str(tmp_path.resolve() / "records" / "01_data" / "default")
    assert data.source == elsewhere / "notebooks" / "01_data.ipynb"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, synthetic_rafdb):
    """Run the whole manifest (quick profile) in a scratch project folder ($FER_HOME) holding a copy
    of the notebooks and the book sources; every folder but the data set is the project's default."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")  # _toc.yml: written by build_book
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("experiments"))
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_DIRS.values():
            mp.delenv(var, raising=False)
        mp.setenv(ENV_HOME, str(root))
        paths = project_paths()
        done = runner.run_study(profile="quick", data_path=synthetic_rafdb, echo=lambda *_: None)
    return paths, done


@pytest.mark.slow
def test_every_notebook_executes_and_writes_its_run_record(quick_study, synthetic_rafdb):
    paths, done = quick_study
    assert {o.run.notebook for o in done} == {p.stem for p in NOTEBOOKS}
    assert all(o.executed for o in done)
    without_data = set()
    for run in (o.run for o in done):
        assert run.output.parent.parent == paths.book_out
        assert Path(run.params["run_dir"]).parent.parent == paths.runs
        nb = nbformat.read(run.output, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors
        # no Jupyter widget (a progress bar) in a page: the book would load require.js from a CDN for it
        assert "widgets" not in nb.metadata, run.output
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], run.output
        record = runs.load_run(run.params["run_dir"])
        assert record["params"]["notebook"] == run.notebook
        if "data_path" in record["params"]:
            assert record["params"]["data_path"] == str(synthetic_rafdb)
        else:
            without_data.add(run.notebook)
        data = record["provenance"]["data"]      # a list on pages that compare runs
        assert all(d["fingerprint"] and d["synthetic"] for d in (data if isinstance(data, list) else [data]))
    assert without_data == {"03_cnn_compare", "05_vlm_compare"}   # they compare run records, read no data set
    data = runs.load_run(paths.runs / "01_data" / "default")
    meta = json.loads((synthetic_rafdb / "synthetic.json").read_text())
    assert data["metrics"]["n_images"] == sum(sum(c.values()) if isinstance(c, dict) else c
                                              for c in meta["counts"].values())
    table = runs.collect_runs(paths.runs)
    assert set(table["notebook"]) == {p.stem for p in NOTEBOOKS}


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(quick_study, synthetic_rafdb):
    paths, _ = quick_study
    html = runner.build_book(paths.root)
    assert (paths.root / "_toc.yml").read_text(encoding="utf-8") == (REPO / "_toc.yml").read_text(encoding="utf-8")
    assert "book/intro.html" in (html / "index.html").read_text(encoding="utf-8")
    assert "Facial expression recognition" in (html / "book" / "intro.html").read_text(encoding="utf-8")
    data_page = html / "book" / "experiments" / "01_data" / "default.html"
    text = data_page.read_text(encoding="utf-8")
    assert "Synthetic data" in text and "<img" in text  # the plots were rendered
    compare = (html / "book" / "experiments" / "03_cnn_compare" / "default.html").read_text(encoding="utf-8")
    assert "densenet121" in compare and "accuracy (ours / original)" in compare
    visible = html_lib.unescape(re.sub(r"<[^>]+>", " ", compare))   # the page's text, entities decoded
    assert "The faithful reproduction" in visible and "ours, the original's protocol" in visible
    fusion = html_lib.unescape(re.sub(r"<[^>]+>", " ", (html / "book" / "experiments" / "06_fusion" / "default.html")
                                      .read_text(encoding="utf-8")))
    assert "cannot attend" in fusion and "Leakage" in fusion and "What the numbers say" in fusion
    bundle = paths.runs / "06_fusion" / "default" / "bundle"          # the servable fused model
    assert json.loads((bundle / "bundle.json").read_text())["kind"] == "fused"
    # the introduction's status section is written from the run records at build time
    status = (paths.root / "book" / "generated" / "status.md").read_text(encoding="utf-8")
    assert "| CNN baselines | measured | 3 |" in status and "| planned |" not in status   # nothing left planned
    assert "| Augmentation: which transforms help? | measured | 1 |" in status
    assert "Findings so far" in status and "synthetic" in status
    intro = (html / "book" / "intro.html").read_text(encoding="utf-8")
    assert "Where the study stands" in intro and "Findings so far" in intro
    # and the study's invariants hold (the quick profile: every page, record and book page)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_HOME, str(paths.root))
        res = CliRunner().invoke(main, ["study", "check", "--profile", "quick", "--data", str(synthetic_rafdb)])
    assert res.exit_code == 0, res.output
    assert "study check passed: 11 run(s) of profile 'quick'" in res.output
    for stem, heading in (("07_augmentation", "Adopted:"), ("08_class_weights", "The class weights")):
        page = html_lib.unescape(re.sub(r"<[^>]+>", " ", (html / "book" / "experiments" / stem / "default.html")
                                        .read_text(encoding="utf-8")))
        assert heading in page and "n = 1 per " in page and "Reduced grid" in page
        assert "Synthetic data" in page and "Traceback" not in page


def test_pages_show_folders_relative_to_the_project(tmp_path):
    """Injected folders inside the folder a notebook runs in are relative; others stay absolute."""
    params = {"data_path": str(tmp_path / "data" / "synthetic"), "run_dir": str(tmp_path / "data" / "runs" / "x"),
              "runs_root": "/elsewhere/runs", "seed": 1}
    assert runner._relative_paths(params, tmp_path) == {
        "data_path": "data/synthetic", "run_dir": "data/runs/x", "runs_root": "/elsewhere/runs", "seed": 1}


def test_page_titles_write_architectures_as_the_text_names_them():
    assert runner.display_run_name("resnet18") == "ResNet18"
    assert runner.display_run_name("densenet121-hflip-s2") == "DenseNet121-hflip-s2"
    assert runner.display_run_name("hflip-inverse") == "hflip-inverse"


@pytest.mark.slow
def test_the_ablation_notebooks_record_every_setting_and_seed(quick_study):
    """07 and 08 (quick profile): one record each with every setting, the paired tests against the
    plain setting and the adoption; 08 on the fusion run's inputs (its plain heads repeat 06's runs)
    and, as the quick profile sets train_cnn, on the CNN trained end to end."""
    from fer_utils.study import ablation

    paths, _ = quick_study
    aug = runs.load_run(paths.runs / "07_augmentation" / "default")
    m = aug["metrics"]
    settings = ["none", "hflip", "rrc_0.8"]   # the quick profile's (all eight: tests/test_ablation.py)
    assert m["settings"] == {"cnn": settings} and m["seeds"] == [1]
    assert len(aug["predictions"]) == len(settings) * m["n"]
    assert len(m["comparisons"]) == len(settings) - 1 and m["adoption"]["cnn"]["adopted"]
    assert not ablation.results_table(m, "cnn").astype(str).apply(lambda c: c.str.contains("±")).any().any()
    imb = runs.load_run(paths.runs / "08_class_weights" / "default")
    m = imb["metrics"]
    assert set(m["groups"]) == {"cnn_head", "fused_head", "cnn"}
    for settings in m["settings"].values():   # the quick profile's treatments (effective: with its chosen beta)
        assert settings[0] == "none" and settings[1].startswith("effective_") and settings[2:] == ["focal"]
    fusion = runs.load_run(paths.runs / "06_fusion" / "default")["metrics"]
    assert m["fusion"]["fused_head"] == fusion["controls_and_sweep_head"]
    assert m["fusion"]["cnn_bundle"] == fusion["cnn_bundle"]["path"]
    assert m["fusion"]["reproduced"] and all(r["macro_f1"] == r["fusion_macro_f1"] for r in m["fusion"]["reproduced"])
    assert set(m["chosen_beta"].values()) <= {0.9, 0.999}


@pytest.mark.slow
def test_a_warm_rerun_executes_nothing_and_a_change_reruns_what_depends_on_it(quick_study, synthetic_rafdb):
    """Runs last in this module (it re-executes some of the quick study's notebooks in place)."""
    paths, cold = quick_study
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_DIRS.values():
            mp.delenv(var, raising=False)
        mp.setenv(ENV_HOME, str(paths.root))

        def rerun(**kwargs):
            lines = []
            done = runner.run_study(profile="quick", data_path=synthetic_rafdb, echo=lines.append, **kwargs)
            return {f"{o.run.notebook}/{o.run.name}" for o in done if o.executed}, done, lines

        written = {o.run.output: o.run.output.stat().st_mtime_ns for o in cold}
        executed, warm, lines = rerun()
        assert executed == set() and len(warm) == len(cold)
        assert {o.run.output: o.run.output.stat().st_mtime_ns for o in warm} == written   # nothing rewritten
        assert all(o.run_seconds == pytest.approx(c.run_seconds, abs=0.01) for o, c in zip(warm, cold))
        assert all("skipped" in line for line in lines)

        # a run record that went missing: that run executes again
        shutil.rmtree(paths.runs / "03_cnn_compare" / "default")
        assert rerun()[0] == {"03_cnn_compare/default"}
        # a re-executed upstream run (one of 04's, forced) re-runs the notebook that needs it, and only that
        one = next(r for r in runner.plan_study("quick", data_path=synthetic_rafdb) if r.notebook == "04_vlm_prompts")
        assert [o.executed for o in runner.execute_study([one], echo=lines.append, force=True)] == [True]
        assert rerun()[0] == {"05_vlm_compare/default"}
        assert freshness.read_stamp(one.output)["seconds"] > 0
        # an edited notebook is out of date, and nothing that does not read its records is (what the
        # next rerun would execute; executing it is what the two reruns above show)
        planned = runner.plan_study("quick", data_path=synthetic_rafdb)
        current = [freshness.is_current(r.output, runner.run_fingerprint(r), r.params.get("run_dir"))
                   is not None for r in planned]
        assert all(current)
        source = paths.notebooks / "05_vlm_compare.ipynb"
        nb = nbformat.read(source, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("An edit."))
        nbformat.write(nb, source)
        stale = {f"{r.notebook}/{r.name}" for r in planned
                 if freshness.is_current(r.output, runner.run_fingerprint(r), r.params.get("run_dir")) is None}
        assert stale == {"05_vlm_compare/default"}
        # a changed data set (one image's bytes) changes the fingerprint of every run that reads it
        # (and so, once they re-execute, of those that need them); a page reading no data keeps its own
        planned = runner.plan_study("quick", data_path=synthetic_rafdb)
        before = [runner.run_fingerprint(r) for r in planned]
        image = next(p for p in sorted(synthetic_rafdb.rglob("*.jpg")))
        original = image.read_bytes()
        try:
            image.write_bytes(original + b"\0")
            after = [runner.run_fingerprint(r) for r in planned]
        finally:
            image.write_bytes(original)
        changed = {r.notebook for r, b, a in zip(planned, before, after) if a != b}
        assert changed == {r.notebook for r in planned if "data_path" in r.params}
        assert "03_cnn_compare" not in changed and [runner.run_fingerprint(r) for r in planned] == before


def test_needs_name_earlier_notebooks():
    manifest = runner.load_manifest(REPO / "notebooks" / "study.yaml")
    planned = runner.plan(manifest, "quick", data_path="/data")
    needs = {r.notebook: r.needs for r in planned}
    assert needs["01_data"] == () and needs["03_cnn_compare"] == ("02_cnn_baselines",)
    assert needs["08_class_weights"] == ("02_cnn_baselines", "06_fusion")
    manifest["notebooks"]["03_cnn_compare"]["needs"] = ["06_fusion"]
    with pytest.raises(ConfigError, match="needs: '06_fusion' is not a notebook listed before it"):
        runner.check_manifest(manifest)
    manifest["notebooks"]["03_cnn_compare"]["needs"] = "02_cnn_baselines"
    with pytest.raises(ConfigError, match="needs: expected a list"):
        runner.check_manifest(manifest)
    del manifest["notebooks"]["03_cnn_compare"]["needs"]   # absent: every earlier notebook (it reads runs)
    assert next(r.needs for r in runner.plan(manifest, "quick", data_path="/data")
                if r.notebook == "03_cnn_compare") == ("01_data", "02_cnn_baselines")


def test_data_fingerprints_follow_content_and_remember_untouched_trees(tmp_path):
    from fer_utils.study import freshness

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"one")
    (root / ".hidden").write_text("ignored")
    memo = tmp_path / "memo.json"
    first = freshness.tree_fingerprint(root, memo)
    assert freshness.tree_fingerprint(root) == first                      # the memo changes nothing
    (root / ".hidden").write_text("still ignored")
    assert freshness.tree_fingerprint(root, memo) == first
    (root / "a" / "x.jpg").write_bytes(b"two")
    second = freshness.tree_fingerprint(root, memo)
    assert second != first
    (root / "a" / "x.jpg").rename(root / "a" / "y.jpg")                  # a renamed file is another data set
    assert freshness.tree_fingerprint(root) != second
    # the memo is trusted while paths, sizes and times are unchanged: same bytes length and mtime
    stat = (root / "a" / "y.jpg").stat()
    before = freshness.tree_fingerprint(root, memo)
    (root / "a" / "y.jpg").write_bytes(b"six")
    os.utime(root / "a" / "y.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert freshness.tree_fingerprint(root, memo) == before
    assert freshness.tree_fingerprint(root) != before                     # without it, the content
    assert freshness.code_fingerprint() == freshness.code_fingerprint()
    # a data set that is one file (FER2013's .csv): its bytes count
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    one = freshness.tree_fingerprint(csv, memo)
    csv.write_text("emotion,pixels,Usage\n1,1 2 3 4,Training\n")   # another size: the memo re-reads
    assert freshness.tree_fingerprint(csv, memo) != one


def test_a_damaged_data_set_is_reported_whole_before_any_notebook_runs(tmp_path, monkeypatch, synthetic_rafdb):
    """`fer study run` checks the content as `fer data check` does (every label, every image
    decoded) and names every problem, before a notebook runs; a data set that passed is not
    decoded again while its content stays the same."""
    project = _project(tmp_path / "project")
    monkeypatch.setenv(ENV_HOME, str(project))
    for var in ENV_DIRS.values():
        monkeypatch.delenv(var, raising=False)
    damaged = shutil.copytree(synthetic_rafdb, tmp_path / "damaged")
    labels = damaged / "basic" / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_99999.jpg 9\n")
    image = sorted((damaged / "basic" / "Image" / "aligned").glob("test_*.jpg"))[0]
    image.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError) as error:
        runner.run_study("quick", data_path=damaged, echo=pytest.fail)
    message = str(error.value)
    assert "no notebook was run" in message and f"fer data check {damaged}" in message
    assert "list_patition_label.txt" in message and image.name in message      # both problems, not the first
    assert not (project / "book").exists() and not (project / "data" / "runs").exists()

    planned = runner.plan_study("quick", data_path=synthetic_rafdb, only=["01_data"])
    runner.check_data(planned)                                    # passes, and is remembered
    import fer_utils.data as data_module
    monkeypatch.setattr(data_module, "check_dataset", lambda *a, **k: pytest.fail("decoded again"))
    runner.check_data(planned)
    planned[0].params["variant"] = "original"          # other images of the same data set: checked anew
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        runner.check_data(planned)


def _tiny_notebook(path: Path, parameters: str, body: str) -> Path:
    """A two-cell notebook (a ``parameters`` cell, then ``body``) for the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_keeps_the_last_good_page(tmp_path, monkeypatch):
    """A run that fails leaves the page of its last good run as it was; its traceback goes to a
    hidden file beside it (the book ignores it), which the next good run removes."""
    source = _tiny_notebook(tmp_path / "fails.ipynb", "fail = False", "assert not fail, 'asked to fail'\nprint('all good')")
    output = tmp_path / "out" / "fails" / "default.ipynb"

    def run(fail):
        return runner.PlannedRun("fails", "default", {"fail": fail}, source, output)

    runner.execute(run(False), cwd=tmp_path)
    good = output.read_bytes()
    with pytest.raises(runner.StudyRunError, match=r"AssertionError: asked to fail(.|\n)*\.default\.failed\.ipynb"
                                                  r"(.|\n)*page from its last good run is unchanged"):
        runner.execute(run(True), cwd=tmp_path)
    assert output.read_bytes() == good
    failed = output.with_name(".default.failed.ipynb")
    assert "asked to fail" in failed.read_text()
    assert not output.with_name(".default.running.ipynb").exists()
    runner.execute(run(False), cwd=tmp_path)
    assert not failed.exists() and "all good" in output.read_text()


def test_the_speed_factor_is_measured_before_a_run_and_kept_when_it_is_skipped(tmp_path, capfd, monkeypatch):
    """In the budget's profile each executed run is preceded by the reference workload
    (fer_utils.study.speed); its factor goes into the run's stamp and outcome, and a run skipped as
    unchanged reports the factor of the execution that made it. The kernel talks over Unix sockets:
    no ipykernel warning about plain-text TCP on stderr. The kernel waits at OpenMP barriers as
    briefly as the measurement did (speed.OPENMP_WAITS), set by the runner where the environment
    has no value (the tests' set-up gives one: removed here)."""
    from fer_utils.study import speed

    monkeypatch.delenv("GOMP_SPINCOUNT")
    source = _tiny_notebook(tmp_path / "tiny.ipynb", "n = 1",
                            "import os\nprint(n + 1, os.environ.get('GOMP_SPINCOUNT'))")
    run = runner.PlannedRun("tiny", "default", {"n": 1}, source, tmp_path / "out" / "tiny" / "default.ipynb")
    lines = []
    (done,) = runner.execute_study([run], echo=lines.append, measure_speed=True)
    assert done.executed and done.factor > 0
    printed = nbformat.read(run.output, as_version=4).cells[-1].outputs[0]["text"]
    assert printed.strip() == f"2 {speed.OPENMP_WAITS['GOMP_SPINCOUNT']}", printed
    stamp = freshness.read_stamp(run.output)
    assert stamp["speed"]["workload"] == speed.WORKLOAD and stamp["speed"]["factor"] == done.factor
    assert stamp["speed"]["gomp_spincount"] == speed.OPENMP_WAITS["GOMP_SPINCOUNT"]
    assert len(stamp["speed"]["samples"]) == speed.SAMPLES and stamp["speed"]["threads"] >= 1
    assert f"(speed factor {done.factor:.2f})" in lines[0]
    (again,) = runner.execute_study([run], echo=lines.append, measure_speed=True)
    assert not again.executed and again.factor == done.factor and f"at speed factor {done.factor:.2f}" in lines[-1]
    (unmeasured,) = runner.execute_study([run], echo=lines.append, force=True)   # not the budget's profile
    assert unmeasured.executed and unmeasured.factor is None and "speed" not in freshness.read_stamp(run.output)
    err = capfd.readouterr().err
    assert "Kernel is running over TCP" not in err and "IPKernelApp" not in err, err


def test_an_executed_page_run_again_as_it_is_gives_the_same_results(quick_study, tmp_path):
    """What `fer lab` offers: an executed page carries its run's parameters, and executed again as
    it is, by nbclient, in a project folder (as JupyterLab's kernels start under fer lab), it writes
    the same metrics and predictions as the run that made it. Run in a copy of the project, so the
    study's own records stay as they are."""

    import nbclient

    paths, done = quick_study
    (run,) = [o.run for o in done if o.run.notebook == "02_cnn_baselines" and o.run.name == "resnet18"]
    page = nbformat.read(run.output, as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in page.cells)
    copy = tmp_path / "project"
    relative = run.output.relative_to(paths.root)
    (copy / relative).parent.mkdir(parents=True)
    nbformat.write(page, copy / relative)
    nbclient.NotebookClient(page, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(copy)}}).execute()
    run_dir = Path(run.params["run_dir"])
    again = copy / run_dir.relative_to(paths.root)
    def results(folder):   # every metric but the wall-clock time it took
        return {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if not k.endswith("seconds")}

    assert results(again) == results(run_dir) and "macro_f1" in results(again)
    assert (again / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()

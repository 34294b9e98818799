"""The `fer` command through click's runner (in process) and once as a real console script."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_utils.cli import main
from fer_utils.errors import ConfigError
from fer_utils.paths import ENV_DIRS, ENV_HOME, find_project

REPO = Path(__file__).resolve().parent.parent


def test_synth_then_check_reports_counts(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    res = runner.invoke(main, ["data", "synth", "--out", str(out), "--seed", "3", "--scale", "0.005", "--min-per-class", "4"])
    assert res.exit_code == 0, res.output
    assert (out / "basic" / "EmoLabel" / "list_patition_label.txt").exists()
    res = runner.invoke(main, ["data", "check", str(out)])
    assert res.exit_code == 0, res.output
    assert "happiness" in res.output and "train" in res.output


def test_check_names_the_broken_file_and_line_and_exits_nonzero(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    assert runner.invoke(main, ["data", "synth", "--out", str(out), "--scale", "0.005", "--min-per-class", "4"]).exit_code == 0
    label_file = out / "basic" / "EmoLabel" / "list_patition_label.txt"
    lines = label_file.read_text().splitlines()
    first = lines[0].split()[0]
    lines[2] = lines[2].split()[0] + " 9"
    label_file.write_text("\n".join(lines) + "\n")
    (out / "basic" / "Image" / "aligned" / first.replace(".jpg", "_aligned.jpg")).unlink()
    res = runner.invoke(main, ["data", "check", str(out)])
    assert res.exit_code == 1
    assert "list_patition_label.txt:3" in res.output
    assert first.replace(".jpg", "_aligned.jpg") in res.output


def test_study_run_rejects_unknown_notebook_and_missing_data(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["study", "run", "--only", "nothing", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "error: --only 'nothing' matches no notebook" in res.output
    res = runner.invoke(main, ["study", "run", "--data", str(tmp_path / "absent")])
    assert (res.exit_code, res.output) == (2, f"error: {tmp_path.resolve() / 'absent'}: no such file or folder\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (it holds notebooks/study.yaml) as the current folder."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "study.yaml", tmp_path / "notebooks" / "study.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_HOME", raising=False)
    return tmp_path


def test_predict_without_bundle_says_so(project, synthetic_rafdb):
    res = CliRunner().invoke(main, ["predict", str(project / "x.jpg"), "--data", str(synthetic_rafdb)])
    assert res.exit_code == 2 and "no model bundle trained on the data set with fingerprint" in res.output
    res = CliRunner().invoke(main, ["predict", str(project / "x.jpg")])
    assert res.exit_code == 2 and "data/synthetic does not exist" in res.output


def _bundle(folder, seed, val, data):
    import torch

    from fer_utils.models import create_model
    from fer_utils.inference.bundle import save_bundle
    from fer_utils.options import Preprocessing

    torch.manual_seed(seed)
    return save_bundle(folder, create_model("resnet18"), "resnet18", Preprocessing.preset(32, "half"),
                       metrics={"val_macro_f1": val}, data=data)


def test_predict_json_from_a_real_bundle(tmp_path, synthetic_rafdb):
    bundle = _bundle(tmp_path / "b", 0, 0.5, {"name": "s", "fingerprint": "f", "synthetic": True})
    images = sorted((synthetic_rafdb / "basic" / "Image" / "aligned").glob("test_*"))[:2]
    res = CliRunner().invoke(main, ["predict", *map(str, images), "--bundle", str(bundle)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["bundle"] == {"path": str(bundle), "model": "resnet18", "val_macro_f1": 0.5,
                             "data": {"name": "s", "fingerprint": "f", "synthetic": True}}
    assert [p["image"] for p in out["predictions"]] == list(map(str, images))
    for p in out["predictions"]:
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "missing.jpg"), "--bundle", str(bundle)])
    (entry,) = json.loads(res.stdout)["predictions"]     # reported in its entry, exit 1
    assert res.exit_code == 1 and "missing.jpg" in entry["error"] and "label" not in entry


def test_predict_serves_the_best_validation_bundle_of_the_data_set(project, synthetic_rafdb):
    from fer_utils.data import describe_dataset, load_dataset

    data = describe_dataset(synthetic_rafdb, load_dataset(synthetic_rafdb))
    assert data["synthetic"] is True and data["name"] == synthetic_rafdb.name
    runs = project / "data" / "runs"
    best = _bundle(runs / "resnet18" / "bundle", 1, 0.6, data)
    _bundle(runs / "vgg16" / "bundle", 2, 0.3, data)              # written last, weaker on validation
    _bundle(runs / "other" / "bundle", 3, 0.9, {**data, "fingerprint": "0" * 16})
    image = sorted((synthetic_rafdb / "basic" / "Image" / "aligned").glob("test_*"))[0]
    res = CliRunner().invoke(main, ["predict", str(image), "--data", str(synthetic_rafdb)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["bundle"]
    assert out["path"] == str(best) and out["val_macro_f1"] == 0.6 and out["data"] == data


def fer_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the installed ``fer`` console script in ``cwd``, without FER_HOME or other FER_* folders."""
    exe = shutil.which("fer", path=str(Path(sys.executable).parent))
    assert exe, "the `fer` console script is not installed in this environment"
    clean = {k: v for k, v in os.environ.items() if k != ENV_HOME and k not in ENV_DIRS.values()}
    return subprocess.run([exe, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def test_console_script_is_installed(tmp_path):
    res = fer_script("--help", cwd=tmp_path)
    assert res.returncode == 0 and "study" in res.stdout and "predict" in res.stdout


@pytest.mark.parametrize("args", [["study", "run"], ["study", "run", "--data", "faces"], ["data", "synth"],
                                  ["predict", "face.jpg"]])
def test_console_script_outside_a_project_folder_says_so_and_writes_nothing(tmp_path, args):
    """Not the checkout ``fer`` was installed from: the current folder, which is no project."""
    with pytest.raises(ConfigError) as expected:
        find_project(env={}, cwd=tmp_path)
    res = fer_script(*args, cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"error: {expected.value}\n")
    assert "no project folder" in res.stderr and str(tmp_path.resolve()) in res.stderr
    assert not any(tmp_path.iterdir())          # no data generated, nothing else written


def test_console_script_reads_the_manifest_of_the_project_folder(tmp_path):
    """The project folder's manifest (FER_HOME, else the current folder), not the checkout's."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "study.yaml").write_text("notebooks:\n  01_data: {}\n")
    for env in ({}, {ENV_HOME: str(tmp_path)}):
        res = fer_script("study", "run", "--only", "nothing", cwd=tmp_path if not env else tmp_path.parent, **env)
        assert (res.returncode, res.stderr) == (2, "error: --only 'nothing' matches no notebook; known: 01_data\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notebooks"]


def test_predict_without_bundle_or_data_says_what_to_do(project):
    res = CliRunner().invoke(main, ["predict", str(project / "x.jpg")])
    assert res.exit_code == 2 and "no --bundle given" in res.output and "make study" in res.output
    assert "Invalid value for --data" not in res.output      # --data was never given


@pytest.mark.parametrize("args", [["--port", "-5"], ["--port", "99999"], ["--port", "0"], ["--threads", "0"]])
def test_serve_refuses_impossible_ports_and_threads_before_starting(args, tmp_path, monkeypatch):
    import waitress

    monkeypatch.setattr(waitress, "serve", lambda *a, **k: pytest.fail("waitress started"))
    res = CliRunner().invoke(main, ["serve", "--instance", str(tmp_path / "i"), *args])
    assert res.exit_code == 2 and f"Invalid value for '{args[0]}'" in res.output
    assert "serving on" not in res.output and not (tmp_path / "i").exists()


def test_runs_export_appends_tar_gz_to_a_bare_name(project, monkeypatch):
    for var in ENV_DIRS.values():
        monkeypatch.delenv(var, raising=False)
    (project / "data" / "runs" / "x").mkdir(parents=True)
    (project / "data" / "runs" / "x" / "metrics.json").write_text("{}")
    res = CliRunner().invoke(main, ["runs", "export", "noext"])
    assert res.exit_code == 0, res.output
    assert (project / "noext.tar.gz").is_file() and not (project / "noext").exists()
    assert "written to noext.tar.gz" in res.output
    res = CliRunner().invoke(main, ["runs", "export", "kept.tar.gz"])
    assert res.exit_code == 0 and (project / "kept.tar.gz").is_file()


def test_features_options_named_as_flags_in_errors(synthetic_rafdb, tmp_path, monkeypatch):
    from fer_utils.models import registry

    res = CliRunner().invoke(main, ["features", str(synthetic_rafdb), "--model", "resnet18", "--random-weights",
                                    "--image-size", "10", "--cache", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--image-size must be an int >= 32" in res.output
    assert "preprocessing.image_size" not in res.output

    def offline(name, weights=None, **kwargs):
        if weights is not None:
            raise OSError("offline")
        return real(name, weights=weights, **kwargs)

    real = registry.torchvision.models.get_model
    monkeypatch.setattr(registry.torchvision.models, "get_model", offline)
    monkeypatch.setattr(registry, "weights_path", lambda name: tmp_path / "hub" / "absent.pth")
    res = CliRunner().invoke(main, ["features", str(synthetic_rafdb), "--model", "resnet18",
                                    "--cache", str(tmp_path / "c")])
    assert res.exit_code == 2 and "use --random-weights" in res.output and "pretrained=False" not in res.output

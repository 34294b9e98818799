"""``fer bench``: every quick part runs and writes plausible JSON; bad options are clear errors.

Only the shape and signs of the figures are checked, never a speed: the test machines are shared.
The study part (minutes: the quick study twice) and the web part (a server subprocess and trained
bundles) are left to ``fer bench`` itself; their helpers are covered by the unit tests below.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_utils.bench import PARTS, machine
from fer_utils.cli import main
from fer_utils.cli.bench import parse_only

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_json_with_rates_and_ratios(tmp_path, one_torch_thread):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "--quick", "--only", "features,training,captions", "--device", "cpu",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"features", "training", "captions"}
    m = report["machine"]
    assert m["cpu_count"] >= 1 and m["torch"] and m["date"] and "ram_gib" in m and "gpu" in m
    features = report["results"]["features"]
    for key in ("a_naive_img_s", "b_extract_features_img_s", "c_forward_only_img_s", "b_over_a", "b_over_c"):
        assert features[key] > 0, key
    assert features["model"] == "resnet18" and features["images"] == 16
    training = report["results"]["training"]
    assert training["fit_img_s"] > 0 and training["no_loading_img_s"] > 0
    assert 0 < training["fit_over_no_loading"] < 10
    assert training["epochs"] == 2 and len(training["epoch_seconds"]) == 2
    captions = report["results"]["captions"]
    assert set(captions["batches"]) == {"1", "4"} and captions["batches"]["1"]["x_batch1"] == 1
    assert captions["best_over_batch1"] >= 1 and captions["batch1_images_per_s"] > 0
    for label in ("features: extract_features", "training: fit", "captions: batch 1", "x batch 1"):
        assert label in res.output


@pytest.mark.parametrize("args, message", [
    (["--only", "features,speed"], "unknown part(s) 'speed'"),
    (["--only", ","], "(none given)"),
    (["--model", "alexnet"], "unknown model 'alexnet'"),
    (["--workers", "many"], "'auto' or a number"),
    (["--device", "tpu"], "'tpu' is not one of"),
])
def test_bad_options_are_clear_errors(args, message):
    res = CliRunner().invoke(main, ["bench", *args])
    assert res.exit_code == 2
    assert message in res.output


def test_parts_come_in_a_fixed_order():
    assert parse_only(None) == list(PARTS)
    assert parse_only(" training , features") == ["features", "training"]


def test_machine_description_is_json():
    described = json.loads(json.dumps(machine()))
    assert {"cpu", "cpu_count", "ram_gib", "torch", "cuda", "gpu", "date"} <= set(described)


def test_study_part_runs_twice_in_a_scratch_project_and_restores_the_environment(tmp_path, monkeypatch):
    """The plumbing of the study part, with run_study and the data generator replaced (the real
    part takes minutes: ``fer bench --only study``)."""
    from fer_utils.bench import study as bench_study
    from fer_utils.data import synthetic
    from fer_utils.paths import ENV_HOME
    from fer_utils.study import runner

    calls = []

    def fake_run_study(profile, data_path, only, echo):
        root = Path(os.environ[ENV_HOME])
        assert (root / "notebooks" / "study.yaml").exists() and (root / "_config.yml").exists()
        assert not (root / "book" / "experiments").exists()
        calls.append((profile, data_path, only))
        return []

    monkeypatch.setenv(ENV_HOME, str(REPO))
    monkeypatch.setattr(runner, "run_study", fake_run_study)
    monkeypatch.setattr(synthetic, "generate", lambda out, **kw: Path(out))
    result = bench_study.measure_study("quick", only=["01_data"], source=REPO, echo=lambda *_: None)
    assert len(calls) == 2 and calls[0] == ("quick", calls[0][1], ["01_data"])
    assert result["cold_s"] > 0 and result["warm_s"] > 0 and result["warm_over_cold"] > 0
    assert result["cold_runs"] == 0 and result["warm_runs"] == 0
    assert os.environ[ENV_HOME] == str(REPO)


def test_step_agreement_compares_one_step_with_the_cpu_reference(one_torch_thread):
    """The GPU check of one training step, run here with the CPU as the device: channels-last
    against the contiguous reference gives the same loss and gradients within float32 tolerance;
    the relative errors are real measurements (a different batch size changes the loss)."""
    from fer_utils.bench.training import step_agreement

    check = step_agreement("resnet18", "cpu", image_size=32, batch_size=4, channels_last=True)
    assert check["device"] == "cpu" and check["amp"] is False and check["parameters"] == 62
    assert check["loss_abs_diff"] < 1e-5 and check["grad_rel_err_max"] < 1e-3
    assert 0 <= check["grad_rel_err_median"] <= check["grad_rel_err_max"]
    other = step_agreement("resnet18", "cpu", image_size=32, batch_size=6, channels_last=False)
    assert other["grad_rel_err_max"] < 1e-5  # the reference path itself: equal up to nothing
    assert other["cpu_loss"] != check["cpu_loss"]


def test_gpu_checks_script_records_each_step_and_respects_its_budget(tmp_path, one_torch_thread):
    """benchmarks/gpu_checks.py, the one call for a session lent a GPU, run here on the CPU: a step
    runs and its result is written as it comes; with no budget left the next steps are recorded
    as skipped, not run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_checks", REPO / "benchmarks" / "gpu_checks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.main(["--quick", "--device", "cpu", "--only", "clip", "--out", str(tmp_path)])
    clip = report["steps"]["clip text tower"]
    assert clip["batched_sentences_per_s"] > 0 and clip["x_batch1"] > 0 and "error" not in clip
    estimate = clip["estimated_s"]["batched_sentences_per_s"]
    assert estimate["RAF-DB"] == pytest.approx(15_339 / clip["batched_sentences_per_s"])
    assert estimate["AffectNet"] > estimate["RAF-DB"]
    assert json.loads((tmp_path / "gpu_checks.json").read_text())["steps"].keys() == {"clip text tower"}
    skipped = script.main(["--quick", "--device", "cpu", "--budget-s", "-1", "--out", str(tmp_path)])
    assert skipped["steps"] and all("skipped" in step for step in skipped["steps"].values())
    # the skipped steps are in the file too, not only in memory
    assert json.loads((tmp_path / "gpu_checks.json").read_text())["steps"] == skipped["steps"]


def test_gpu_checks_says_when_torch_compile_has_no_toolchain(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_checks", REPO / "benchmarks" / "gpu_checks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.compile_toolchain() is None           # this machine has gcc and Python's headers
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CC", "no-such-compiler")
    assert "a C compiler" in script.compile_toolchain()

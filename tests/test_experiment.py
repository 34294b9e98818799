"""The notebooks' shared steps, used on their own: a CNN on images and a head on cached arrays go
through the same fit, scoring and record code."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fer_utils.study import experiment, runs
from fer_utils.study.config import CNNBaselineConfig
from fer_utils.inference.bundle import choose_bundle
from fer_utils.inference.predict import Predictor


@pytest.fixture(scope="module")
def cnn_cfg(synthetic_rafdb, tmp_path_factory):
    return CNNBaselineConfig.from_params({
        "data_path": str(synthetic_rafdb), "model": "resnet18", "image_size": 32, "epochs": 1, "patience": 1,
        "batch_size": 32, "n_bootstrap": 20, "device": "cpu", "class_weights": "inverse",
        "run_dir": str(tmp_path_factory.mktemp("runs") / "02_cnn_baselines" / "resnet18"),
        "cache_dir": str(tmp_path_factory.mktemp("cache"))})


def test_training_config_takes_the_notebook_fields_and_class_weights(cnn_cfg, synthetic_rafdb):
    index, data = experiment.load_data(cnn_cfg)
    tcfg = experiment.training_config(cnn_cfg, index.loc[index["split"] == "train", "label"])
    assert (tcfg.lr, tcfg.epochs, tcfg.batch_size, tcfg.seed, tcfg.device) == (1e-3, 1, 32, 42, "cpu")
    assert tcfg.class_weights is not None and len(tcfg.class_weights) == 7
    assert data["synthetic"] is True and data["n_images"] == len(index)
    assert data["fingerprint"] != data["split_fingerprint"]


def test_train_cnn_then_save_run_records_params_data_and_a_servable_bundle(cnn_cfg, one_torch_thread):
    from pathlib import Path

    run = experiment.train_cnn(cnn_cfg, progress=False)
    # the decoded images were kept in the config's cache (one array, all splits), for the next run
    decoded = list((Path(cnn_cfg.cache_dir) / "decoded").rglob("*.npy"))
    assert len(decoded) == 1 and np.load(decoded[0], mmap_mode="r").shape[0] == run.data["n_images"]
    assert set(experiment.CI_METRICS) <= set(run.metrics["ci95"])
    folder, bundle = experiment.save_run(cnn_cfg, run)
    params = json.loads((folder / "params.json").read_text())
    provenance = json.loads((folder / "provenance.json").read_text())
    assert params["notebook"] == "02_cnn_baselines" and params["training"]["lr"] == 1e-3
    assert len(params["training"]["class_weights"]) == 7
    assert "train_config" not in provenance and "training" not in provenance
    assert provenance["device"]["device"] == "cpu" and "requested" not in provenance["device"]
    assert provenance["data"] == run.data
    chosen = choose_bundle(folder.parent, run.data["fingerprint"])
    assert chosen["path"] == str(bundle) and chosen["val_macro_f1"] == run.metrics["val_macro_f1"]
    assert Predictor.from_bundle(bundle).summary()["data"] == run.data


def test_a_head_on_cached_arrays_uses_the_same_steps(tmp_path, cnn_cfg):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def arrays(n):
        y = rng.integers(0, 7, n)
        x = np.eye(7)[y] + 0.3 * rng.standard_normal((n, 7))
        return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y)), y

    (train, _), (val, _), (test, y_test) = arrays(200), arrays(60), arrays(70)
    tcfg = experiment.training_config(cnn_cfg.__class__.from_params(
        {"epochs": 10, "patience": 10, "lr": 0.05, "batch_size": 32, "device": "cpu"}))
    run = experiment.fit_and_score(torch.nn.Linear(7, 7), train, val, test, [f"t{i}" for i in range(70)],
                                   y_test, tcfg, data={"name": "cached"}, n_bootstrap=50, progress=False)
    assert run.metrics["accuracy"] > 0.8 and run.metrics["ci95"]["macro_f1"][0] < run.metrics["macro_f1"]
    cfg = cnn_cfg.__class__.from_params({"run_dir": str(tmp_path / "head")})
    folder = experiment.record(cfg, run.metrics, run.data, predictions=run.predictions,
                               history=run.fit.history, training=run.train_config, device=run.fit.device)
    record = runs.load_run(folder)
    assert list(record["predictions"]["id"][:2]) == ["t0", "t1"] and record["params"]["training"]["lr"] == 0.05

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fer_utils.study.config import DataOverviewConfig, config_for
from fer_utils.errors import ConfigError


def test_defaults_and_roundtrip():
    cfg = DataOverviewConfig.from_params({})
    assert cfg.val_fraction == 0.2 and cfg.seed == 42
    assert DataOverviewConfig.from_params(cfg.to_dict()) == cfg


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="unknown parameter.*val_fracton"):
        DataOverviewConfig.from_params({"val_fracton": 0.1})


@pytest.mark.parametrize("key,value", [("seed", "42"), ("seed", 4.0), ("seed", True),
                                       ("val_fraction", "0.2"), ("data_path", 3),
                                       ("samples_per_class", None)])
def test_wrong_type_is_an_error(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        DataOverviewConfig.from_params({key: value})


def test_int_widens_to_float_and_choices_enforced():
    assert DataOverviewConfig.from_params({"val_fraction": 0}).val_fraction == 0.0
    with pytest.raises(ConfigError, match="data_format.*one of"):
        DataOverviewConfig.from_params({"data_format": "csv"})


def test_from_namespace_requires_every_field():
    ns = DataOverviewConfig().to_dict()
    ns.pop("seed")
    with pytest.raises(ConfigError, match="lacks seed"):
        DataOverviewConfig.from_namespace(ns)


def test_config_for_unknown_notebook():
    assert config_for("01_data") is DataOverviewConfig
    with pytest.raises(ConfigError, match="no config registered"):
        config_for("99_nothing")


def test_optional_float_accepts_none():
    assert DataOverviewConfig.from_params({"val_fraction": None}).val_fraction is None
    with pytest.raises(ConfigError, match="must be float or None, got str"):
        DataOverviewConfig.from_params({"val_fraction": "none"})


NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_equals_config_defaults(path):
    """What a reader sees in a notebook's parameters cell is what its config defaults to."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    namespace: dict = {}
    exec(compile(cell.source, f"{path.name}:parameters", "exec"), namespace)
    namespace.pop("__builtins__")
    assert namespace == config_for(path.stem)().to_dict()


def test_validating_configs_and_paths_never_imports_torch():
    code = ("import sys, fer_utils.study.config, fer_utils.options, fer_utils.options, fer_utils.paths; "
            "from fer_utils.study.config import CNNBaselineConfig; CNNBaselineConfig.from_params({'model': 'vgg16'}); "
            "heavy = sorted(m for m in ('torch', 'torchvision', 'pandas') if m in sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_config_choices_follow_the_implementations():
    from fer_utils.models import list_models
    from fer_utils.options import CNN_ARCHITECTURES

    assert list(CNN_ARCHITECTURES) == list_models()



@pytest.mark.parametrize("value", [0, 8, "auto"])
def test_num_workers_is_an_int_or_auto(value):
    from fer_utils.study.config import CNNBaselineConfig

    assert CNNBaselineConfig.from_params({"num_workers": value}).num_workers == value


@pytest.mark.parametrize("value, message", [
    ("fast", "'num_workers' must be int or 'auto', got str 'fast'"),
    (True, "'num_workers' must be int or 'auto', got bool True"),
    (2.0, "'num_workers' must be int or 'auto', got float 2.0"),
    (-1, "'num_workers' must be >= 0; got -1"),
])
def test_num_workers_rejects_other_values(value, message):
    from fer_utils.study.config import CNNBaselineConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        CNNBaselineConfig.from_params({"num_workers": value})


def test_a_wrong_list_item_is_named_with_its_position():
    from fer_utils.study.config import AugmentationConfig

    with pytest.raises(ConfigError, match=r"parameter 'seeds\[1\]' must be int, got str '2'"):
        AugmentationConfig.from_params({"seeds": [1, "2"]})
    with pytest.raises(ConfigError, match=r"parameter 'seeds' must be list, got int 3"):
        AugmentationConfig.from_params({"seeds": 3})
    from fer_utils.study.config import ClassImbalanceConfig

    betas = ClassImbalanceConfig.from_params({"class_weight_betas": [1, 0.5]}).class_weight_betas
    assert betas == [1.0, 0.5] and all(type(b) is float for b in betas)   # ints widen to float in lists too

import pytest

from fer_utils.config import DataOverviewConfig, config_for
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

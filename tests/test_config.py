"""Configs: presets build, overrides apply with type checks, unknown keys raise."""

from pathlib import Path

import pytest

from multimodel.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    to_dict,
)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def test_override_nested_and_types():
    cfg = apply_overrides(
        Config(),
        ["model.moe.num_experts=32", "train.learning_rate=3e-4", "model.use_moe=false",
         "data.tasks=fashion_mnist,numbers_en_de", "model.moe.capacity_factor=None"],
    )
    assert cfg.model.moe.num_experts == 32
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.model.use_moe is False
    assert cfg.data.tasks == ("fashion_mnist", "numbers_en_de")
    assert cfg.model.moe.capacity_factor is None


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.moe.num_expert=3", "num_expert"),
        ("modle.hidden_size=3", "modle"),
        ("model.hidden_size.x=3", "not a section"),
        ("model.hidden_size=abc", "integer"),
        ("train.steps", "section.key=value"),
    ],
)
def test_bad_overrides_raise_with_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(Config(), [override])


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), ["model.hidden=3"])
    assert "hidden_size" in str(err.value)


def test_dict_round_trip():
    cfg = apply_overrides(Config(), ["model.hidden_size=64", "train.task_weights={'a': 2.0}"])
    assert config_from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        config_from_dict({**to_dict(cfg), "bogus": 1})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_missing_preset_names_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.py"):
        load_config(tmp_path / "nope.py")

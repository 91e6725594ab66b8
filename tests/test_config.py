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
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


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


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("train.steps=-5", "train.steps must be >= 1, got -5"),
    ("model.moe.top_k=9", r"model.moe.top_k must be between 1 and num_experts \(4\), got 9"),
    ("model.num_heads=3", r"model.num_heads must be >= 1 and divide hidden_size \(32\), got 3"),
    ("model.dropout=1.0", r"model.dropout must be in \[0, 1\), got 1.0"),
    ("train.mixing=random", "train.mixing must be one of proportional, uniform, temperature, weights"),
    ("data.task_sizes={'digits': -1}", "data.task_sizes.digits must be >= 0"),
    ("train.learning_rate=0", "train.learning_rate must be > 0"),
    ("model.conv_kernel_sizes=(3,3,5)", "model.conv_kernel_sizes must be 4 values"),
    ("train.device=gpu", "train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])

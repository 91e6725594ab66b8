"""Configs: presets build, overrides apply with type checks, unknown keys raise."""

import dataclasses

import pytest

from multimodel.config import (
    EXAMPLES_DIR,
    PRESETS_DIR,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    example_names,
    load_config,
    preset_names,
    to_dict,
)

TINY = "tiny"


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


def test_the_presets_ship_inside_the_package():
    assert preset_names() == ["demo", "hour", "paper", "tiny"]
    assert PRESETS_DIR.parent.name == "multimodel" and (PRESETS_DIR / "__init__.py").is_file()


@pytest.mark.parametrize("name", ["demo", "hour", "paper", "tiny"])
def test_every_preset_loads_by_name_and_by_path(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert load_config(f"{name}.py") == cfg == load_config(PRESETS_DIR / f"{name}.py")
    assert load_config(f"configs/{name}.py") == cfg  # where the presets were; recorded commands say so


def test_every_preset_says_its_command_run_time_and_expected_result():
    for path in sorted(PRESETS_DIR.glob("[!_]*.py")):
        header = path.read_text().split('"""')[1]
        assert f"--config {path.stem}" in header and "Run time:" in header and "Expected:" in header, path.name


def test_worked_examples_load_by_name_and_say_their_command():
    """``--config examples/NAME`` (with or without .py) names a shipped worked example of tasks
    declared over one's own data; each header says the command as a user types it."""
    names = example_names()
    assert len(names) >= 7 and all(name.startswith("examples/") for name in names)
    for name in names:
        path = EXAMPLES_DIR / f"{name.split('/')[1]}.py"
        cfg = load_config(name)
        assert cfg == load_config(f"{name}.py") == load_config(path) and cfg.data.declared_tasks
        header = path.read_text().split('"""')[1]
        assert f"--config {name} " in header and "Run time:" in header and "Expected:" in header, name
    with pytest.raises(ConfigError, match="give a preset .* a worked example \\(examples/audio_manifest"):
        load_config("examples/nope")


def test_a_file_of_ones_own_comes_before_a_preset_of_the_same_name(tmp_path, monkeypatch):
    (tmp_path / "tiny.py").write_text("from multimodel.config import Config\nCONFIG = Config()\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny.py") == Config()
    assert load_config("tiny") != Config()  # a bare name without .py that is no file: the preset


def test_missing_preset_names_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.py.*not found; give a preset \\(demo, hour, paper, tiny\\)"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "configs").mkdir()  # a configs/ folder of one's own: no fallback to the presets
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "configs" / "demo.py")


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


def test_hour_preset_is_the_demo_with_more_data_and_time():
    """configs/hour.py says it is the demo preset except its time budget, evaluation and
    checkpoint intervals, task weights, gradient clipping, batch sizes and three training-set
    sizes; the test sets stay the demo's."""
    demo, hour = load_config("demo"), load_config("hour")
    assert hour.model == demo.model
    assert dataclasses.replace(hour.data, task_sizes=demo.data.task_sizes,
                               task_batch_sizes=demo.data.task_batch_sizes) == demo.data
    assert hour.data.task_batch_sizes == {}  # batch 32 for every task, as in its runs
    grown = {name for name in hour.data.task_sizes if hour.data.task_sizes[name] != demo.data.task_sizes.get(name)}
    assert grown == {"speech_numbers", "grammar_parsing", "fashion_captions"}
    assert all(hour.data.task_sizes[name] > demo.data.task_sizes.get(name, demo.data.train_size) for name in grown)
    same_train = dataclasses.replace(hour.train, steps=demo.train.steps, time_budget_minutes=demo.train.time_budget_minutes,
                                     eval_every=demo.train.eval_every, checkpoint_every=demo.train.checkpoint_every,
                                     task_weights=demo.train.task_weights,
                                     normalize_gradients=demo.train.normalize_gradients)
    assert same_train == demo.train and hour.train.time_budget_minutes == 60
    # The weights its runs in docs/results.md were measured with: every task 1, speech 1.5.
    assert set(hour.train.task_weights) == set(demo.train.task_weights)
    assert {name: weight for name, weight in hour.train.task_weights.items() if weight != 1.0} == {"speech_numbers": 1.5}
    assert hour.train.normalize_gradients is False  # ... and with clipped gradients

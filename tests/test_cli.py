"""``multimodel`` argument parsing: options and KEY=VALUE overrides in any order."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimodel import cli

OVERRIDES = ["train.steps=5", "model.dropout=0.0", "data.tasks=digits,numbers_en_de"]


def _parse(words: list[str]):
    return cli.build_parser().parse_args(words)


@pytest.mark.parametrize("head,options", [
    (["train"], [["--config", "configs/tiny.py"], ["--run-dir", "runs/x"], ["--no-progress"]]),
    (["info"], [["--config", "configs/tiny.py"]]),
    (["experiment", "joint-vs-single"], [["--config", "configs/tiny.py"], ["--seeds", "2"], ["--fixed-data-seed"]]),
    (["experiment", "add-task"], [["--new-task", "numbers_fr_en"], ["--config", "configs/tiny.py"]]),
])
def test_options_and_overrides_intermix(head, options):
    """Every command that takes overrides reads the same namespace whatever the order of its words."""
    flat = [word for option in options for word in option]
    ordered = _parse([*head, *flat, *OVERRIDES])
    first, *middle, last = [[]] + options if len(options) == 1 else options
    # an override first, overrides between options, an option last
    mixed = _parse([*head, OVERRIDES[0], *first, OVERRIDES[1], *(w for o in middle for w in o), OVERRIDES[2], *last])
    assert vars(mixed) == vars(ordered)
    assert mixed.overrides == OVERRIDES and mixed.config == "configs/tiny.py"


def test_overrides_after_an_option_are_kept_in_order():
    args = _parse(["train", "--config", "configs/tiny.py", "train.steps=5", "--run-dir", "runs/x",
                   "train.steps=7", "--no-progress"])
    assert args.overrides == ["train.steps=5", "train.steps=7"] and args.no_progress


def test_unknown_options_are_still_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(["train", "--config", "configs/tiny.py", "train.steps=5", "--no-such-option", "--run-dir", "r"])
    assert exit_info.value.code == 2 and "--no-such-option" in capsys.readouterr().err


def test_commands_without_overrides_parse_as_before():
    args = _parse(["eval", "runs/x", "--tasks", "digits", "numbers_en_de", "--beam-size", "2"])
    assert args.checkpoint.name == "x" and args.tasks == ["digits", "numbers_en_de"] and args.beam_size == 2
    args = _parse(["data", "download", "fashion-mnist", "--data-dir", "d"])
    assert args.name == "fashion-mnist"


def test_train_takes_resume_or_overwrite_not_both(capsys):
    assert _parse(["train", "--config", "configs/tiny.py", "--run-dir", "r", "--overwrite"]).overwrite
    with pytest.raises(SystemExit) as exit_info:
        _parse(["train", "--config", "configs/tiny.py", "--run-dir", "r", "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_no_blind_skips_the_blind_control_of_train_and_eval():
    assert not _parse(["eval", "runs/x"]).no_blind
    assert _parse(["eval", "runs/x", "--no-blind"]).no_blind
    assert _parse(["train", "--config", "configs/tiny.py", "--run-dir", "r", "--no-blind"]).no_blind


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "configs/tiny.py", "--run-dir", "{run}", "data.batch_size=0"],
     "data.batch_size must be >= 1, got 0"),
    (["train", "--config", "configs/tiny.py", "--run-dir", "{run}", "train.steps=-5"],
     "train.steps must be >= 1, got -5"),
    (["serve", "{run}", "--port", "99999"], "port 99999 is out of range"),
    (["eval", "{run}", "--beam-size", "0"], "0 is below the minimum 1"),
    (["experiment", "joint-vs-single", "--config", "configs/tiny.py", "--seeds", "0"], "0 is below the minimum 1"),
])
def test_bad_values_exit_2_with_one_line_and_leave_no_run_directory(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    argv = [a.replace("{run}", str(run)) for a in argv]
    argv = [str(Path(__file__).resolve().parents[1] / a) if a.startswith("configs/") else a for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err
    assert not run.exists()

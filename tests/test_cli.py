"""``multimodel`` argument parsing: options and KEY=VALUE overrides in any order."""

from __future__ import annotations


import pytest

from multimodel import cli

OVERRIDES = ["train.steps=5", "model.dropout=0.0", "data.tasks=digits,numbers_en_de"]


def _parse(words: list[str]):
    return cli.build_parser().parse_args(words)


@pytest.mark.parametrize("head,options", [
    (["train"], [["--config", "tiny"], ["--run-dir", "runs/x"], ["--no-progress"]]),
    (["info"], [["--config", "tiny"]]),
    (["experiment", "joint-vs-single"], [["--config", "tiny"], ["--seeds", "2"], ["--fixed-data-seed"]]),
    (["experiment", "add-task"], [["--new-task", "numbers_fr_en"], ["--config", "tiny"]]),
])
def test_options_and_overrides_intermix(head, options):
    """Every command that takes overrides reads the same namespace whatever the order of its words."""
    flat = [word for option in options for word in option]
    ordered = _parse([*head, *flat, *OVERRIDES])
    first, *middle, last = [[]] + options if len(options) == 1 else options
    # an override first, overrides between options, an option last
    mixed = _parse([*head, OVERRIDES[0], *first, OVERRIDES[1], *(w for o in middle for w in o), OVERRIDES[2], *last])
    assert vars(mixed) == vars(ordered)
    assert mixed.overrides == OVERRIDES and mixed.config == "tiny"


def test_overrides_after_an_option_are_kept_in_order():
    args = _parse(["train", "--config", "tiny", "train.steps=5", "--run-dir", "runs/x",
                   "train.steps=7", "--no-progress"])
    assert args.overrides == ["train.steps=5", "train.steps=7"] and args.no_progress


def test_unknown_options_are_still_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(["train", "--config", "tiny", "train.steps=5", "--no-such-option", "--run-dir", "r"])
    assert exit_info.value.code == 2 and "--no-such-option" in capsys.readouterr().err


def test_commands_without_overrides_parse_as_before():
    args = _parse(["eval", "runs/x", "--tasks", "digits", "numbers_en_de", "--beam-size", "2"])
    assert args.checkpoint.name == "x" and args.tasks == ["digits", "numbers_en_de"] and args.beam_size == 2
    assert args.length_penalty is None  # the run's own
    assert _parse(["eval", "runs/x", "--length-penalty", "1.5"]).length_penalty == 1.5
    args = _parse(["data", "download", "fashion-mnist", "--data-dir", "d"])
    assert args.name == "fashion-mnist"


def test_train_takes_resume_or_overwrite_not_both(capsys):
    assert _parse(["train", "--config", "tiny", "--run-dir", "r", "--overwrite"]).overwrite
    with pytest.raises(SystemExit) as exit_info:
        _parse(["train", "--config", "tiny", "--run-dir", "r", "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_no_blind_skips_the_blind_control_of_train_and_eval():
    assert not _parse(["eval", "runs/x"]).no_blind
    assert _parse(["eval", "runs/x", "--no-blind"]).no_blind
    assert _parse(["train", "--config", "tiny", "--run-dir", "r", "--no-blind"]).no_blind


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "tiny", "--run-dir", "{run}", "data.batch_size=0"],
     "data.batch_size must be >= 1, got 0"),
    (["train", "--config", "tiny", "--run-dir", "{run}", "train.steps=-5"],
     "train.steps must be >= 1, got -5"),
    (["serve", "{run}", "--port", "99999"], "port 99999 is out of range"),
    (["eval", "{run}", "--beam-size", "0"], "0 is below the minimum 1"),
    (["experiment", "joint-vs-single", "--config", "tiny", "--seeds", "0"], "0 is below the minimum 1"),
])
def test_bad_values_exit_2_with_one_line_and_leave_no_run_directory(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    argv = [a.replace("{run}", str(run)) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err
    assert not run.exists()


def test_only_user_errors_are_one_line_and_bugs_show_their_traceback(monkeypatch, capsys):
    """The project's error classes and missing files exit 2 with one line; a ValueError or
    KeyError from a bug propagates (its traceback is what finds the bug)."""
    from multimodel.errors import CheckpointError, MissingExtraError, UserError

    def raising(error):
        def command(args):
            raise error
        return command

    for error in (UserError("bad thing; do this"), CheckpointError("ckpt/meta.json: corrupt"),
                  FileNotFoundError("nope.wav: no such file"), PermissionError("runs/: permission denied"),
                  MissingExtraError("the web demo", "serve", ImportError("no fastapi", name="fastapi"))):
        monkeypatch.setattr(cli, "cmd_tasks", raising(error))
        assert cli.main(["tasks"]) == 2
        err = capsys.readouterr().err
        assert err == f"multimodel tasks: error: {error}\n"
    assert "pip install 'multimodel[serve]'" in err
    for bug in (ValueError("an internal invariant broke"), KeyError("missing"), OSError("device busy")):
        monkeypatch.setattr(cli, "cmd_tasks", raising(bug))
        with pytest.raises(type(bug)):
            cli.main(["tasks"])
    monkeypatch.setattr(cli, "cmd_tasks", raising(UserError("shown in full")))
    with pytest.raises(UserError):
        cli.main(["--debug", "tasks"])


def test_the_errors_the_library_raises_for_users_are_user_errors():
    from multimodel.config import ConfigError
    from multimodel.corpora.cache import CorpusUnavailable, GenerationError
    from multimodel.corpora.errors import CorpusError
    from multimodel.errors import CheckpointError, UserError
    from multimodel.predict import PredictError
    from multimodel.tasks import UnknownTaskError

    for cls in (ConfigError, CheckpointError, GenerationError, CorpusError, CorpusUnavailable, PredictError,
                UnknownTaskError):
        assert issubclass(cls, UserError), cls


def test_a_missing_extra_is_named(monkeypatch, capsys):
    """Without FastAPI, `serve` says to install the serve extra; without matplotlib, the figures the plots extra."""
    import sys

    from multimodel.errors import MissingExtraError
    from multimodel.experiments.plots import require_matplotlib

    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an environment without it gives
    for name in [m for m in sys.modules if m.startswith("multimodel.serve")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["serve", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("multimodel serve: error: the web demo needs the optional dependency fastapi")
    assert "pip install 'multimodel[serve]'" in err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'multimodel\[plots\]'"):
        require_matplotlib()

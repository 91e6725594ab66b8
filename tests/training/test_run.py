"""`multimodel train`'s evaluation after training: per-task JSON and table with the blind control."""

from __future__ import annotations

import json

from multimodel.config import apply_overrides, load_config
from multimodel.training.run import train_and_evaluate



def test_final_evaluation_writes_blind_numbers_to_eval_json_and_results_md(tmp_path):
    cfg = load_config("tiny", [
        f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits,numbers_fr_en", "data.train_size=16",
        "data.eval_size=4", "data.eval_sizes={'digits': 12}", "train.steps=2"])
    results = train_and_evaluate(cfg, tmp_path / "run", progress=False, log=lambda _m: None)
    saved = {r["task"]: r for r in json.loads((tmp_path / "run" / "eval.json").read_text())}
    assert saved["digits"]["num_examples"] == 12 and saved["numbers_fr_en"]["num_examples"] == 4
    assert {"blind_accuracy", "blind_top5"} <= set(saved["digits"]["metrics"])
    assert "blind_bleu" in saved["numbers_fr_en"]["metrics"]
    assert "blind_prediction" in saved["numbers_fr_en"]["examples"][0]
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| value | blind |" in table
    for r in results:
        assert f"| {r.metrics['blind_' + ('accuracy' if r.task == 'digits' else 'bleu')]:.1f} |" in table
    train_and_evaluate(cfg, tmp_path / "again", progress=False, log=lambda _m: None, blind_control=False)
    saved = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert not any(key.startswith("blind_") for r in saved for key in r["metrics"])


def test_initialising_from_a_checkpoint_with_another_body_is_refused(tmp_path):
    import pytest

    from multimodel.config import apply_overrides
    from multimodel.training.train import TrainingError, train

    overrides = [f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits", "data.train_size=16",
                 "data.eval_size=4", "train.steps=2"]
    cfg = load_config("tiny", overrides)
    train(apply_overrides(cfg, ["model.encoder_timing_signal=false"]), tmp_path / "old", progress=False,
          log=lambda _m: None)
    with pytest.raises(TrainingError, match=r"model.encoder_timing_signal=False; set the same values"):
        train(cfg, tmp_path / "new", init_from=tmp_path / "old", progress=False, log=lambda _m: None)
    same = apply_overrides(cfg, ["model.encoder_timing_signal=false"])
    train(same, tmp_path / "same", init_from=tmp_path / "old", progress=False, log=lambda _m: None)


def test_damaged_newest_checkpoint_is_refused_by_eval_and_skipped_by_resume(tmp_path):
    """256 flipped bytes in the newest weights: eval and predict refuse them naming the file;
    resume sets them aside, continues from the checkpoint before, and keeps that one on disk."""
    import pytest

    from multimodel.training import checkpoint as ckpt
    from multimodel.pretrained import load_pretrained
    from multimodel.training.train import TrainingError, train

    cfg = load_config("tiny", [
        f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits", "data.train_size=16",
        "data.eval_size=4", "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2"])
    run = tmp_path / "run"
    train(cfg, run, progress=False, log=lambda _m: None)
    newest = run / "checkpoints" / "step-0000006"
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-300:-44] = bytes(b ^ 0xFF for b in data[-300:-44])
    weights.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"step-0000006/model.safetensors: its SHA-256 differs"):
        load_pretrained(run)
    messages: list[str] = []
    resumed = train(apply_overrides(cfg, ["train.steps=8"]), run, resume=True, progress=False, log=messages.append)
    assert any("damaged-step-0000006" in m for m in messages)
    assert any("resumed from" in m and "step-0000004" in m for m in messages)
    assert resumed.step == 8
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["damaged-step-0000006", "step-0000006", "step-0000008"]
    load_pretrained(run)  # the new newest verifies
    # With every checkpoint damaged, resume refuses instead of starting over.
    for step in ("step-0000006", "step-0000008"):
        (run / "checkpoints" / step / "meta.json").write_text("{}")
    with pytest.raises(TrainingError, match="no intact checkpoint to resume from"):
        train(cfg, run, resume=True, progress=False, log=lambda _m: None)
    assert (run / "checkpoints").is_dir()


def test_interrupted_save_leaves_nothing_after_the_next_start(tmp_path):
    from multimodel.training.train import train

    cfg = load_config("tiny", [
        f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits", "data.train_size=16",
        "data.eval_size=4", "train.steps=2", "train.checkpoint_every=2"])
    run = tmp_path / "run"
    train(cfg, run, progress=False, log=lambda _m: None)
    stale = run / "checkpoints" / ".tmp-step-0000004-999"  # what SIGKILL during a save leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    messages: list[str] = []
    train(load_config("tiny", [f"data.data_dir={str(tmp_path / 'data')!r}",
                                                    "data.tasks=digits", "data.train_size=16", "data.eval_size=4",
                                                    "train.steps=4", "train.checkpoint_every=2"]),
          run, resume=True, progress=False, log=messages.append)
    assert not stale.exists() and any(".tmp-step-0000004-999" in m for m in messages)


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_the_run_resumable(tmp_path, monkeypatch):
    import errno

    import pytest
    import torch

    from multimodel.training import checkpoint as ckpt
    from multimodel.pretrained import load_pretrained
    from multimodel.training.train import train

    overrides = [f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits", "data.train_size=16",
                 "data.eval_size=4", "train.checkpoint_every=2"]
    run = tmp_path / "run"
    train(load_config("tiny", overrides + ["train.steps=2"]), run, progress=False,
          log=lambda _m: None)
    real_save = ckpt.write_pretrained_files

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_pretrained_files", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write checkpoint step-0000004 .*No space left"):
        train(load_config("tiny", overrides + ["train.steps=4"]), run, resume=True,
              progress=False, log=lambda _m: None)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"]  # no half-written folder
    ckpt.verify(run / "checkpoints" / "step-0000002")
    monkeypatch.setattr(ckpt, "write_pretrained_files", real_save)
    resumed = train(load_config("tiny", overrides + ["train.steps=4"]), run, resume=True,
                    progress=False, log=lambda _m: None)
    assert resumed.step == 4
    uninterrupted = train(load_config("tiny", overrides + ["train.steps=4"]), tmp_path / "b",
                          progress=False, log=lambda _m: None)
    for a, b in zip(resumed.model.parameters(), uninterrupted.model.parameters()):
        assert torch.equal(a, b)
    load_pretrained(run)


def test_resume_from_a_chosen_checkpoint_continues_exactly_from_it(tmp_path):
    import pytest
    import torch

    from multimodel.training import checkpoint as ckpt
    from multimodel.training.train import train

    overrides = [f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits", "data.train_size=16",
                 "data.eval_size=4", "train.checkpoint_every=2", "train.keep_checkpoints=5"]
    run = tmp_path / "run"
    train(load_config("tiny", overrides + ["train.steps=6"]), run, progress=False,
          log=lambda _m: None)
    messages: list[str] = []
    cfg = load_config("tiny", overrides + ["train.steps=6"])
    resumed = train(cfg, run, resume_from=run / "checkpoints" / "step-0000002", progress=False, log=messages.append)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-0000002", "step-0000004", "step-0000006", "superseded-step-0000004",
                     "superseded-step-0000006"]
    assert any("resumed from" in m and "step-0000002" in m for m in messages)
    again = train(cfg, tmp_path / "again", progress=False, log=lambda _m: None)
    for a, b in zip(resumed.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)  # the same as never having gone past step 2
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint of this run"):
        train(cfg, run, resume_from=tmp_path / "again" / "checkpoints" / "step-0000002", progress=False,
              log=lambda _m: None)

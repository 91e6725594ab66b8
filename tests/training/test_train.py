"""The trainer: loss drops on every task, a batch can be overfit, resume-after-kill is exact,
evaluation is deterministic, errors are clear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multimodel.config import apply_overrides, load_config
from multimodel.data.batching import TaskStream
from multimodel.model.multimodel import MultiModel
from multimodel.tasks import BUILTIN_TASKS, TASKS
from multimodel.training import checkpoint as ckpt
from multimodel.tasks.task_data import attach_collators, build_tokenizer, load_task_data, modality_specs
from multimodel.training.optim import warmup_factor
from multimodel.training.train import TrainingError, train

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"


def tiny(tmp_path: Path, *overrides: str):
    return load_config(TINY, [f"data.data_dir={str(tmp_path / 'data')!r}", *overrides])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.resolve_checkpoint(run_dir) / "model.safetensors"))


def _available(name: str, data_dir: Path) -> bool:
    return TASKS[name].available(data_dir) is None


@torch.no_grad()
def _fixed_batch_losses(model, task_data, n_batches=2):
    model.eval()
    losses = {}
    for name, td in task_data.items():
        stream = TaskStream(name, td.train, td.collate, 8, seed=99)
        total = 0.0
        for _ in range(n_batches):
            b = stream.next_batch()
            out = model(b.inputs, b.input_mask, b.targets, b.target_mask, input_modality=td.task.input_modality,
                        target_modality=td.task.target_modality, task_token=td.task.task_token)
            total += float(out.loss.nll_sum) / float(out.loss.count)
        losses[name] = total / n_batches
    model.train()
    return losses


@pytest.mark.slow
def test_joint_run_over_all_builtin_tasks_lowers_every_loss(tmp_path):
    tasks = [t for t in BUILTIN_TASKS if _available(t, tmp_path / "data")]
    if len(tasks) < len(BUILTIN_TASKS):
        pytest.skip(f"built-in data missing for {sorted(set(BUILTIN_TASKS) - set(tasks))}")
    # 60 steps per task: the released code's class-label net (the default since format 2) needs
    # more than 40 to lower Fashion-MNIST's loss by 10 % at this size. The rate is held after the
    # warm-up (the default schedule): at 1.5e-3 or more Fashion-MNIST's loss fell by less than 10 %.
    cfg = tiny(tmp_path, f"data.tasks={','.join(tasks)}", "data.train_size=64", "train.steps=480",
               "train.learning_rate=7e-4", "train.warmup_steps=20", "model.dropout=0.0",
               "train.mixing='uniform'", "train.checkpoint_every=1000")
    task_data = load_task_data(cfg, log=lambda _m: None)
    tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = MultiModel(cfg.model, tokenizer.vocab_size, modality_specs([td.task for td in task_data.values()]))
    before = _fixed_batch_losses(model, task_data)
    result = train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    after = _fixed_batch_losses(result.model, result.task_data)
    for name in tasks:
        # Every task's held-fixed training batches must get clearly more likely (≥ 10% lower NLL).
        assert after[name] < 0.9 * before[name], f"{name}: loss {before[name]:.3f} -> {after[name]:.3f}"


def test_single_batch_can_be_overfit(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=numbers_en_de", "data.train_size=8", "data.batch_size=8",
               "model.dropout=0.0", "model.label_smoothing=0.0", "train.learning_rate=1e-2",
               "train.warmup_steps=10", "train.steps=150")
    task_data = load_task_data(cfg, log=lambda _m: None)
    tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer)
    td = task_data["numbers_en_de"]
    batch = td.collate(list(td.train))
    torch.manual_seed(0)
    model = MultiModel(cfg.model, tokenizer.vocab_size, ["text"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    kwargs = dict(input_modality="text", target_modality="text", task_token="To-German")
    first = None
    for _ in range(cfg.train.steps):
        out = model(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
        first = first if first is not None else float(out.loss.loss.detach())
        opt.zero_grad()
        (out.loss.loss + out.aux_loss).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
    assert float(out.loss.loss) < 0.05 * first
    assert int(out.loss.correct) == int(out.loss.count)


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "multimodel", *args], cwd=tmp_cwd(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def tmp_cwd() -> str:
    return str(REPO)


RESUME_ARGS = ["data.tasks=digits,numbers_en_fr", "data.train_size=64", "train.steps=40",
               "train.checkpoint_every=4", "train.keep_checkpoints=3", "train.warmup_steps=5"]


def test_resume_after_sigkill_ends_with_identical_weights(tmp_path):
    data = f"data.data_dir={str(tmp_path / 'data')!r}"
    base = ["train", "--config", str(TINY), "--no-eval", "--no-progress"]
    ref = _run_cli(base + ["--run-dir", str(tmp_path / "ref"), data, *RESUME_ARGS])
    victim = _run_cli(base + ["--run-dir", str(tmp_path / "victim"), data, *RESUME_ARGS])
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline:
        found = ckpt.list_checkpoints(tmp_path / "victim" / "checkpoints")
        if found and int(found[-1].name.split("-")[1]) >= 8:
            victim.send_signal(signal.SIGKILL)
            killed_at = int(found[-1].name.split("-")[1])
            break
        if victim.poll() is not None:
            break
        time.sleep(0.02)
    victim.wait()
    assert killed_at is not None and killed_at < 40, "the run ended before it could be killed"
    assert victim.returncode == -signal.SIGKILL
    resumed = subprocess.run([sys.executable, "-m", "multimodel", "train", "--run-dir", str(tmp_path / "victim"),
                              "--resume", "--no-eval", "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout
    assert ref.wait(timeout=240) == 0, ref.stdout.read()
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "victim")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_with_a_different_model_config_is_refused(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=4", "train.checkpoint_every=2")
    train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    other = apply_overrides(cfg, ["model.hidden_size=48"])
    with pytest.raises(TrainingError, match="model.hidden_size"):
        train(other, tmp_path / "run", resume=True, log=lambda _m: None, progress=False)
    # Extending the number of steps is allowed and continues from step 4.
    longer = apply_overrides(cfg, ["train.steps=6"])
    result = train(longer, tmp_path / "run", resume=True, log=lambda _m: None, progress=False)
    assert result.step == 6


def test_a_task_with_fewer_examples_than_a_batch_is_said_not_hidden(tmp_path):
    """The stream caps such a task's batch at its training set; the log says so, with both sizes."""
    said = []
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=20", "data.batch_size=32", "train.steps=1")
    train(cfg, tmp_path / "run", log=said.append, progress=False)
    assert any("task digits has 20 training examples, fewer than a batch of 32: every batch holds all 20" in line
               for line in said), said


def test_a_fresh_start_in_an_earlier_run_is_refused_unless_it_overwrites(tmp_path):
    """Mixing runs once left the old run's higher-numbered checkpoints as the "newest" ones:
    keep-last-N deleted the new run's, so its directory held another model than it reported."""
    quiet = lambda _m: None  # noqa: E731
    run = tmp_path / "run"
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=6", "train.checkpoint_every=2")
    train(cfg, run, log=quiet, progress=False)
    old = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    shorter = apply_overrides(cfg, ["train.steps=3"])
    with pytest.raises(TrainingError, match=r"already holds a run .*--resume.*--overwrite"):
        train(shorter, run, log=quiet, progress=False)
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == old  # nothing touched

    messages: list[str] = []
    result = train(shorter, run, overwrite=True, log=messages.append, progress=False)
    assert result.step == 3 and any("--overwrite: deleted" in m for m in messages)
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-0000002", "step-0000003"]
    steps = [json.loads(line).get("step") for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps and max(s for s in steps if s is not None) <= 3  # only the new run's records
    with pytest.raises(ValueError, match="exclude each other"):
        train(shorter, run, resume=True, overwrite=True, log=quiet, progress=False)


def test_resume_without_a_checkpoint_starts_fresh_with_fresh_logs(tmp_path):
    """An attempt that died before its first checkpoint leaves only logs; resuming starts over."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 50, "loss/digits": 9.0}\n')
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=2", "train.log_every=1")
    messages: list[str] = []
    result = train(cfg, run, resume=True, log=messages.append, progress=False)
    assert result.step == 2 and any("nothing to resume" in m for m in messages)
    steps = [json.loads(line).get("step") for line in (run / "log.jsonl").read_text().splitlines()]
    assert 50 not in steps and 2 in steps


@pytest.mark.filterwarnings("error:Detected call of `lr_scheduler:UserWarning")  # skipped first steps: no warning
def test_nonfinite_losses_are_skipped_then_abort(tmp_path, monkeypatch):
    """Steps with a non-finite loss leave the weights alone (skipped on the device, no host read
    per step); the log line reports them, and ``train.max_bad_steps`` in a row stop the run."""
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=20", "train.max_bad_steps=3",
               "train.log_every=2")
    original = MultiModel.forward
    poisoned_steps = {2, 3}  # 0-based calls (steps 3 and 4); then every call from 6 on (steps 7, 8, ...)
    calls = []

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if len(calls) in poisoned_steps or len(calls) >= 6:
            out.loss.loss = out.loss.loss * float("nan")
        calls.append(1)
        return out

    monkeypatch.setattr(MultiModel, "forward", poisoned)
    messages = []
    weights = []
    original_step = torch.optim.Adam.step

    def record_weights(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        weights.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", record_weights)
    with pytest.raises(TrainingError, match="4 consecutive non-finite"):  # steps 7-10, seen at step 10's log line
        train(cfg, tmp_path / "run", log=messages.append, progress=False)
    # Steps 3 and 4 (1-based) were skipped: the weights after them equal those after step 2.
    for later in (weights[2], weights[3]):
        assert all(torch.equal(a, b) for a, b in zip(weights[1], later))
    assert not all(torch.equal(a, b) for a, b in zip(weights[3], weights[4]))  # step 5 updated
    assert all(torch.isfinite(p).all() for p in weights[-1])
    skipped = [m for m in messages if "skipped for a non-finite loss or gradient" in m]
    assert [m.split(":")[0] for m in skipped] == ["step 4", "step 8", "step 10"]
    assert all(" 2 step(s)" in m for m in skipped)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records if r.get("event") == "nonfinite"] == [{"digits": 2}] * 3


def test_cli_errors_are_one_line(tmp_path):
    bad_key = subprocess.run([sys.executable, "-m", "multimodel", "train", "--config", str(TINY), "--run-dir",
                              str(tmp_path / "r"), "model.hiden_size=3"], cwd=REPO, capture_output=True, text=True)
    assert bad_key.returncode == 2
    assert "hiden_size" in bad_key.stderr and "Traceback" not in bad_key.stderr
    bad_task = subprocess.run([sys.executable, "-m", "multimodel", "train", "--config", str(TINY), "--run-dir",
                               str(tmp_path / "r"), "data.tasks=imagenet_full"], cwd=REPO, capture_output=True,
                              text=True)
    assert bad_task.returncode == 2
    assert "imagenet_full" in bad_task.stderr and "known tasks" in bad_task.stderr
    assert "Traceback" not in bad_task.stderr
    no_ckpt = subprocess.run([sys.executable, "-m", "multimodel", "eval", str(tmp_path / "nothing")], cwd=REPO,
                             capture_output=True, text=True)
    assert no_ckpt.returncode == 2 and "no checkpoint" in no_ckpt.stderr


def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path):
    data = f"data.data_dir={str(tmp_path / 'data')!r}"
    proc = _run_cli(["train", "--config", str(TINY), "--no-eval", "--no-progress", "--run-dir", str(tmp_path / "run"),
                     data, "data.tasks=digits", "data.train_size=32", "train.steps=100000",
                     "train.checkpoint_every=1000"])
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "log.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    found = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert found, output
    assert "continue with --resume" in output
    step = int(found[-1].name.split("-")[1])
    assert 0 < step < 100000


def test_evaluation_is_deterministic(tmp_path):
    from multimodel.training.run import evaluate_checkpoint

    cfg = tiny(tmp_path, "data.tasks=digits,numbers_fr_en", "data.train_size=32", "data.eval_size=8",
               "train.steps=6")
    train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    for beam_size in (None, 1):  # the config's beam (4), then greedy
        first = [r.to_json() for r in evaluate_checkpoint(tmp_path / "run", beam_size=beam_size, log=lambda _m: None)]
        second = [r.to_json() for r in evaluate_checkpoint(tmp_path / "run", beam_size=beam_size, log=lambda _m: None)]
        for a, b in zip(first, second, strict=True):
            a.pop("seconds"), b.pop("seconds")
            assert a == b


def test_eval_replaces_the_run_s_decoding_settings_only_when_asked(tmp_path, monkeypatch):
    """``multimodel eval --beam-size / --length-penalty``: the run's saved values by default,
    the given ones otherwise; an out-of-range α is the config's one-line error."""
    from multimodel.config import ConfigError
    from multimodel.training import run as run_module

    cfg = tiny(tmp_path, "data.tasks=numbers_fr_en", "data.train_size=16", "data.eval_size=4", "train.steps=2",
               "train.length_penalty=0.8")
    train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    used = []
    monkeypatch.setattr(run_module, "evaluate_all",
                        lambda *args, **kwargs: used.append((args[3].train.beam_size, args[3].train.length_penalty)) or [])
    quiet = dict(log=lambda _m: None, blind_control=False)
    run_module.evaluate_checkpoint(tmp_path / "run", **quiet)
    run_module.evaluate_checkpoint(tmp_path / "run", beam_size=2, length_penalty=1.5, **quiet)
    assert used == [(cfg.train.beam_size, 0.8), (2, 1.5)]
    with pytest.raises(ConfigError, match="train.length_penalty must be >= 0"):
        run_module.evaluate_checkpoint(tmp_path / "run", length_penalty=-1.0, **quiet)


def test_time_budget_stops_early_with_a_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=100000",
               "train.time_budget_minutes=0.002", "train.checkpoint_every=100000")
    messages = []
    result = train(cfg, tmp_path / "run", log=messages.append, progress=False)
    assert 0 < result.step < 100000
    assert any("time budget" in m for m in messages)
    assert ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1].name == f"step-{result.step:07d}"


def test_evaluation_during_training_is_logged_and_changes_nothing(tmp_path):
    """``train.eval_every`` logs every task's held-out metrics at those steps, and the run ends
    with exactly the weights of the same run without mid-run evaluation (dropout and the MoE
    gate noise draw from the RNG, so a disturbed RNG state would show)."""
    import json

    base = ["data.tasks=digits,numbers_fr_en", "data.train_size=32", "data.eval_size=8", "train.steps=6",
            "train.checkpoint_every=100"]
    quiet = lambda _m: None  # noqa: E731
    train(tiny(tmp_path, *base), tmp_path / "plain", log=quiet, progress=False)
    messages: list[str] = []
    train(tiny(tmp_path, *base, "train.eval_every=2"), tmp_path / "evaluated", log=messages.append,
          progress=False)

    records = [json.loads(line) for line in (tmp_path / "evaluated" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]  # not at the last step: the final evaluation follows
    for r in evals:
        assert 0 <= r["eval/digits/accuracy"] <= 100 and "eval/numbers_fr_en/bleu" in r
        assert r["eval/numbers_fr_en/log_perplexity"] > 0
    assert any("step 2: evaluated 2 tasks" in m for m in messages)
    plain, evaluated = _weights(tmp_path / "plain"), _weights(tmp_path / "evaluated")
    assert plain.keys() == evaluated.keys()
    for name in plain:
        assert torch.equal(plain[name], evaluated[name]), name


def test_ctrl_c_lets_the_step_finish_then_checkpoints(tmp_path, monkeypatch):
    """A Ctrl-C that arrives in the middle of logging (where an immediate KeyboardInterrupt would
    leave TensorBoard's writer locked) is acted on at the end of the step: the log record is
    complete, the checkpoint is of that step, the interrupt then propagates, and the signal
    handlers are restored."""
    import multimodel.training.meters as train_module

    original = train_module.JsonlLogger.log
    logged_after_signal: list[int] = []

    def log_with_ctrl_c(self, record):
        if "loss" in record and not logged_after_signal:
            os.kill(os.getpid(), signal.SIGINT)
            original(self, record)
            logged_after_signal.append(record["step"])
        else:
            original(self, record)

    monkeypatch.setattr(train_module.JsonlLogger, "log", log_with_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=1000", "train.log_every=3",
               "train.checkpoint_every=1000")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    assert logged_after_signal == [3]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-0000003"]
    assert signal.getsignal(signal.SIGINT) is before


def test_a_time_budget_cools_the_learning_rate_down_before_it_stops(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=32", "train.steps=100000", "train.log_every=1",
               "train.time_budget_minutes=0.02", "train.cooldown_fraction=0.5", "train.warmup_steps=1",
               "train.checkpoint_every=100000")
    result = train(cfg, tmp_path / "run", log=lambda _m: None, progress=False)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "lr" in r]
    assert 0 < result.step < 100000 and len(lrs) == result.step
    peak = cfg.train.learning_rate
    # lrs[i] is the rate of step i + 2 (0-based i + 1), set with the clock read after step i + 1.
    # Steps alone would keep the cool-down factor at 1 (step / 100,000 is tiny); the clock ends it.
    assert lrs[1] == pytest.approx(peak * warmup_factor(2, 1))  # the default holds the peak
    assert lrs[-1] < 0.2 * peak * warmup_factor(result.step, 1)

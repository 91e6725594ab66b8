"""The joint training loop, written out (MultiModel section 3; tensor2tensor's trainer, made explicit).

Each step: pick a task (``multimodel.data.mixture``) → take that task's next batch → forward
through its modality nets and the shared body → label-smoothed loss + MoE balancing loss →
backward → clip → Adam step → noam schedule. Per task we keep running loss, per-token
accuracy, tokens/s and which experts its tokens were routed to.

A run directory holds everything needed to reproduce and resume the run: ``config.json``,
``log.jsonl``, TensorBoard events under ``tb/``, ``checkpoints/step-*/`` and, at the end,
``eval.json`` and ``routing.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.nn.parallel import DistributedDataParallel

from multimodel.config import Config, config_from_dict, to_dict
from multimodel.data.batching import Batch, TaskStream
from multimodel.data.mixture import TaskSampler, mixing_probabilities
from multimodel.data.tokenizer import Tokenizer
from multimodel.evaluation.evaluate import TaskResult, evaluate_task
from multimodel.layers.moe import MixtureOfExperts
from multimodel.model.multimodel import MultiModel
from multimodel.tasks import Task
from multimodel.training import checkpoint as ckpt
from multimodel.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from multimodel.training.optim import build_optimizer
from multimodel.tasks.task_data import (
    TaskData,
    attach_collators,
    build_tokenizer,
    load_task_data,
    modality_specs,
    task_weights,
)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says what to try."""


RUN_ARTIFACTS = ("checkpoints", "log.jsonl", "tb", "eval.json", "routing.json", "results.md")
"""What a run leaves in its directory besides ``config.json`` and ``tokenizer.model`` (which
every fresh start rewrites). A fresh start must not mix with them: keep-last-N would keep the
old run's higher-numbered checkpoints and delete the new run's, and the logs would interleave."""


def previous_run(run_dir: Path) -> list[Path]:
    """The artifacts of an earlier run in ``run_dir`` (empty for a new directory)."""
    return [run_dir / name for name in RUN_ARTIFACTS if (run_dir / name).exists()]


@dataclass
class TaskMeter:
    """Running sums for one task between two log lines."""

    steps: int = 0
    loss: float = 0.0
    aux: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    tokens: int = 0

    def add(self, loss: float, aux: float, correct: float, count: float, tokens: int) -> None:
        self.steps += 1
        self.loss += loss
        self.aux += aux
        self.correct += correct
        self.count += count
        self.tokens += tokens


@dataclass
class RoutingTotals:
    """Per (task, MoE layer): token-slots per expert and gate sums, summed over training."""

    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    gates: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, task: str, routing: dict[str, Any]) -> None:
        for layer, stats in routing.items():
            if stats is None:
                continue
            t = stats.tokens_per_expert.detach().float().cpu()
            g = stats.gate_sum_per_expert.detach().float().cpu()
            if layer in self.tokens[task]:
                self.tokens[task][layer] += t
                self.gates[task][layer] += g
            else:
                self.tokens[task][layer] = t.clone()
                self.gates[task][layer] = g.clone()

    def reduced(self, info: DistInfo) -> "RoutingTotals":
        """A copy summed over ranks (every rank trained the same tasks in the same order)."""
        out = RoutingTotals()
        for task in sorted(self.tokens):
            for layer in sorted(self.tokens[task]):
                out.tokens[task][layer] = all_reduce_sum(self.tokens[task][layer], info)
                out.gates[task][layer] = all_reduce_sum(self.gates[task][layer], info)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"tokens": {k: dict(v) for k, v in self.tokens.items()},
                "gates": {k: dict(v) for k, v in self.gates.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens = defaultdict(dict, {k: dict(v) for k, v in state["tokens"].items()})
        self.gates = defaultdict(dict, {k: dict(v) for k, v in state["gates"].items()})

    def to_json(self) -> dict[str, Any]:
        """task → layer → fraction of the task's token-slots per expert (and raw counts)."""
        out: dict[str, Any] = {}
        for task, layers in self.tokens.items():
            out[task] = {}
            for layer, counts in layers.items():
                total = float(counts.sum())
                out[task][layer] = {
                    "token_slots": counts.tolist(),
                    "fraction": (counts / total).tolist() if total > 0 else counts.tolist(),
                    "mean_gate": (self.gates[task][layer] / counts.clamp(min=1)).tolist(),
                }
        return out


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def model_inputs(batch: Batch, task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of MultiModel.forward for ``batch``."""
    return (batch.inputs, batch.input_mask, batch.targets, batch.target_mask), task.model_kwargs


class JsonlLogger:
    """Appends one JSON object per line; TensorBoard scalars alongside (main rank only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(run_dir / "tb"))
            except ImportError:  # tensorboard is a dependency; degrade to JSONL only if absent
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    model: MultiModel
    tokenizer: Tokenizer
    task_data: dict[str, TaskData]
    routing: RoutingTotals
    skipped_steps: int


def _check_resume_config(saved: Config, given: Config | None) -> Config:
    """On resume the checkpoint's config rules; only train.steps (and logging) may change."""
    if given is None:
        return saved
    changeable = {"steps", "time_budget_minutes", "log_every", "checkpoint_every", "keep_checkpoints",
                  "eval_every", "threads", "device", "beam_size", "length_penalty"}
    a, b = to_dict(saved), to_dict(given)
    diffs = []
    for section in ("model", "data", "train"):
        for key in a[section]:
            if section == "train" and key in changeable:
                continue
            if section == "data" and key in ("data_dir", "corpora_dir"):
                continue
            if a[section][key] != b[section][key]:
                diffs.append(f"{section}.{key}: checkpoint {a[section][key]!r} vs given {b[section][key]!r}")
    if diffs:
        raise TrainingError(
            "the given config differs from the checkpoint's (" + "; ".join(diffs[:4]) + ");"
            " resume without --config, or start a new --run-dir")
    merged = to_dict(saved)
    for key in changeable:
        merged["train"][key] = b["train"][key]
    merged["data"]["data_dir"] = b["data"]["data_dir"]
    merged["data"]["corpora_dir"] = b["data"]["corpora_dir"]
    return config_from_dict(merged)


def train(
    cfg: Config | None,
    run_dir: Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    stop_after: int | None = None,
    init_from: Path | None = None,
    overwrite: bool = False,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train jointly on ``cfg.data.tasks``; resume from ``run_dir`` when asked.

    Args:
        cfg: the run's config (None only with ``resume``: the checkpoint's config is used).
        run_dir: directory for logs and checkpoints.
        resume: continue from the newest checkpoint in ``run_dir``. Without one it starts
            fresh, deleting what an earlier attempt that never reached a checkpoint left
            (its logs would otherwise interleave with the new run's).
        log: where human-readable messages go.
        progress: show a progress bar.
        stop_after: stop (with a checkpoint) after this global step; for tests and debugging.
        init_from: a checkpoint (or run directory) whose weights and vocabulary a *fresh* run
            starts from, e.g. to add a task to a trained model (``multimodel experiment
            add-task``). Modules it lacks (the modality nets of new tasks) keep their random
            initialisation; optimiser and schedule start anew. Ignored when resuming.
        overwrite: start over in a ``run_dir`` that holds an earlier run, deleting its
            checkpoints, logs and results first. Without it (and without ``resume``) such a
            directory is refused.
        resume_from: resume from this checkpoint of ``run_dir`` instead of the newest intact
            one (implies ``resume``); the newer checkpoints are set aside as ``superseded-step-*``,
            so that resumption and retention follow the new branch.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run, or start it over")
    latest: Path | None = None
    stale = ckpt.remove_stale_temporaries(run_dir / "checkpoints")
    if stale:
        log(f"removed {len(stale)} half-written checkpoint folder(s) an interrupted save left: "
            + ", ".join(p.name for p in stale))
    if resume_from is not None:
        resume = True
        latest = ckpt.branch_from(run_dir / "checkpoints", Path(resume_from), warn=log)
        saved_cfg = config_from_dict(ckpt.read_meta(latest)["config"])
        cfg = _check_resume_config(saved_cfg, cfg)
    elif resume:
        latest = ckpt.newest_intact(run_dir / "checkpoints", warn=log)
        damaged = ckpt.damaged_checkpoints(run_dir / "checkpoints")
        if latest is None and damaged:  # never start over (deleting them) when the run had checkpoints
            raise TrainingError(
                f"{run_dir}: no intact checkpoint to resume from ({', '.join(p.name for p in damaged)} failed"
                " verification); start over with --overwrite, or restore a checkpoint from a backup")
        if latest is not None:
            saved_cfg = config_from_dict(ckpt.read_meta(latest)["config"])
            cfg = _check_resume_config(saved_cfg, cfg)
    if cfg is None:
        raise TrainingError(f"{run_dir}: nothing to resume and no --config given")
    previous = previous_run(run_dir) if latest is None else []
    if previous and not resume and not overwrite:
        raise TrainingError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in previous)}): continue it with"
            " --resume, start over with --overwrite (deletes those), or choose another --run-dir"
        )

    device = select_device(cfg.train.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    main = dist_info.is_main
    say = log if main else (lambda _msg: None)
    if previous and main:  # only with overwrite, or resume without a checkpoint
        for path in previous:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        why = "--overwrite" if overwrite else "nothing to resume (no checkpoint)"
        say(f"{why}: deleted the earlier run's {', '.join(p.name for p in previous)} in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.train.seed)
    task_data = load_task_data(cfg, log=say)
    init_ckpt = ckpt.resolve_checkpoint(Path(init_from)) if latest is None and init_from is not None else None
    if latest is not None:
        tokenizer = Tokenizer.from_bytes((latest / "tokenizer.model").read_bytes())
    elif init_ckpt is not None:  # the vocabulary is fixed by the run we start from
        tokenizer = Tokenizer.from_bytes((init_ckpt / "tokenizer.model").read_bytes())
    else:
        tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer, log=say)
    tasks = {name: td.task for name, td in task_data.items()}

    specs = modality_specs(list(tasks.values()))
    model = MultiModel(cfg.model, tokenizer.vocab_size, specs).to(device)
    if init_ckpt is not None:
        fresh = _init_weights_from(init_ckpt, model)
        say(f"initialised from {init_ckpt}; fresh modules: "
            + (", ".join(sorted({".".join(k.split(".")[:2]) for k in fresh})) or "none"))
    optimizer, scheduler = build_optimizer(model, cfg.train)
    sizes = {name: len(td.train) for name, td in task_data.items()}
    probs = mixing_probabilities(sizes, cfg.train.mixing, cfg.train.temperature, task_weights(cfg))
    sampler = TaskSampler(probs, cfg.data.seed)
    global_batch = cfg.data.batch_size * dist_info.world_size
    streams = {
        name: TaskStream(name, td.train, td.collate, global_batch, cfg.data.seed)
        for name, td in task_data.items()
    }
    routing = RoutingTotals()
    task_steps = {name: 0 for name in task_data}  # batches each task has drawn (skipped steps too)
    step = 0
    skipped_steps = 0
    if latest is not None:
        ckpt.load_weights(latest, model)
        state = ckpt.load_training_state(latest)
        meta = ckpt.read_meta(latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, s in meta["streams"].items():
            if name in streams:
                streams[name].load_state_dict(s)
        if main:  # rank 0 saved the totals reduced over ranks; the others start from zero
            routing.load_state_dict(state["routing"])
        skipped_steps = int(state.get("skipped_steps", 0))
        step = int(meta["step"])
        saved_steps = meta.get("task_steps")  # absent from checkpoints written before it was kept
        task_steps.update(saved_steps if saved_steps is not None else count_task_steps(sampler, task_steps, step))
        ckpt.set_rng_state(state["rng"])
        say(f"resumed from {latest} at step {step}")
    else:
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        (run_dir / "tokenizer.model").write_bytes(tokenizer.to_bytes())

    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e6:.2f}M parameters; modalities {specs}; device {device};"
        f" world size {dist_info.world_size}")
    say("task mixing: " + ", ".join(f"{k} {v:.2f}" for k, v in probs.items()))

    ddp_model: torch.nn.Module = model
    if dist_info.enabled:
        for module in model.modules():
            if isinstance(module, MixtureOfExperts):
                module.sync_statistics = True  # balance experts over the global batch
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)

    logger = JsonlLogger(run_dir, main)
    meters: dict[str, TaskMeter] = defaultdict(TaskMeter)
    bad_in_a_row = 0
    updated = False  # has this process taken an optimiser step yet (see advance_schedule)
    last_log_time = time.time()

    def save(at_step: int) -> Path | None:
        # Routing totals are saved summed over ranks (a collective: every rank calls save).
        routing_state = routing.reduced(dist_info).state_dict() if dist_info.enabled else routing.state_dict()
        if not main:
            return None
        meta = {
            "config": to_dict(cfg),
            "modality_specs": specs,
            "vocab_size": tokenizer.vocab_size,
            "tasks": list(tasks),
            "streams": {n: s.state_dict() for n, s in streams.items()},
            "task_steps": dict(task_steps),
            "multimodel_version": _version(),
        }
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "routing": routing_state,
            "skipped_steps": skipped_steps,
        }
        return ckpt.save_checkpoint(run_dir / "checkpoints", at_step, model=model, meta=meta,
                                    tokenizer_bytes=tokenizer.to_bytes(),
                                    training_state=training_state, keep=cfg.train.keep_checkpoints)

    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.steps, initial=step, desc="train", dynamic_ncols=True)

    # Ctrl-C (SIGINT) and SIGTERM (e.g. a scheduler pre-empting the job) ask the loop to stop:
    # it finishes the step it is in, writes a checkpoint and raises KeyboardInterrupt. Raising at
    # once instead would land anywhere (e.g. inside TensorBoard's writer while it holds the lock
    # that the clean-up then waits for forever). A second signal interrupts at once. Every rank
    # installs the handlers (torchrun forwards signals to all of them); in data-parallel runs
    # the ranks agree on the step to stop at.
    stop_signal: list[int] = []
    previous_handlers: dict[int, Any] = {}

    def _interrupt_now(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    def _request_stop(signum, frame):  # noqa: ARG001
        stop_signal.append(signum)
        for number in previous_handlers:
            signal.signal(number, _interrupt_now)

    for number in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if number is not None:
            try:
                previous_handlers[number] = signal.signal(number, _request_stop)
            except ValueError:  # not in the main thread: signals keep their handlers
                break

    model.train()
    budget_s = 60.0 * cfg.train.time_budget_minutes
    loop_start = time.time()
    try:
        while step < cfg.train.steps:
            name = sampler.task_at(step)
            task = tasks[name]
            batch = streams[name].next_batch()
            task_steps[name] += 1
            local = batch.shard(dist_info.rank, dist_info.world_size) if dist_info.enabled else batch
            local = local.to(device)
            args, kwargs = model_inputs(local, task)
            out = ddp_model(*args, **kwargs)
            task_loss = out.loss.loss
            if dist_info.enabled:
                # DDP averages gradients over ranks; weighting each rank's per-token mean by its
                # share of the global token count makes that average the global per-token mean.
                global_count = all_reduce_sum(out.loss.count.detach().float(), dist_info)
                task_loss = task_loss * (out.loss.count * dist_info.world_size / global_count)
            loss = task_loss + out.aux_loss
            finite = torch.isfinite(loss.detach()).float()
            finite = all_reduce_sum(finite, dist_info)
            if finite.item() < dist_info.world_size:
                # Skip the step on every rank; the batch is consumed so the data order stays fixed.
                optimizer.zero_grad(set_to_none=True)
                skipped_steps += 1
                bad_in_a_row += 1
                say(f"step {step}: non-finite loss on task {name}; step skipped ({bad_in_a_row} in a row)")
                logger.log({"step": step, "event": "nonfinite_loss", "task": name})
                if bad_in_a_row >= cfg.train.max_bad_steps:
                    raise TrainingError(
                        f"{bad_in_a_row} consecutive non-finite losses (last on task {name});"
                        " lower train.learning_rate or raise train.warmup_steps, then --resume")
                step += 1
                advance_schedule(scheduler, updated)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                skipped_steps += 1
                bad_in_a_row += 1
                say(f"step {step}: non-finite gradient on task {name}; step skipped")
                if bad_in_a_row >= cfg.train.max_bad_steps:
                    raise TrainingError(
                        f"{bad_in_a_row} consecutive non-finite gradients; lower train.learning_rate")
            else:
                optimizer.step()
                bad_in_a_row = 0
                updated = True
            advance_schedule(scheduler, updated)
            step += 1

            meters[name].add(out.loss.loss.item(), float(out.aux_loss.detach()), float(out.loss.correct),
                             float(out.loss.count), local.num_target_tokens())
            routing.add(name, out.routing)
            if bar is not None:
                bar.update(1)

            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                elapsed = time.time() - last_log_time
                last_log_time = time.time()
                record = _log_record(step, meters, elapsed, scheduler.get_last_lr()[0], dist_info)
                record.update({f"task_steps/{n}": c for n, c in task_steps.items()})
                logger.log(record)
                if bar is not None:
                    bar.set_postfix_str(" ".join(
                        f"{k[:10]}={record[f'loss/{k}']:.2f}" for k in sorted(meters) if f"loss/{k}" in record)
                        + f" tok/s={record['tokens_per_s']:.0f}")
                meters.clear()
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
                save(step)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps:
                if main:
                    logger.log(evaluate_during_training(model, task_data, tokenizer, cfg, step, say))
                barrier(dist_info)
            over_budget = budget_s > 0 and time.time() - loop_start > budget_s
            if dist_info.enabled and budget_s > 0:  # every rank stops at the same step
                over_budget = bool(all_reduce_sum(torch.tensor(float(over_budget)), dist_info).item() > 0)
            if over_budget and step < cfg.train.steps:
                say(f"\ntime budget of {cfg.train.time_budget_minutes:g} min reached at step {step}"
                    f" of {cfg.train.steps}; stopping")
                logger.log({"step": step, "event": "time_budget_reached"})
                if step % cfg.train.checkpoint_every != 0:
                    save(step)
                break
            stop = bool(stop_signal)
            if dist_info.enabled:
                stop = bool(all_reduce_sum(torch.tensor(float(stop)), dist_info).item() > 0)
            if stop:
                raise KeyboardInterrupt
            if stop_after is not None and step >= stop_after:
                if step % cfg.train.checkpoint_every != 0:
                    save(step)
                break
    except KeyboardInterrupt:
        path = save(step)
        say(f"\ninterrupted at step {step}; checkpoint written to {path}; continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
        barrier(dist_info)
    if dist_info.enabled:
        routing = routing.reduced(dist_info)
    if main:
        (run_dir / "routing.json").write_text(json.dumps(routing.to_json(), indent=1))
    if skipped_steps:
        say(f"{skipped_steps} steps were skipped for non-finite values (see log.jsonl)")
    shutdown(dist_info)
    model.eval()
    return TrainResult(run_dir, step, model, tokenizer, task_data, routing, skipped_steps)


def count_task_steps(sampler: TaskSampler, names: Iterable[str], steps: int) -> dict[str, int]:
    """Batches each task drew in global steps 0 … steps-1 (the sampler is a pure function of the step)."""
    counts = dict.fromkeys(names, 0)
    for s in range(steps):
        counts[sampler.task_at(s)] += 1
    return counts


def advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, updated: bool) -> None:
    """One step of the learning-rate schedule, taken after skipped updates too: the schedule
    follows the step count. Until the optimiser has taken a step (``updated``), torch warns
    that the schedule moved first, which is expected here when the very first steps are
    skipped; only then is that one warning silenced (``catch_warnings`` would otherwise reset
    the once-per-location record of every other warning on each call)."""
    if updated:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


CLASSIFICATION_EVAL_BATCH = 256
"""Examples per evaluation batch of a classification task: one forward pass, no decoding, so
a whole 10,000-image test set takes 40 batches."""


def evaluate_all(model: MultiModel, task_data: dict[str, TaskData], tokenizer: Tokenizer, cfg: Config,
                 log: Callable[[str], None] = print, num_shown: int = 1, *, blind_control: bool = False,
                 limit: int | None = None) -> list[TaskResult]:
    """Evaluate every task on its held-out examples with the config's batch size and decoding;
    one log line per task. ``num_shown`` example predictions are kept per task.

    ``blind_control`` adds each task's ``blind_<metric>`` scores (the model on inputs with their
    content removed; see :func:`~multimodel.evaluation.evaluate.evaluate_task`). ``limit``: use
    only the first ``limit`` held-out examples of each task (None or 0 = all)."""
    results = []
    for name, td in task_data.items():
        examples = td.test[:limit] if limit else td.test
        batch_size = max(cfg.data.batch_size, CLASSIFICATION_EVAL_BATCH if td.task.is_classification else 64)
        r = evaluate_task(model, td.task, examples, td.collate, tokenizer,
                          batch_size=batch_size, beam_size=cfg.train.beam_size,
                          length_penalty=cfg.train.length_penalty, num_shown=num_shown,
                          blind_control=blind_control, blind_seed=cfg.data.seed)
        log(f"eval {name}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.metrics.items())
            + f", per-token acc={r.token_accuracy:.1f}%, log-ppl={r.log_perplexity:.3f} ({r.seconds:.0f}s)")
        results.append(r)
    return results


def evaluate_during_training(model: MultiModel, task_data: dict[str, TaskData], tokenizer: Tokenizer,
                             cfg: Config, step: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Evaluate every task on its held-out examples mid-run; a log record of their metrics.

    Kept cheap: at most ``data.eval_size`` examples per task (``data.eval_sizes`` may load more
    for the final evaluation) and no blind control. The RNG state is put back afterwards and
    the model returned to training mode, so the run goes on exactly as it would have without
    this evaluation.
    """
    rng = ckpt.rng_state()
    start = time.time()
    results = evaluate_all(model, task_data, tokenizer, cfg, log=lambda _line: None, num_shown=0,
                           limit=cfg.data.eval_size)
    ckpt.set_rng_state(rng)
    model.train()
    record: dict[str, Any] = {"step": step, "event": "eval"}
    for r in results:
        record.update({f"eval/{r.task}/{metric}": float(value) for metric, value in r.metrics.items()})
        record[f"eval/{r.task}/token_accuracy"] = float(r.token_accuracy)
        record[f"eval/{r.task}/log_perplexity"] = float(r.log_perplexity)
    say(f"step {step}: evaluated {len(results)} tasks in {time.time() - start:.0f} s: " + ", ".join(
        f"{r.task} {metric}={value:.1f}" for r in results for metric, value in r.metrics.items()))
    return record


#: Model settings that change what the body computes; a run initialised from a checkpoint must
#: share them with it.
BODY_FIELDS = ("self_attention", "self_attention_residual", "encoder_timing_signal", "class_label_net",
               "use_attention", "use_moe")


def _init_weights_from(ckpt_dir: Path, model: MultiModel) -> list[str]:
    """Load the weights ``model`` shares with checkpoint ``ckpt_dir``; return the names left fresh."""
    from safetensors.torch import load_file

    # Weights alone cannot tell a body that computes differently with the same tensors (the
    # encoder's timing signal) or a part left fresh on purpose from one left fresh by accident.
    saved = ckpt.read_meta(ckpt_dir)["config"]["model"]  # upgraded to this format's fields
    differing = [k for k in BODY_FIELDS if saved.get(k) != getattr(model.config, k)]
    if differing:
        raise TrainingError(
            f"{ckpt_dir}: its model was built with " + ", ".join(f"model.{k}={saved.get(k)!r}" for k in differing)
            + "; set the same values to continue from it")
    state = load_file(str(ckpt_dir / "model.safetensors"))
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    bad_shapes = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if unexpected or bad_shapes:
        raise TrainingError(
            f"{ckpt_dir}: its weights do not fit this model (unexpected {unexpected[:3]}, shape"
            f" mismatch {bad_shapes[:3]}); the model config must match the checkpoint's")
    model.load_state_dict(state, strict=False)
    return sorted(set(own) - set(state))


def _log_record(step: int, meters: dict[str, TaskMeter], elapsed: float, lr: float,
                dist_info: DistInfo) -> dict[str, Any]:
    record: dict[str, Any] = {"step": step, "lr": lr, "time": time.time()}
    total_tokens = 0
    for name, m in meters.items():
        if m.steps == 0:
            continue
        record[f"loss/{name}"] = m.loss / m.steps
        record[f"aux_loss/{name}"] = m.aux / m.steps
        if m.count:
            record[f"accuracy/{name}"] = m.correct / m.count
        total_tokens += m.tokens
    record["tokens_per_s"] = total_tokens * dist_info.world_size / max(elapsed, 1e-9)
    losses = [v for k, v in record.items() if k.startswith("loss/")]
    record["loss"] = sum(losses) / len(losses) if losses else math.nan
    return record


def _version() -> str:
    from multimodel import __version__

    return __version__


def load_trained(path: Path, device: str | torch.device = "cpu") -> tuple[MultiModel, Tokenizer, dict[str, Any]]:
    """Load a model and its tokenizer from a checkpoint or run directory (for eval/predict)."""
    ckpt_dir = ckpt.resolve_checkpoint(Path(path))
    ckpt.verify(ckpt_dir)
    meta = ckpt.read_meta(ckpt_dir)
    try:
        cfg = config_from_dict(meta["config"])
    except Exception as err:
        raise ckpt.CheckpointError(f"{ckpt_dir / 'meta.json'}: config does not fit this multimodel ({err})") from None
    tok_path = ckpt_dir / "tokenizer.model"
    try:
        tokenizer = Tokenizer.from_bytes(tok_path.read_bytes())
    except FileNotFoundError:
        raise ckpt.CheckpointError(f"{tok_path}: missing; the checkpoint is incomplete") from None
    except Exception as err:
        raise ckpt.CheckpointError(f"{tok_path}: corrupt vocabulary ({err})") from None
    model = MultiModel(cfg.model, int(meta["vocab_size"]), list(meta["modality_specs"]))
    ckpt.load_weights(ckpt_dir, model)
    model.to(device).eval()
    meta["checkpoint_dir"] = str(ckpt_dir)
    meta["config_obj"] = cfg
    return model, tokenizer, meta


__all__ = ["train", "load_trained", "TrainingError", "TrainResult", "RoutingTotals"]

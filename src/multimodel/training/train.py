"""The joint training loop, written out (MultiModel section 3; tensor2tensor's trainer, made explicit).

:func:`setup` builds a :class:`TrainState` (data, vocabulary, model, optimiser, task sampler,
streams; restored from a checkpoint when resuming). :func:`train` then repeats: pick the
step's task (``multimodel.data.mixture``) → take that task's next batch →
:func:`~multimodel.training.step.train_step` → add its device-side statistics to the meters →
run the handlers whose interval has come: a log line (the only place statistics are read on
the host), a checkpoint, a mid-run evaluation, the time budget and stop requests.

A run directory holds everything needed to reproduce and resume the run: ``config.json``,
``log.jsonl``, TensorBoard events under ``tb/``, ``checkpoints/step-*/`` and, at the end,
``eval.json`` and ``routing.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from multimodel.config import Config, config_from_dict, to_dict
from multimodel.data.batching import TaskStream
from multimodel.data.mixture import TaskSampler, mixing_probabilities
from multimodel.data.tokenizer import Tokenizer
from multimodel.errors import UserError
from multimodel.evaluation.evaluate import evaluate_all
from multimodel.model.multimodel import MultiModel
from multimodel.tasks import Task
from multimodel.tasks.spec import complete_declared_tasks, task_specs
from multimodel.tasks.task_data import TaskData, attach_collators, build_tokenizer, load_task_data, \
    loss_multipliers, modality_specs, task_batch_sizes, task_weights
from multimodel.training import checkpoint as ckpt
from multimodel.training import full_state
from multimodel.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, launched_world_size, \
    select_device, shutdown
from multimodel.training.layout import Layout, apply_layout
from multimodel.training.meters import JsonlLogger, RoutingTotals, TaskMeters, log_record
from multimodel.training.optim import LearningRateSchedule, build_optimizer, schedule_for
from multimodel.training.signals import StopRequests
from multimodel.training.step import train_step


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says what to try."""


RUN_ARTIFACTS = ("checkpoints", "log.jsonl", "tb", "eval.json", "routing.json", "results.md")
"""What a run leaves in its directory besides ``config.json`` and ``tokenizer.model`` (which
every fresh start rewrites). A fresh start must not mix with them: keep-last-N would keep the
old run's higher-numbered checkpoints and delete the new run's, and the logs would interleave."""

#: Train settings a resumed run may change; everything else must match the checkpoint's config.
RESUMABLE_CHANGES = ("steps", "time_budget_minutes", "log_every", "checkpoint_every", "keep_checkpoints",
                     "eval_every", "threads", "device", "beam_size", "length_penalty", "expert_parallel", "shard",
                     "activation_checkpointing")


def previous_run(run_dir: Path) -> list[Path]:
    """The artifacts of an earlier run in ``run_dir`` (empty for a new directory)."""
    return [run_dir / name for name in RUN_ARTIFACTS if (run_dir / name).exists()]


@dataclass
class TrainResult:
    """A finished (or stopped) run: its directory, steps taken, trained model (eval mode),
    vocabulary, data, routing totals, skipped steps and config (the checkpoint's when resumed)."""

    run_dir: Path
    step: int
    model: MultiModel
    tokenizer: Tokenizer
    task_data: dict[str, TaskData]
    routing: RoutingTotals
    skipped_steps: int
    config: Config


@dataclass
class TrainState:
    """Everything a run holds between steps.

    Args:
        cfg: the run's config (the checkpoint's when resuming).
        run_dir: where logs and checkpoints go.
        dist_info: this process's place in a multi-rank run.
        device: where the model and batches live.
        model: the network (this rank's share of it in a sharded layout); ``ddp_model`` is
            what the step calls (the same model, or its DistributedDataParallel wrapper).
        tokenizer: the shared vocabulary.
        task_data: per task, its examples and collator.
        sampler: the task of each global step.
        streams: per task, its batches in their resumable order.
        step: global steps taken (skipped ones included).
        task_steps: batches each task has drawn.
        meters: per task statistics since the last log line (device).
        routing: per task routing totals over the run (device).
        skipped: () steps skipped for non-finite values over the run (device).
        bad_run: () consecutive skipped steps ending at the last step (device).
        worst_bad_run: () the longest such run since the last log line (device).
        train_seconds: wall-clock seconds spent training so far, over every resumption, without
            mid-run evaluations (what ``benchmarks/time_to_target.py`` reads).
        layout: where the parameters live (:mod:`multimodel.training.layout`).
        schedule: the learning-rate schedule ``scheduler`` follows; the loop tells it how much
            of the time budget has passed (:func:`stop_reason`).
        loss_multipliers: per task, the factor on its loss (``train.loss_multipliers``).
    """

    cfg: Config
    run_dir: Path
    dist_info: DistInfo
    device: torch.device
    model: MultiModel
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokenizer: Tokenizer
    task_data: dict[str, TaskData]
    sampler: TaskSampler
    streams: dict[str, TaskStream]
    step: int
    task_steps: dict[str, int]
    meters: TaskMeters
    routing: RoutingTotals
    skipped: torch.Tensor
    bad_run: torch.Tensor
    worst_bad_run: torch.Tensor
    train_seconds: float = 0.0
    layout: Layout = field(default_factory=Layout)
    schedule: LearningRateSchedule | None = None
    loss_multipliers: dict[str, float] = field(default_factory=dict)

    @property
    def tasks(self) -> dict[str, Task]:
        return {name: td.task for name, td in self.task_data.items()}

    @property
    def main(self) -> bool:
        return self.dist_info.is_main


def _check_resume_config(saved: Config, given: Config | None, saved_world: int | None = None,
                         world: int = 1, log: Callable[[str], None] = print) -> Config:
    """On resume the checkpoint's config rules; only :data:`RESUMABLE_CHANGES` (and the data
    folders) may differ, and the batch sizes: ``data.batch_size`` and each trained task's size
    (``data.task_batch_sizes``, or ``data.batch_size`` where it does not list the task) are the
    per-rank batches that keep every task's global batch on another number of ranks
    (``saved_world`` ranks wrote the checkpoint, ``world`` resume it). The resumed config lists
    a task's size only where it differs from ``data.batch_size``, and only the trained tasks'."""
    batch_size = _resumed_batch_size("data.batch_size", saved.data.batch_size, (given or saved).data.batch_size,
                                     saved_world, world, log)
    saved_data, given_data = saved.data, (given or saved).data
    task_sizes = {}
    for name in saved_data.tasks:  # a task neither lists follows data.batch_size, checked above
        if name not in saved_data.task_batch_sizes and name not in given_data.task_batch_sizes:
            continue
        size = _resumed_batch_size(f"data.task_batch_sizes.{name}",
                                   saved_data.task_batch_sizes.get(name, saved_data.batch_size),
                                   given_data.task_batch_sizes.get(name, given_data.batch_size), saved_world, world, log)
        if size != batch_size:
            task_sizes[name] = size
    if given is None:
        expert_parallel = math.gcd(saved.train.expert_parallel, world)  # the layout fits the new world
        if expert_parallel != saved.train.expert_parallel:
            log(f"resuming on {world} rank(s): train.expert_parallel {saved.train.expert_parallel} -> {expert_parallel}")
        return config_from_dict({**to_dict(saved),
                                 "data": {**to_dict(saved.data), "batch_size": batch_size, "task_batch_sizes": task_sizes},
                                 "train": {**to_dict(saved.train), "expert_parallel": expert_parallel}})
    a, b = to_dict(saved), to_dict(given)
    diffs = []
    for section in ("model", "data", "train"):
        for key in a[section]:
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if section == "data" and key in ("data_dir", "corpora_dir", "batch_size", "task_batch_sizes"):
                continue
            if a[section][key] != b[section][key]:
                diffs.append(f"{section}.{key}: checkpoint {a[section][key]!r} vs given {b[section][key]!r}")
    if diffs:
        raise TrainingError(
            "the given config differs from the checkpoint's (" + "; ".join(diffs[:4]) + ");"
            " resume without --config, or start a new --run-dir")
    merged = to_dict(saved)
    for key in RESUMABLE_CHANGES:
        merged["train"][key] = b["train"][key]
    decoding = [f"train.{key} {a['train'][key]} -> {b['train'][key]}" for key in ("beam_size", "length_penalty")
                if a["train"][key] != b["train"][key]]
    if decoding:  # the learning curve's later evaluations decode otherwise than its earlier ones
        log(f"resuming with another decoding at evaluation ({', '.join(decoding)}): evaluations logged from here"
            " on are not comparable with the earlier ones")
    merged["data"]["data_dir"] = b["data"]["data_dir"]
    merged["data"]["corpora_dir"] = b["data"]["corpora_dir"]
    merged["data"]["batch_size"] = batch_size
    merged["data"]["task_batch_sizes"] = task_sizes
    return config_from_dict(merged)


def _resumed_batch_size(key: str, saved: int, given: int, saved_world: int | None, world: int,
                        log: Callable[[str], None]) -> int:
    """The per-rank batch (the config's ``key``) of a resumed run: the one that keeps the
    checkpoint's global batch (the data streams count global batches). A checkpoint from before
    the world size was kept resumes with the per-rank batch it had."""
    if saved_world is None:
        saved_world = world
    total = saved * saved_world
    if given * world == total:
        return given
    if given == saved and total % world == 0:
        log(f"resuming on {world} rank(s) a run saved on {saved_world}: {key} {saved} -> {total // world}"
            f" per rank keeps the global batch of {total}")
        return total // world
    raise TrainingError(
        f"{key}={given} on {world} rank(s) is a global batch of {given * world}; the checkpoint's is"
        f" {total} ({saved} on {saved_world} rank(s)): resume with {key}={total / world:g} per rank"
        " (the number of ranks must divide it)")


def plan_run(cfg: Config | None, run_dir: Path, *, resume: bool, resume_from: Path | None, overwrite: bool,
             log: Callable[[str], None]) -> tuple[Config, Path | None, list[Path]]:
    """Decide how a run starts: its config, the checkpoint it resumes from (None for a fresh
    start) and the earlier run's artifacts a fresh start must delete first."""
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
    elif resume:
        latest = ckpt.newest_intact(run_dir / "checkpoints", warn=log)
        damaged = ckpt.damaged_checkpoints(run_dir / "checkpoints")
        if latest is None and damaged:  # never start over (deleting them) when the run had checkpoints
            raise TrainingError(
                f"{run_dir}: no intact checkpoint to resume from ({', '.join(p.name for p in damaged)} failed"
                " verification); start over with --overwrite, or restore a checkpoint from a backup")
    if cfg is not None:  # class names read from a declared task's data, as the checkpoint stores them
        cfg = complete_declared_tasks(cfg)
    if latest is not None:
        meta = ckpt.read_meta(latest)
        cfg = _check_resume_config(config_from_dict(meta["config"]), cfg, meta.get("world_size"),
                                   launched_world_size(), log)
    if cfg is None:
        raise TrainingError(f"{run_dir}: nothing to resume and no --config given")
    previous = previous_run(run_dir) if latest is None else []
    if previous and not resume and not overwrite:
        raise TrainingError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in previous)}): continue it with"
            " --resume, start over with --overwrite (deletes those), or choose another --run-dir"
        )
    return cfg, latest, previous


def setup(cfg: Config | None, run_dir: Path, *, resume: bool = False, resume_from: Path | None = None,
          overwrite: bool = False, init_from: Path | None = None,
          log: Callable[[str], None] = print) -> TrainState:
    """Build the state :func:`train` runs on (see :func:`train` for the arguments): join the
    process group, load every task's data, train or load the vocabulary, build the model,
    optimiser and streams, and restore them from a checkpoint when resuming."""
    run_dir = Path(run_dir)
    cfg, latest, previous = plan_run(cfg, run_dir, resume=resume, resume_from=resume_from, overwrite=overwrite,
                                     log=log)
    device = select_device(cfg.train.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    say = log if dist_info.is_main else (lambda _msg: None)
    if previous and dist_info.is_main:  # only with overwrite, or resume without a checkpoint
        for path in previous:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        why = "--overwrite" if overwrite else "nothing to resume (no checkpoint)"
        say(f"{why}: deleted the earlier run's {', '.join(p.name for p in previous)} in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.train.seed)
    task_data = load_task_data(cfg, log=say)
    init_ckpt = ckpt.resolve_checkpoint(Path(init_from)) if latest is None and init_from is not None else None
    vocabulary_from = latest or init_ckpt  # resuming, or starting from a trained model: its vocabulary
    if vocabulary_from is not None:
        tokenizer = Tokenizer.from_pretrained(vocabulary_from)
    else:
        tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer, log=say)
    specs = modality_specs([td.task for td in task_data.values()])
    model = _build_model(cfg, tokenizer, specs, init_ckpt, latest, say)
    parameters = sum(p.numel() for p in model.parameters())
    layout, step_module = apply_layout(model, cfg.train, dist_info, device)
    schedule = schedule_for(cfg.train)
    optimizer, scheduler = build_optimizer(model, cfg.train, schedule)
    sizes = {name: len(td.train) for name, td in task_data.items()}
    probs = mixing_probabilities(sizes, cfg.train.mixing, cfg.train.temperature, task_weights(cfg))
    batch_sizes = task_batch_sizes(cfg)  # per rank; the streams count global batches
    zero = torch.zeros((), device=device)
    state = TrainState(
        cfg=cfg, run_dir=run_dir, dist_info=dist_info, device=device, model=model,
        ddp_model=step_module, optimizer=optimizer, scheduler=scheduler,
        tokenizer=tokenizer, task_data=task_data, sampler=TaskSampler(probs, cfg.data.seed),
        streams={name: TaskStream(name, td.train, td.collate, batch_sizes[name] * dist_info.world_size,
                                  cfg.data.seed)
                 for name, td in task_data.items()},
        step=0, task_steps=dict.fromkeys(task_data, 0), meters=TaskMeters(), routing=RoutingTotals(),
        skipped=zero.clone(), bad_run=zero.clone(), worst_bad_run=zero.clone(), layout=layout,
        schedule=schedule, loss_multipliers=loss_multipliers(cfg))
    if latest is not None:
        _restore(state, latest)
        say(f"resumed from {latest} at step {state.step}")
    else:
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        (run_dir / "tokenizer.model").write_bytes(tokenizer.to_bytes())
    say(f"model: {parameters / 1e6:.2f}M parameters; modalities {specs}; device {device};"
        f" world size {dist_info.world_size}{_describe(layout)}")
    say("task mixing: " + ", ".join(f"{k} {v:.2f}" for k, v in probs.items()))
    if len(set(batch_sizes.values())) > 1:
        say("examples per batch and rank: " + ", ".join(f"{k} {v}" for k, v in batch_sizes.items()))
    for name, stream in state.streams.items():
        if stream.batch_size < batch_sizes[name] * dist_info.world_size:
            say(f"warning: task {name} has {len(stream.examples)} training examples, fewer than a batch of"
                f" {batch_sizes[name] * dist_info.world_size}: every batch holds all {stream.batch_size}")
    return state


def _build_model(cfg: Config, tokenizer: Tokenizer, specs: list[str], init_ckpt: Path | None, latest: Path | None,
                 say: Callable[[str], None]) -> MultiModel:
    """The whole network on the CPU: fresh, initialised from ``init_ckpt``, or with the weights
    of the checkpoint it resumes from (full in every layout; the layout takes its pieces)."""
    model = MultiModel(cfg.model, tokenizer.vocab_size, specs)
    if init_ckpt is not None:
        fresh = _init_weights_from(init_ckpt, model)
        say(f"initialised from {init_ckpt}; fresh modules: "
            + (", ".join(sorted({".".join(k.split(".")[:2]) for k in fresh})) or "none"))
    if latest is not None:
        ckpt.load_weights(latest, model)
    return model


def _describe(layout: Layout) -> str:
    shard = layout.expert_shard
    experts = "" if shard is None else f"; {shard.local} of {shard.num_experts} experts per rank (expert parallel {shard.size})"
    return experts + ("; dense parameters sharded (FSDP)" if layout.fsdp else "")


def _restore(state: TrainState, latest: Path) -> None:
    """Optimiser, schedule, stream positions, counters and RNG from checkpoint ``latest`` (the
    weights were loaded into the full model before the layout took its pieces)."""
    saved = ckpt.load_training_state(latest)
    meta = ckpt.read_meta(latest)
    full_state.load_optimizer(state.optimizer, state.model, state.layout, state.cfg.train, saved["optimizer"])
    full_state.load_scheduler(state.scheduler, state.optimizer, state.model, state.cfg.train, saved["scheduler"])
    for name, position in meta["streams"].items():
        if name in state.streams:
            state.streams[name].load_state_dict(position)
    if state.main:  # rank 0 saved the totals reduced over ranks; the others start from zero
        state.routing.load_state_dict(saved["routing"])
    state.skipped.fill_(int(saved.get("skipped_steps", 0)))
    state.step = int(meta["step"])
    state.train_seconds = float(meta.get("train_seconds", 0.0))  # absent before it was kept
    saved_steps = meta.get("task_steps")  # absent from checkpoints written before it was kept
    state.task_steps.update(saved_steps if saved_steps is not None else state.sampler.counts(state.step))
    ckpt.set_rng_state(saved["rng"])


def save(state: TrainState) -> Path | None:
    """Write a checkpoint of ``state`` (main rank; a collective: every rank calls it). In a
    sharded layout the full weights and optimiser state are gathered first, so the checkpoint
    is the one a single process would write (:mod:`multimodel.training.full_state`)."""
    routing = state.routing.reduced(state.dist_info) if state.dist_info.enabled else state.routing
    layout, train_cfg = state.layout, state.cfg.train
    weights = full_state.full_weights(state.model, layout) if layout.sharded else None
    optimizer = full_state.full_optimizer_state(state.optimizer, state.model, layout, train_cfg)
    if not state.main:
        return None
    meta = {
        "config": to_dict(state.cfg),
        "modality_specs": state.model.modality_specs,
        "vocab_size": state.tokenizer.vocab_size,
        "tasks": list(state.task_data),
        "task_specs": task_specs([td.task for td in state.task_data.values()]),
        "streams": {n: s.state_dict() for n, s in state.streams.items()},
        "task_steps": dict(state.task_steps),
        "train_seconds": state.train_seconds,
        "world_size": state.dist_info.world_size,
        "multimodel_version": _version(),
    }
    training_state = {
        "optimizer": optimizer,
        "scheduler": full_state.full_scheduler_state(state.scheduler, state.optimizer, state.model, train_cfg),
        "rng": ckpt.rng_state(),
        "routing": routing.state_dict(),
        "skipped_steps": int(state.skipped),
    }
    model = state.model if weights is None else full_state.model_with(state.model, weights, materialise=False)
    return ckpt.save_checkpoint(state.run_dir / "checkpoints", state.step, model=model, meta=meta,
                                tokenizer_bytes=state.tokenizer.to_bytes(), training_state=training_state,
                                keep=train_cfg.keep_checkpoints)


def full_model(state: TrainState) -> MultiModel | None:
    """The whole trained network on the main rank (None on the others): ``state.model``
    itself, or in a sharded layout a copy gathered onto the CPU. A collective."""
    if not state.layout.sharded:
        return state.model if state.main else None
    weights = full_state.full_weights(state.model, state.layout)
    return None if weights is None else full_state.model_with(state.model, weights, materialise=True)


def take_step(state: TrainState) -> str:
    """One global step: the step's task, its next batch, :func:`train_step`, the meters.
    Returns the task's name."""
    name = state.sampler.task_at(state.step)
    batch = state.streams[name].next_batch()
    state.task_steps[name] += 1
    info = state.dist_info
    local = batch.shard(info.rank, info.world_size) if info.enabled else batch
    stats = train_step(state.ddp_model, state.optimizer, state.scheduler, local.to(state.device),
                       state.task_data[name].task.model_kwargs, grad_clip=state.cfg.train.grad_clip, dist_info=info,
                       layout=state.layout, precision=state.cfg.train.precision,
                       loss_multiplier=state.loss_multipliers.get(name, 1.0),
                       normalize_gradients=state.cfg.train.normalize_gradients)
    state.step += 1
    state.meters.add(name, stats)
    state.routing.add(name, stats.routing)
    state.skipped += stats.skipped
    state.bad_run = (state.bad_run + 1) * stats.skipped
    state.worst_bad_run = torch.maximum(state.worst_bad_run, state.bad_run)
    return name


def log_line(state: TrainState, logger: JsonlLogger, elapsed: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Read the meters (the step's only host reads), report skipped steps, write the log line;
    raise when ``train.max_bad_steps`` steps in a row were skipped."""
    totals = state.meters.read()
    worst = int(state.worst_bad_run)
    state.meters.clear()
    state.worst_bad_run.zero_()
    skipped = {name: t.skipped for name, t in totals.items() if t.skipped}
    if skipped:
        say(f"step {state.step}: {sum(skipped.values())} step(s) since the last log line skipped for a"
            f" non-finite loss or gradient (" + ", ".join(f"{n}: {c}" for n, c in skipped.items()) + ")")
        logger.log({"step": state.step, "event": "nonfinite", "skipped": skipped})
    if worst >= state.cfg.train.max_bad_steps:
        raise TrainingError(
            f"{worst} consecutive non-finite losses or gradients (tasks {', '.join(skipped)});"
            " lower train.learning_rate or raise train.warmup_steps, then --resume")
    record = log_record(state.step, totals, elapsed, state.scheduler.get_last_lr()[0], state.dist_info.world_size)
    record["train_seconds"] = state.train_seconds
    record.update({f"task_steps/{n}": c for n, c in state.task_steps.items()})
    logger.log(record)
    return record


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


def stop_reason(state: TrainState, stops: StopRequests, started: float, at_log: bool) -> str | None:
    """"signal" after Ctrl-C/SIGTERM, "budget" once ``train.time_budget_minutes`` have passed,
    else None; also tells the learning-rate schedule how much of the budget has passed (its
    cool-down follows the clock). A data-parallel run agrees on all three at log lines only (all
    ranks stop at the same step and keep the same learning rate, without a collective every
    step): the ranks' mean elapsed time."""
    budget_s = 60.0 * state.cfg.train.time_budget_minutes
    fraction = (time.time() - started) / budget_s if budget_s > 0 else 0.0
    requested = stops.requested
    if state.dist_info.enabled:
        if not at_log:
            return None
        flags = torch.tensor([float(requested), fraction], device=state.device)
        total_requested, total_fraction = all_reduce_sum(flags, state.dist_info).tolist()
        requested, fraction = total_requested > 0, total_fraction / state.dist_info.world_size
    if state.schedule is not None:
        state.schedule.clock_progress = fraction
    if requested:
        return "signal"
    return "budget" if fraction > 1 else None


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
    state = setup(cfg, Path(run_dir), resume=resume, resume_from=resume_from, overwrite=overwrite,
                  init_from=init_from, log=log)
    say = log if state.main else (lambda _msg: None)
    logger = JsonlLogger(state.run_dir, state.main)
    bar = _progress_bar(state) if progress and state.main else None
    state.model.train()
    try:
        with StopRequests() as stops:
            _loop(state, logger, bar, stops, say, stop_after)
    except KeyboardInterrupt:
        path = save(state)
        say(f"\ninterrupted at step {state.step}; checkpoint written to {path}; continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        barrier(state.dist_info)
    return _finish(state, say)


def _loop(state: TrainState, logger: JsonlLogger, bar: Any, stops: StopRequests, say: Callable[[str], None],
          stop_after: int | None) -> None:
    """Steps and their handlers until ``train.steps``, the time budget, a stop request or ``stop_after``."""
    train_cfg = state.cfg.train
    started = tick = time.time()
    logged_at = state.train_seconds
    while state.step < train_cfg.steps:
        take_step(state)
        now = time.time()
        state.train_seconds += now - tick  # this step, and the last one's log line and checkpoint
        tick = now
        step, last = state.step, state.step == train_cfg.steps
        if bar is not None:
            bar.update(1)
        at_log = step % train_cfg.log_every == 0 or last
        if at_log:
            record = log_line(state, logger, state.train_seconds - logged_at, say)
            logged_at = state.train_seconds
            if bar is not None:
                bar.set_postfix_str(" ".join(f"{k[:10]}={record[f'loss/{k}']:.2f}" for k in sorted(state.task_data)
                                             if f"loss/{k}" in record) + f" tok/s={record['tokens_per_s']:.0f}")
        saved = step % train_cfg.checkpoint_every == 0 or last
        if saved:
            save(state)
        if train_cfg.eval_every and step % train_cfg.eval_every == 0 and not last:
            model = full_model(state)  # a gathered copy in a sharded layout
            if model is not None:
                record = evaluate_during_training(model, state.task_data, state.tokenizer, state.cfg, step, say)
                logger.log({**record, "train_seconds": state.train_seconds})
            barrier(state.dist_info)
            tick = time.time()  # evaluation is not training time
        reason = stop_reason(state, stops, started, at_log)
        if reason == "signal":
            raise KeyboardInterrupt
        if reason == "budget" and not last:
            say(f"\ntime budget of {train_cfg.time_budget_minutes:g} min reached at step {step}"
                f" of {train_cfg.steps}; stopping")
            logger.log({"step": step, "event": "time_budget_reached"})
        if (reason == "budget" or (stop_after is not None and step >= stop_after)) and not last:
            if not saved:
                save(state)
            return


def _progress_bar(state: TrainState) -> Any:
    from tqdm import tqdm

    return tqdm(total=state.cfg.train.steps, initial=state.step, desc="train", dynamic_ncols=True)


def _finish(state: TrainState, say: Callable[[str], None]) -> TrainResult:
    """Write ``routing.json``, leave the process group, return the trained model in eval mode."""
    routing = state.routing.reduced(state.dist_info) if state.dist_info.enabled else state.routing
    if state.main:
        (state.run_dir / "routing.json").write_text(json.dumps(routing.to_json(), indent=1))
    skipped = int(state.skipped)
    if skipped:
        say(f"{skipped} steps were skipped for non-finite values (see log.jsonl)")
    model = full_model(state) if state.layout.sharded else state.model  # the other ranks keep their pieces
    shutdown(state.dist_info)
    model = state.model if model is None else model
    model.eval()
    return TrainResult(state.run_dir, state.step, model, state.tokenizer, state.task_data, routing, skipped,
                       state.cfg)


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


def _version() -> str:
    from multimodel import __version__

    return __version__


__all__ = ["train", "setup", "take_step", "save", "TrainState", "TrainingError", "TrainResult"]

"""Experiment grids: one training run per (arm, seed), matched compute, resumable, summarised.

The paper's research questions (section 4, Tables 2–4) each compare *arms* — the joint model
against single-task models, the full model against ablations, parsing alone against parsing
with other tasks. An experiment here is a :class:`Plan`: a list of :class:`RunSpec`, one fully
resolved :class:`~multimodel.config.Config` per (arm, seed), trained into
``OUT/runs/<arm>-s<seed>/`` by the ordinary trainer and evaluated by the ordinary evaluator.

*Matched compute* is stated per task: the trainer picks the task of step ``s`` as a pure
function of (data seed, s) (:mod:`multimodel.data.mixture`), so the number of optimiser steps
every task receives in a run is known before the run starts (:func:`task_step_counts`). The
experiments use it to give a task the same number of steps in every arm; each ``results.md``
prints the steps every arm gave every task.

*Resumption*: a run with ``eval.json`` is finished and never retrained (its saved config must
match the plan's, else the grid stops rather than mix two settings); an unfinished run is
continued with ``train(..., resume=True)`` from its newest checkpoint (or restarted if it had
none). Re-running the same command after an interruption therefore finishes the grid.

*Matched schedules* (``schedule="matched"``, the default of every plan): the learning rate
follows the trainer's *global* step (warm-up, then constant or 1/√step, then any cool-down;
:class:`~multimodel.training.optim.LearningRateSchedule`),
so an arm with fewer global steps — a single-task run given the steps its task had in the
joint run — would spend a larger share of its task's steps in warm-up than the joint run
does, which favours the joint arm early. Either shape depends only on ``s / w`` (and the
cool-down only on ``s / steps``), so
:func:`matched_schedule` scales an arm's ``train.warmup_steps`` by (its steps / the reference
arm's steps): each task then sees about the same learning rate after the same number of its
own steps in every arm (:func:`schedule_mismatch` measures how closely). The reference arm
of each experiment (the one that runs ``train.steps``, e.g. the joint run) keeps the config's
warm-up. ``schedule="global"`` keeps every arm's warm-up as configured (the earlier behaviour).

*Blind controls*: every run is evaluated with the blind control (``blind_<metric>`` in its
``eval.json``), so a report can check that each task learned from its input in every arm.

*Seeds*: seed index ``i`` adds ``i`` to ``train.seed`` (initialisation, dropout, MoE noise) and,
unless ``vary_data_seed=False``, to ``data.seed`` (built-in corpus generation, data order and
task order).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from multimodel.config import Config, ConfigError, apply_overrides, to_dict
from multimodel.corpora.cache import write_atomically
from multimodel.data.mixture import TaskSampler, mixing_probabilities
from multimodel.evaluation.evaluate import METRIC_LABELS
from multimodel.tasks import get_task

Log = Callable[[str], None]

#: Train settings that do not change what a finished run computed.
_HARMLESS = {("data", "data_dir"), ("data", "corpora_dir"), ("train", "threads"), ("train", "device"),
             ("train", "log_every"), ("train", "checkpoint_every"),
             ("train", "keep_checkpoints")}

#: The three numbers of the paper's Tables 2–4, per task.
MEASURES = ("metric", "token_accuracy", "log_perplexity")
MEASURE_LABELS = {"token_accuracy": "per-token acc %", "log_perplexity": "log-perplexity"}


@dataclass(frozen=True)
class Arm:
    """One setting of an experiment.

    Args:
        name: run-directory prefix (``single-digits`` → ``runs/single-digits-s0``).
        column: the table column the arm's numbers go to (several single-task arms share one).
        tasks: the tasks it trains on.
        overrides: extra ``section.key=value`` overrides (e.g. ``model.use_moe=false``).
    """

    name: str
    column: str
    tasks: tuple[str, ...]
    overrides: tuple[str, ...] = ()


@dataclass
class RunSpec:
    """One training run of a grid: an arm at one seed, with its resolved config.

    Args:
        arm: the arm.
        seed_index: 0, 1, ... (run directory suffix ``-s<seed_index>``).
        cfg: the full config the run trains with.
        task_steps: optimiser steps each task gets (from the deterministic task schedule).
        probabilities: the task-mixing probabilities of the run.
        init_from: name of the arm whose run at the same seed this one starts from (add-task).
    """

    arm: Arm
    seed_index: int
    cfg: Config
    task_steps: dict[str, int]
    probabilities: dict[str, float]
    init_from: str | None = None

    @property
    def name(self) -> str:
        return f"{self.arm.name}-s{self.seed_index}"


@dataclass
class Plan:
    """An experiment: its runs, how to lay out its table, and what it asks.

    Args:
        experiment: command name (``joint-vs-single`` ...).
        title: heading of ``results.md``.
        question: the research question, in a sentence.
        specs: the runs, in execution order (a run's ``init_from`` comes before it).
        columns: table columns, in order.
        tasks: table rows, in order.
        notes: lines stating how compute was matched and any choices made.
    """

    experiment: str
    title: str
    question: str
    specs: list[RunSpec]
    columns: list[str]
    tasks: list[str]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# Configs of arms and seeds.


def with_tasks(cfg: Config, tasks: Sequence[str], *, steps: int | None = None,
               overrides: Sequence[str] = ()) -> Config:
    """``cfg`` training on ``tasks`` only (per-task sizes and weights of other tasks dropped)."""
    data = dataclasses.replace(
        cfg.data, tasks=tuple(tasks),
        task_sizes={k: v for k, v in cfg.data.task_sizes.items() if k in tasks},
        eval_sizes={k: v for k, v in cfg.data.eval_sizes.items() if k in tasks})
    train = dataclasses.replace(
        cfg.train, steps=cfg.train.steps if steps is None else int(steps),
        task_weights={k: v for k, v in cfg.train.task_weights.items() if k in tasks})
    out = dataclasses.replace(cfg, data=data, train=train)
    return apply_overrides(out, list(overrides)) if overrides else out


#: How arms' learning-rate schedules relate (see the module docstring).
SCHEDULES = ("matched", "global")


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def matched_schedule(cfg: Config, reference_steps: int, schedule: str = "matched") -> Config:
    """``cfg`` with ``train.warmup_steps`` scaled by ``cfg.train.steps / reference_steps``
    (rounded, at least 1) under ``schedule="matched"``; unchanged under ``"global"`` or when
    the steps equal the reference's."""
    check_schedule(schedule)
    if schedule == "global" or cfg.train.steps == reference_steps or reference_steps <= 0:
        return cfg
    warmup = max(1, round(cfg.train.warmup_steps * cfg.train.steps / reference_steps))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warmup_steps=warmup))


def seeded(cfg: Config, index: int, *, vary_data_seed: bool = True) -> Config:
    """``cfg`` for seed index ``index``: train.seed (and data.seed) shifted by ``index``."""
    train = dataclasses.replace(cfg.train, seed=cfg.train.seed + index)
    data = dataclasses.replace(cfg.data, seed=cfg.data.seed + index) if vary_data_seed else cfg.data
    return dataclasses.replace(cfg, train=train, data=data)


# ----------------------------------------------------------------------------------------
# The deterministic task schedule (matched compute).

_SIZES: dict[str, int] = {}


def train_sizes(cfg: Config) -> dict[str, int]:
    """Training examples per task, as the trainer will see them (loads the train splits).

    Cached per task under everything of ``cfg.data`` that can change its size (all but the
    task list and the other tasks' sizes), so the arms of a grid load each task once per seed.
    """
    from multimodel.tasks.task_data import load_task_data, task_train_size

    shared = {k: v for k, v in to_dict(cfg.data).items() if k not in ("tasks", "task_sizes", "eval_sizes")}
    keys = {t: json.dumps({**shared, "task": t, "size": task_train_size(cfg, t)}, sort_keys=True)
            for t in cfg.data.tasks}
    missing = [t for t in cfg.data.tasks if keys[t] not in _SIZES]
    if missing:
        data = load_task_data(cfg, missing, splits=("train",), log=lambda _msg: None)
        _SIZES.update({keys[name]: len(td.train) for name, td in data.items()})
    return {t: _SIZES[keys[t]] for t in cfg.data.tasks}


def mixing_of(cfg: Config) -> dict[str, float]:
    """The task-sampling probabilities the trainer will use for ``cfg``."""
    from multimodel.tasks.task_data import task_weights

    return mixing_probabilities(train_sizes(cfg), cfg.train.mixing, cfg.train.temperature, task_weights(cfg))


def schedule(probabilities: dict[str, float], data_seed: int, steps: int) -> list[str]:
    """The task trained at each step 0 … steps-1 (the trainer's own sampler)."""
    sampler = TaskSampler(probabilities, data_seed)
    return [sampler.task_at(s) for s in range(steps)]


def task_step_counts(cfg: Config) -> dict[str, int]:
    """Optimiser steps each task of ``cfg`` receives in a run of ``cfg.train.steps`` steps."""
    counts = TaskSampler(mixing_of(cfg), cfg.data.seed).counts(cfg.train.steps)
    return {t: counts.get(t, 0) for t in cfg.data.tasks}


def steps_for_task_count(cfg: Config, task: str, count: int) -> int:
    """Fewest total steps in which ``task`` receives exactly ``count`` steps under ``cfg``'s mixing."""
    probs = mixing_of(cfg)
    if probs.get(task, 0.0) <= 0:
        raise ConfigError(f"task {task} has sampling probability 0 under train.mixing={cfg.train.mixing!r}")
    if count <= 0:
        return 0
    sampler = TaskSampler(probs, cfg.data.seed)
    seen = step = 0
    limit = int(50 * count / probs[task]) + 1000
    while step < limit:
        seen += sampler.task_at(step) == task
        step += 1
        if seen == count:
            return step
    raise ConfigError(f"task {task} did not reach {count} steps within {limit} steps")


def task_learning_rates(spec: RunSpec, task: str) -> np.ndarray:
    """(steps on ``task``,) the schedule's multiplier of the peak learning rate at each of the
    task's steps in the run of ``spec``, in order."""
    from multimodel.training.optim import schedule_for

    order = schedule(spec.probabilities, spec.cfg.data.seed, spec.cfg.train.steps)
    lr = schedule_for(spec.cfg.train)  # by steps: a grid's runs have no time budget to end them
    return np.asarray([lr.factor(s) for s, t in enumerate(order) if t == task], dtype=np.float64)


def schedule_mismatch(spec: RunSpec, reference: RunSpec, task: str) -> float:
    """Mean over the task's steps of |lr_spec / lr_reference − 1|, comparing the two runs after
    the same number of steps on ``task`` (over the steps both runs give it; NaN if none)."""
    a, b = task_learning_rates(spec, task), task_learning_rates(reference, task)
    n = min(a.size, b.size)
    return float(np.mean(np.abs(a[:n] / b[:n] - 1.0))) if n else math.nan


def make_spec(arm: Arm, seed_index: int, cfg: Config, *, init_from: str | None = None) -> RunSpec:
    """A :class:`RunSpec` with its task-step counts and probabilities filled in."""
    probs = mixing_of(cfg)
    order = schedule(probs, cfg.data.seed, cfg.train.steps)
    counts = {t: order.count(t) for t in cfg.data.tasks}
    return RunSpec(arm, seed_index, cfg, counts, probs, init_from)


# ----------------------------------------------------------------------------------------
# Running.


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(cfg_dict))  # tuples → lists, as in config.json
    for section, key in _HARMLESS:
        out.get(section, {}).pop(key, None)
    return out


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """Raise if the finished run in ``run_dir`` was trained with a different config than ``cfg``."""
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return
    saved, wanted = _comparable(json.loads(saved_path.read_text())), _comparable(to_dict(cfg))
    diffs = [f"{s}.{k}: {saved[s].get(k)!r} vs {wanted[s][k]!r}"
             for s in wanted for k in wanted[s] if saved.get(s, {}).get(k) != wanted[s][k]]
    if diffs:
        raise ConfigError(f"{run_dir} was trained with another config ({'; '.join(diffs[:3])});"
                         " use another --out, or delete that run directory to retrain it")


def run_grid(plan: Plan, out: Path, *, log: Log = print) -> dict[str, str]:
    """Train and evaluate every run of ``plan`` not yet finished; return run name → status.

    Status: ``"done"`` (found finished, not touched), ``"trained"`` (fresh) or ``"resumed"``.
    """
    from multimodel.training import checkpoint as ckpt
    from multimodel.evaluation.evaluate import evaluate_all
    from multimodel.training.run import write_report
    from multimodel.training.train import train

    status: dict[str, str] = {}
    for i, spec in enumerate(plan.specs, 1):
        run_dir = out / "runs" / spec.name
        if (run_dir / "eval.json").is_file():
            check_same_config(run_dir, spec.cfg)
            status[spec.name] = "done"
            continue
        resumable = bool(ckpt.list_checkpoints(run_dir / "checkpoints"))
        if not resumable and run_dir.exists():  # died before its first checkpoint: start clean
            shutil.rmtree(run_dir)
        init = out / "runs" / f"{spec.init_from}-s{spec.seed_index}" if spec.init_from else None
        log(f"[{i}/{len(plan.specs)}] {spec.name}: tasks {', '.join(spec.arm.tasks)};"
            f" {spec.cfg.train.steps} steps ({_fmt_steps(spec.task_steps)})"
            + (f"; from {init}" if init else "") + ("; resuming" if resumable else ""))

        def say(msg: str, name: str = spec.name) -> None:
            log(f"  [{name}] {msg}")

        start = time.time()
        result = train(spec.cfg, run_dir, resume=True, log=say, progress=False, init_from=init)
        results = evaluate_all(result.model, result.task_data, result.tokenizer, spec.cfg, log=say,
                               blind_control=True)
        seconds = time.time() - start
        timing_path = run_dir / "timing.json"
        previous = json.loads(timing_path.read_text())["seconds"] if timing_path.is_file() else 0.0
        timing_path.write_text(json.dumps({"seconds": previous + seconds}))
        write_report(run_dir, results, result.task_data, train_seconds=seconds, step=result.step)
        status[spec.name] = "resumed" if resumable else "trained"
    return status


def _fmt_steps(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in counts.items())


# ----------------------------------------------------------------------------------------
# Reading results.


def read_eval(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Task → evaluation record (``eval.json`` of a finished run)."""
    return {r["task"]: r for r in json.loads((run_dir / "eval.json").read_text())}


def read_log(run_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The training log records, one per logged step (a resumed run's re-logged steps: last wins);
    with ``event``, the records of that event instead (e.g. ``"eval"``, the evaluations while training)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("event") != event or "step" not in record:
            continue
        by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def headline_metric(task: str, cfg: Config | None) -> str:
    """The first metric of ``task``: a built-in one, or one ``cfg`` declares."""
    return get_task(task, cfg).metrics[0]


def measure_value(record: dict[str, Any], measure: str, cfg: Config | None) -> float:
    if measure == "metric":
        return float(record["metrics"].get(headline_metric(record["task"], cfg), math.nan))
    return float(record[measure])


def plan_config(plan: Plan) -> Config | None:
    """The config the tasks of ``plan`` are looked up in (every run of a grid declares the same)."""
    return plan.specs[0].cfg if plan.specs else None


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), count and the values themselves
    (:func:`multimodel.experiments.statistics.describe`)."""
    from multimodel.experiments.statistics import describe

    return describe(values)


def summarise(plan: Plan, out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Column → task → measure → :func:`stats` over seeds (only finished runs count)."""
    gathered: dict[str, dict[str, dict[str, list[float]]]] = {}
    for spec in plan.specs:
        run_dir = out / "runs" / spec.name
        if not (run_dir / "eval.json").is_file():
            continue
        for task, record in read_eval(run_dir).items():
            cell = gathered.setdefault(spec.arm.column, {}).setdefault(task, {m: [] for m in MEASURES})
            for m in MEASURES:
                cell[m].append(measure_value(record, m, spec.cfg))
    return {col: {task: {m: stats(v) for m, v in cells.items()} for task, cells in tasks.items()}
            for col, tasks in gathered.items()}


def fmt_stat(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s or s["n"] == 0:
        return "—"
    text = f"{s['mean']:.{digits}f}"
    return text + (f" ± {s['std']:.{digits}f}" if s["n"] > 1 else "")


def results_table(plan: Plan, summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: one row per (task, measure), one column per arm; cells mean ± std over seeds."""
    head = "| task | measure | " + " | ".join(plan.columns) + " |"
    lines = [head, "|---|---|" + "---:|" * len(plan.columns)]
    for task in plan.tasks:
        metric = headline_metric(task, plan_config(plan))
        for m in MEASURES:
            label = METRIC_LABELS.get(metric, metric) if m == "metric" else MEASURE_LABELS[m]
            digits = 3 if m == "log_perplexity" else 1
            cells = [fmt_stat(summary.get(col, {}).get(task, {}).get(m), digits) for col in plan.columns]
            lines.append(f"| {task} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_table(plan: Plan) -> str:
    """Markdown: the optimiser steps every run gave every task (the matched-compute statement)."""
    lines = ["| run | total steps | warm-up | " + " | ".join(plan.tasks) + " |",
             "|---|---:|---:|" + "---:|" * len(plan.tasks)]
    for spec in plan.specs:
        cells = [str(spec.task_steps[t]) if t in spec.task_steps else "—" for t in plan.tasks]
        lines.append(f"| {spec.name} | {spec.cfg.train.steps} | {spec.cfg.train.warmup_steps} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_seconds(out: Path, spec: RunSpec) -> float | None:
    path = out / "runs" / spec.name / "timing.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None


def write_results(plan: Plan, out: Path, status: dict[str, str], *, command: str | None = None,
                  extra_markdown: str = "", extra_json: dict[str, Any] | None = None,
                  figures: Sequence[str] = ()) -> Path:
    """Write ``results.md`` and ``results.json`` for a finished (or partly finished) grid."""
    summary = summarise(plan, out)
    seconds = {s.name: run_seconds(out, s) for s in plan.specs}
    total = sum(v for v in seconds.values() if v is not None)
    seeds = sorted({s.seed_index for s in plan.specs})
    lines = [f"# {plan.title}", "", plan.question, ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [f"Seeds: {len(seeds)} (mean ± sample std over seeds; one value when a single seed)."
              f" Runs: {len(plan.specs)}; wall time of training + evaluation: {total / 60:.1f} min.", ""]
    lines += [results_table(plan, summary), ""]
    if extra_markdown:
        lines += [extra_markdown, ""]
    lines += ["## Compute per task (optimiser steps)", ""] + [f"- {n}" for n in plan.notes] + [""]
    lines += [steps_table(plan), ""]
    for fig in figures:
        lines += [f"![{Path(fig).stem}]({fig})", ""]
    md_path = out / "results.md"
    md_path.write_text("\n".join(lines))
    runs = {}
    for spec in plan.specs:
        run_dir = out / "runs" / spec.name
        runs[spec.name] = {
            "arm": spec.arm.name, "column": spec.arm.column, "seed_index": spec.seed_index,
            "train_seed": spec.cfg.train.seed, "data_seed": spec.cfg.data.seed,
            "tasks": list(spec.arm.tasks), "overrides": list(spec.arm.overrides),
            "steps": spec.cfg.train.steps, "warmup_steps": spec.cfg.train.warmup_steps,
            "task_steps": spec.task_steps,
            "mixing": spec.probabilities, "init_from": spec.init_from,
            "status": status.get(spec.name, "missing"), "seconds": seconds[spec.name],
            "eval": list(read_eval(run_dir).values()) if (run_dir / "eval.json").is_file() else None,
        }
    payload = {"experiment": plan.experiment, "title": plan.title, "question": plan.question,
               "command": command, "columns": plan.columns, "tasks": plan.tasks, "notes": plan.notes,
               "summary": summary, "runs": runs, "total_seconds": total, **(extra_json or {})}
    write_json(out / "results.json", payload)
    return md_path


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (NaN → null; numpy numbers and paths converted), written whole: a report read
    while other runs finish never sees half a file."""
    text = json.dumps(_plain(payload), indent=1, allow_nan=False).encode()
    write_atomically(path, lambda handle: handle.write(text))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value

"""`make reproduce`: every question of the paper on the built-in tasks, with seeds, intervals and one report.

Command:   make reproduce   (= multimodel reproduce --out results/reproduce --jobs 2, with the WSJ sample
           of ../shared/corpora when present); ``--estimate-only`` prints the plan and budget.
Run time:  stated before the first run, from the plan and a calibration on this machine (the
           seconds per step of every task in every model variant, of an evaluation, of a
           checkpoint); the demo preset is sized to fit 4 hours on 2 CPU cores (2 h 36 min estimated
           one run at a time; 1 h 49 min measured with ``--jobs 2``, 2026-12-01).
Expected:  results/reproduce/report.md (+ report.json, figures/reproduce/*.png): per question the
           paper's claim, our answer, the table with 95 % intervals, the figures, and what would
           change the answer; the section of docs/results.md is that file.

What runs (per seed; the grids of :mod:`multimodel.experiments`, sharing every run they have
in common — a run is identified by its full config, so the joint run of RQ1 is also RQ3's
``full`` arm and RQ4's ``with-all``, and RQ1's single-task parsing run is RQ4's ``alone``):

* RQ1 + RQ2 — ``joint`` (all tasks, ``train.steps``) and ``single-<task>`` (each task alone for the
  steps it had in ``joint``);
* RQ3 — ``no-moe`` and ``no-attention`` (the joint run's schedule without the MoE layers / the
  attention blocks);
* RQ4 — ``<parsing>-with-image`` (the built-in parsing task + the image task, as many parsing
  steps as in ``joint``); on the real WSJ sample (``ptb_parsing``, when its data is found) the
  three arms ``ptb_parsing-alone``, ``-with-image`` and ``-with-all``;
* adding a task — ``add-before`` (all tasks but the new one), then ``add-after`` (+ the new task),
  ``add-control`` (the old tasks continued without it) and ``add-scratch``;
* Table 1 — a standard single-task baseline per task at the joint run's steps
  (:mod:`multimodel.experiments.baselines`);
* routing — task × expert heatmaps of every joint run and the task/modality information of
  its experts (:mod:`multimodel.experiments.routing_analysis`).

Matched compute and matched schedules everywhere (:mod:`multimodel.experiments.grid`), blind
controls in every evaluation. Runs go seed by seed (``--jobs N`` trains N at a time, each in its
own process, a run starting once the run it continues from is finished), so after the first seed
a (one-seed) report already exists; the report is rewritten after every seed. Re-running the command resumes:
finished runs, baselines and routing analyses are reused, an unfinished run continues from its
newest checkpoint, and the calibration is kept in ``OUT/calibration.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import statistics as pystats
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from multimodel.config import Config, ConfigError, load_config, to_dict
from multimodel.experiments import ablation, add_task, joint_vs_single, transfer
from multimodel.experiments.grid import (
    Plan,
    RunSpec,
    _comparable,
    check_schedule,
    run_grid,
    train_sizes,
    write_json,
)
from multimodel.tasks import get_task

Log = Callable[[str], None]


@dataclass(frozen=True)
class Preset:
    """A reproduction's scale.

    Args:
        name: ``--preset`` name.
        config: the model/data preset (``configs/``) every run derives from.
        overrides: changes to it (``train.steps`` = the joint run's steps).
        seeds: seeds per arm.
        image_task: RQ4's unrelated image task.
        new_task: the task added later (add-task).
        before_fraction: steps of ``add-before``, as a fraction of ``train.steps``.
        add_fraction: steps of ``add-after`` (and, less the new task's, of ``add-control``), as a
            fraction of ``train.steps``.
        calibration_steps: timed steps per task and model variant for the budget.
        target_hours: the budget the preset is sized for (the estimate is compared with it).
    """

    name: str
    config: str
    overrides: tuple[str, ...]
    seeds: int
    image_task: str
    new_task: str
    before_fraction: float
    add_fraction: float
    calibration_steps: int
    target_hours: float


PRESETS = {
    # The demo model on all eight built-in tasks: 2,000 joint steps (~235 per task, speech ~350)
    # is where the demo preset already beats every blind control (docs/results.md). The demo
    # preset's later cool-down, gradient rescaling, per-task batch sizes and task weights are
    # pinned back to what the published reproduction (docs/results.md, commit c921e20) ran with:
    # no cool-down, clipped gradients, batch 32 for every task, every task 1, speech 1.5, greedy
    # decoding at evaluation, speech features as stored (no per-utterance normalisation), and the
    # noam schedule at a peak of 2e-3 (the library's default has since become a constant rate).
    "demo": Preset(
        name="demo", config="demo",
        overrides=("train.steps=2000", "train.time_budget_minutes=0", "train.log_every=25",
                   "train.checkpoint_every=500", "train.cooldown_fraction=0", "train.normalize_gradients=false",
                   "data.task_batch_sizes={}", "train.beam_size=1", "model.audio_normalize=false",
                   "train.lr_decay=rsqrt", "train.learning_rate=2e-3",
                   "train.task_weights={'fashion_mnist': 1.0, 'fashion_captions': 1.0, 'speech_numbers': 1.5,"
                   " 'grammar_parsing': 1.0, 'numbers_en_de': 1.0, 'numbers_de_en': 1.0, 'numbers_en_fr': 1.0,"
                   " 'numbers_fr_en': 1.0}"),
        seeds=3, image_task="fashion_mnist", new_task="numbers_fr_en", before_fraction=0.5, add_fraction=0.25,
        calibration_steps=4, target_hours=4.0),
    # The whole pipeline in well under a minute, for the test: toy sizes, a handful of steps.
    "tiny": Preset(
        name="tiny", config="tiny",
        overrides=("data.tasks=digits,grammar_parsing,numbers_en_de", "data.task_sizes={'grammar_parsing': 32}",
                   "data.eval_size=4", "train.steps=8", "train.warmup_steps=4", "train.log_every=2",
                   "train.checkpoint_every=8", "train.threads=1"),
        seeds=2, image_task="digits", new_task="numbers_en_de", before_fraction=0.75, add_fraction=0.75,
        calibration_steps=1, target_hours=0.02),
}


@dataclass
class Study:
    """The reproduction's plan: one grid per question over a shared set of runs.

    Args:
        preset: the scale.
        cfg: the base config (joint tasks, model, steps).
        seeds: seeds per arm.
        schedule: ``matched`` or ``global`` (:mod:`multimodel.experiments.grid`).
        questions: key → the question's :class:`~multimodel.experiments.grid.Plan`; its specs
            point at the shared runs (``rq1``, ``rq3``, ``rq4``, ``rq4-wsj`` when the WSJ sample
            is found, ``add-task``).
        runs: every distinct run, in execution order (seed by seed).
        sizes: training examples of each joint task.
        notes: what the study left out, and why.
        command: the command line, quoted in the report.
    """

    preset: Preset
    cfg: Config
    seeds: int
    schedule: str
    questions: dict[str, Plan]
    runs: list[RunSpec]
    sizes: dict[str, int]
    notes: list[str] = field(default_factory=list)
    command: str | None = None

    def joint(self, seed: int) -> RunSpec:
        return next(s for s in self.questions["rq1"].specs if s.arm.column == "joint" and s.seed_index == seed)


# ----------------------------------------------------------------------------------------
# Planning.


def base_config(preset: Preset, overrides: Sequence[str] = ()) -> Config:
    """The preset's config with the command line's ``KEY=VALUE`` overrides."""
    return load_config(preset.config, [*preset.overrides, *overrides])


def parsing_task_of(cfg: Config) -> str:
    """The built-in parsing task among ``data.tasks`` (RQ4's subject)."""
    for name in cfg.data.tasks:
        if get_task(name, cfg).task_token == "To-Parse-Tree":
            return name
    raise ConfigError(f"reproduce needs a parsing task (task token To-Parse-Tree) in data.tasks, got {cfg.data.tasks}")


def wsj_config(cfg: Config, builtin_parsing: str) -> Config | None:
    """``cfg`` with the real WSJ sample (``ptb_parsing``) in place of the built-in parsing task,
    with its mixing weight; None when the treebank is not found (data_dir, corpora_dir).

    ``data.skip_bad``: the sample holds one sentence longer than ``data.max_input_length``
    subwords; it is left out (counted in the run's log) rather than stopping the run.
    """
    if transfer.default_parsing_task(cfg) != "ptb_parsing":
        return None
    tasks = tuple("ptb_parsing" if t == builtin_parsing else t for t in cfg.data.tasks)
    weights = {("ptb_parsing" if k == builtin_parsing else k): v for k, v in cfg.train.task_weights.items()}
    data = dataclasses.replace(cfg.data, tasks=tasks, skip_bad=True)
    return dataclasses.replace(cfg, data=data, train=dataclasses.replace(cfg.train, task_weights=weights))


def _renamed(plan: Plan, prefix: str, names: dict[str, str] | None = None) -> Plan:
    """``plan`` with arm ``a`` renamed ``names.get(a, prefix + a)`` (``init_from`` too)."""
    names = names or {}

    def rename(arm_name: str) -> str:
        return names.get(arm_name, prefix + arm_name)

    specs = [dataclasses.replace(s, arm=dataclasses.replace(s.arm, name=rename(s.arm.name)),
                                 init_from=rename(s.init_from) if s.init_from else None) for s in plan.specs]
    return dataclasses.replace(plan, specs=specs)


def share_runs(plans: Sequence[Plan]) -> tuple[list[Plan], list[RunSpec]]:
    """Point every spec with the same config (and the same starting run) at one run.

    Returns the plans with their specs renamed to the shared runs' names, and the distinct runs
    in execution order (seed by seed; within a seed, in the order the plans list them). Raises
    if two different configs would share a run directory.
    """
    by_key: dict[str, str] = {}  # config key → run name
    by_name: dict[str, tuple[str, RunSpec]] = {}  # run name → (key, spec)
    out_plans = []
    for plan in plans:
        specs = []
        for spec in plan.specs:
            init = spec.init_from
            if init is not None:  # the starting run may itself have been renamed by sharing
                init = by_key.get(_init_key(plan, spec), init)
            key = json.dumps({"cfg": _comparable(to_dict(spec.cfg)), "init": init}, sort_keys=True)
            name = by_key.get(key, spec.arm.name)
            arm = dataclasses.replace(spec.arm, name=name)
            shared = dataclasses.replace(spec, arm=arm, init_from=init)
            if shared.name in by_name and by_name[shared.name][0] != key:
                raise ConfigError(f"two different runs would both be {shared.name}")
            by_key[key] = name
            by_name.setdefault(shared.name, (key, shared))
            specs.append(shared)
        out_plans.append(dataclasses.replace(plan, specs=specs))
    runs = sorted((spec for _, spec in by_name.values()), key=lambda s: s.seed_index)  # stable: plan order
    return out_plans, runs


def _init_key(plan: Plan, spec: RunSpec) -> str:
    start = next(s for s in plan.specs if s.arm.name == spec.init_from and s.seed_index == spec.seed_index)
    return json.dumps({"cfg": _comparable(to_dict(start.cfg)), "init": start.init_from}, sort_keys=True)


def add_task_steps(preset: Preset, cfg: Config) -> tuple[int, int]:
    """(steps of add-before, steps of add-after): the preset's fractions of ``train.steps``."""
    return (max(1, round(preset.before_fraction * cfg.train.steps)),
            max(1, round(preset.add_fraction * cfg.train.steps)))


def plan_study(preset: Preset, cfg: Config, *, seeds: int | None = None, schedule: str = "matched",
               command: str | None = None) -> Study:
    """Every question's grid over one set of shared runs (no training)."""
    check_schedule(schedule)
    seeds = preset.seeds if seeds is None else seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    parsing = parsing_task_of(cfg)
    for task in (preset.image_task, preset.new_task):
        if task not in cfg.data.tasks:
            raise ConfigError(f"the preset's task {task} is not in data.tasks {cfg.data.tasks}")
    notes: list[str] = []
    plans = {
        "rq1": joint_vs_single.plan(cfg, seeds, schedule=schedule),
        "rq3": _renamed(ablation.plan(cfg, seeds, schedule=schedule), "", {"full": "joint"}),
        "rq4": _renamed(transfer.plan(cfg, seeds, parsing_task=parsing, image_task=preset.image_task, match="all",
                                      schedule=schedule), f"{parsing}-"),
    }
    wsj = wsj_config(cfg, parsing)
    if wsj is not None:
        plans["rq4-wsj"] = _renamed(transfer.plan(wsj, seeds, parsing_task="ptb_parsing", image_task=preset.image_task,
                                                  match="all", schedule=schedule), "ptb_parsing-")
    else:
        notes.append("RQ4 on the real WSJ sample was left out: ptb_parsing's treebank was not found under"
                     " data.data_dir or data.corpora_dir (give data.corpora_dir=../shared/corpora).")
    before_steps, add_steps = add_task_steps(preset, cfg)
    before_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=before_steps))
    plans["add-task"] = _renamed(add_task.plan(before_cfg, seeds, new_task=preset.new_task, add_steps=add_steps,
                                               schedule=schedule), "add-")
    shared, runs = share_runs(list(plans.values()))
    questions = dict(zip(plans, shared))
    sizes = train_sizes(cfg)
    return Study(preset, cfg, seeds, schedule, questions, runs, sizes, notes, command)


# ----------------------------------------------------------------------------------------
# The budget: seconds per step measured on this machine, times the plan's steps.


@dataclass
class Calibration:
    """Measured costs on this machine.

    Args:
        step_seconds: model variant (``","``-joined arm overrides; ``""`` = full) → task →
            median seconds of one training step.
        setup_seconds: loading the data, training the vocabulary, building the model (a run's start).
        checkpoint_seconds: writing one checkpoint.
        eval_seconds: task → its final evaluation with the blind control (estimated from one batch).
        baseline_step_seconds: task → seconds per step of its single-task baseline.
        seconds: what the calibration itself took.
    """

    step_seconds: dict[str, dict[str, float]]
    setup_seconds: float
    checkpoint_seconds: float
    eval_seconds: dict[str, float]
    baseline_step_seconds: dict[str, float]
    seconds: float


def _variant(spec: RunSpec) -> str:
    return ",".join(spec.arm.overrides)


def _calibration_config(study: Study, overrides: tuple[str, ...]) -> Config:
    """One config holding every task of the study (and its data settings), for timing."""
    from multimodel.config import apply_overrides

    tasks: list[str] = []
    weights: dict[str, float] = {}
    skip_bad = False
    for spec in study.runs:
        tasks += [t for t in spec.cfg.data.tasks if t not in tasks]
        weights.update(spec.cfg.train.task_weights)
        skip_bad |= spec.cfg.data.skip_bad
    cfg = study.cfg
    data = dataclasses.replace(cfg.data, tasks=tuple(tasks), skip_bad=skip_bad)
    train = dataclasses.replace(cfg.train, task_weights=weights, steps=10**6, time_budget_minutes=0.0)
    return apply_overrides(dataclasses.replace(cfg, data=data, train=train), list(overrides))


def calibrate(study: Study, out: Path, *, log: Log = print) -> Calibration:
    """Time every task's training step in every model variant of the study (the trainer's
    :func:`~multimodel.training.train.take_step`, the task fixed), an evaluation batch, a checkpoint
    and the baselines; cached in ``OUT/calibration.json`` for the same study."""
    from multimodel.evaluation.evaluate import CLASSIFICATION_EVAL_BATCH, evaluate_task
    from multimodel.data.mixture import TaskSampler
    from multimodel.training.train import save, setup, take_step

    variants = sorted({_variant(s) for s in study.runs})
    key = {"config": _comparable(to_dict(_calibration_config(study, ()))), "variants": variants,
           "steps": study.preset.calibration_steps}
    path = out / "calibration.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == json.loads(json.dumps(key)):
            return Calibration(**saved["calibration"])
    started = time.time()
    k = study.preset.calibration_steps
    step_seconds: dict[str, dict[str, float]] = {}
    setup_times, eval_seconds, baseline_seconds, checkpoint_seconds = [], {}, {}, 0.0
    for variant in variants:
        cfg = _calibration_config(study, tuple(o for o in variant.split(",") if o))
        log(f"calibrating {variant or 'the full model'}: {k} timed steps per task")
        tick = time.time()
        state = setup(cfg, out / "calibration" / (variant.replace("=", "-").replace(",", "_") or "full"),
                      overwrite=True, log=lambda _m: None)
        setup_times.append(time.time() - tick)
        step_seconds[variant] = {}
        for name in state.task_data:
            state.sampler = TaskSampler({name: 1.0}, cfg.data.seed)  # the trainer's own step, on this task only
            times = []
            for i in range(k + 1):  # the first step of a task warms its code paths up: not timed
                tick = time.time()
                take_step(state)
                if i:
                    times.append(time.time() - tick)
            step_seconds[variant][name] = float(pystats.median(times)) if times else 0.0
        if variant == "":
            tick = time.time()
            save(state)
            checkpoint_seconds = time.time() - tick
            for name, td in state.task_data.items():
                per_batch = max(cfg.data.batch_size, CLASSIFICATION_EVAL_BATCH if td.task.is_classification else 64)
                sample = td.test[:per_batch]
                tick = time.time()
                evaluate_task(state.model, td.task, sample, td.collate, state.tokenizer, batch_size=per_batch,
                              beam_size=cfg.train.beam_size, length_penalty=cfg.train.length_penalty,
                              num_shown=0, blind_control=True, blind_seed=cfg.data.seed)
                eval_seconds[name] = (time.time() - tick) * len(td.test) / max(1, len(sample))
            baseline_seconds = _time_baselines(state, cfg, k, study.cfg.data.tasks)
        del state
    shutil.rmtree(out / "calibration", ignore_errors=True)  # its checkpoints and data: timing only
    calibration = Calibration(step_seconds, float(pystats.median(setup_times)), checkpoint_seconds, eval_seconds,
                              baseline_seconds, time.time() - started)
    write_json(path, {"key": key, "calibration": dataclasses.asdict(calibration)})
    return calibration


def _time_baselines(state: Any, cfg: Config, steps: int, tasks: Sequence[str]) -> dict[str, float]:
    """Seconds per training step of each task's single-task baseline (its model, its batches)."""
    from multimodel.baselines import build_baseline
    from multimodel.data.batching import TaskStream
    from multimodel.experiments.baselines import baseline_config, train_baseline
    from multimodel.tasks.task_data import task_batch_sizes

    config = baseline_config(cfg)
    batch_sizes = task_batch_sizes(cfg)
    out = {}
    for name in tasks:
        td = state.task_data[name]
        shape = tuple(getattr(td.train[0].inputs, "shape", ())) or (len(str(td.train[0].inputs)),)
        model = build_baseline(td.task.input_modality, td.task.target_modality, config, state.tokenizer.vocab_size,
                               shape).to(state.device)
        stream = TaskStream(name, td.train, td.collate, batch_sizes[name], cfg.data.seed)
        tick = time.time()
        train_baseline(model, stream, steps + 1, config, state.device, progress=False, log=lambda _m: None)
        out[name] = (time.time() - tick) / (steps + 1)
    return out


def estimate_run(spec: RunSpec, cal: Calibration) -> float:
    """Seconds ``spec`` should take: start-up, its steps per task at the measured cost of its
    model variant, its checkpoints, its evaluation with the blind control."""
    per_step = cal.step_seconds.get(_variant(spec), cal.step_seconds.get("", {}))
    train = sum(n * per_step.get(t, 0.0) for t, n in spec.task_steps.items())
    checkpoints = -(-spec.cfg.train.steps // spec.cfg.train.checkpoint_every)
    evaluation = sum(cal.eval_seconds.get(t, 0.0) for t in spec.cfg.data.tasks)
    return cal.setup_seconds + train + checkpoints * cal.checkpoint_seconds + evaluation


def estimate_extras(study: Study, seed: int, cal: Calibration) -> float:
    """Seconds of one seed's baselines (training + evaluation without blind control) and routing analysis."""
    joint = study.joint(seed)
    train = sum(n * cal.baseline_step_seconds.get(t, 0.0) for t, n in joint.task_steps.items())
    evaluation = sum(cal.eval_seconds.get(t, 0.0) for t in joint.cfg.data.tasks) / 2
    return 2 * cal.setup_seconds + train + evaluation


def budget(study: Study, cal: Calibration) -> dict[str, Any]:
    """The plan's estimated wall time, run by run and in total."""
    runs = {spec.name: estimate_run(spec, cal) for spec in study.runs}
    extras = {f"baselines+routing-s{i}": estimate_extras(study, i, cal) for i in range(study.seeds)}
    total = sum(runs.values()) + sum(extras.values()) + cal.seconds
    return {"runs": runs, "extras": extras, "calibration_seconds": cal.seconds, "total_seconds": total,
            "target_hours": study.preset.target_hours}


def budget_markdown(study: Study, cal: Calibration, plan_budget: dict[str, Any], *, jobs: int = 1) -> str:
    """The budget table: one row per kind of run (its steps, count, minutes), then the total."""
    kinds: dict[str, list[RunSpec]] = {}
    for spec in study.runs:
        kinds.setdefault(spec.arm.name, []).append(spec)
    lines = ["| run | runs | steps each | est. min each | est. min total |", "|---|---:|---:|---:|---:|"]
    for name, specs in kinds.items():
        each = [plan_budget["runs"][s.name] / 60 for s in specs]
        steps = sorted({s.cfg.train.steps for s in specs})
        steps_text = str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
        lines.append(f"| {name} | {len(specs)} | {steps_text} | {_minutes(sum(each) / len(each))} |"
                     f" {_minutes(sum(each))} |")
    extras = sum(plan_budget["extras"].values()) / 60
    lines.append(f"| baselines + routing analysis | {study.seeds} | (joint's task steps) |"
                 f" {_minutes(extras / study.seeds)} | {_minutes(extras)} |")
    lines.append(f"| calibration | 1 | {study.preset.calibration_steps} per task and variant |"
                 f" {_minutes(cal.seconds / 60)} | {_minutes(cal.seconds / 60)} |")
    total_h = plan_budget["total_seconds"] / 3600
    lines += ["", f"Estimated total: **{_hours(plan_budget['total_seconds'])}** ({len(study.runs)} training runs,"
              f" {study.seeds} seeds; target {study.preset.target_hours:g} h:"
              f" {'within' if total_h <= study.preset.target_hours else 'OVER'})."
              " Estimate = per run: start-up + Σ over tasks (its steps × the median seconds per step measured"
              " for that task in that model variant) + checkpoints + evaluation with blind control (timed on"
              " one batch per task of the untrained model, which decodes to full length: an upper estimate)."]
    if jobs > 1:
        lines.append(f"With {jobs} jobs at a time: about {_hours(plan_budget['total_seconds'] / jobs)} if every job"
                     " keeps its own core busy (a demo-size run on CPU keeps about one core busy).")
    return "\n".join(lines)


def _minutes(minutes: float) -> str:
    return f"{minutes:.1f}" if minutes >= 1 else f"{minutes:.2f}"


def _hours(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ----------------------------------------------------------------------------------------
# Running.


def run_baselines_for(study: Study, out: Path, seed: int, *, log: Log = print) -> dict[str, Any]:
    """Single-task baselines at the joint run's steps for seed ``seed`` (resumes per task)."""
    from multimodel.experiments.baselines import run_baselines

    run = out / "runs" / study.joint(seed).name
    dest = out / "baselines" / f"s{seed}"
    def say(msg: str) -> None:
        if not msg.startswith("\n"):  # its results table: the report has it
            log(f"  [baselines-s{seed}] {msg}")

    return run_baselines(run, out=dest, progress=False, log=say,
                         command=f"multimodel experiment baselines --run {run} --out {dest}")


def routing_for(study: Study, out: Path, seed: int, *, log: Log = print) -> Path:
    """The routing analysis of seed ``seed``'s joint run (held-out data, eval mode); reused when present."""
    from multimodel.experiments.routing_analysis import analyze_routing

    name = study.joint(seed).name
    dest = out / "routing" / name
    if not (dest / "routing_analysis.json").is_file():
        analyze_routing(out / "runs" / name, dest, source="heldout", eval_size=study.cfg.data.eval_size,
                        log=lambda _m: None)
        log(f"  [routing] {name}: {dest / 'routing.md'}")
    return dest


WALL_FILE = "wall.json"  # every invocation's start (UTC), wall seconds and jobs: the reproduction's wall time


def read_invocations(out: Path) -> list[dict[str, Any]]:
    """The invocations recorded in ``OUT/wall.json`` (none before the first report)."""
    path = out / WALL_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["invocations"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a record of invocations ({err}); delete it to start the record afresh")


def _finished(out: Path, spec: RunSpec) -> bool:
    return (out / "runs" / spec.name / "eval.json").is_file()


@dataclass(frozen=True)
class Job:
    """One unit of the reproduction: a training run, or one seed's baselines + routing analysis."""

    name: str
    seed: int
    after: tuple[str, ...] = ()  # jobs that must be finished first
    estimate: float = 0.0  # seconds, from the budget


def plan_jobs(study: Study, plan_budget: dict[str, Any]) -> list[Job]:
    """Every job of the study in seed order (a topological order: a job comes after its ``after``)."""
    jobs = []
    for seed in range(study.seeds):
        for spec in (s for s in study.runs if s.seed_index == seed):
            after = (f"{spec.init_from}-s{seed}",) if spec.init_from else ()
            jobs.append(Job(spec.name, seed, after, plan_budget["runs"][spec.name]))
        jobs.append(Job(f"baselines+routing-s{seed}", seed, (study.joint(seed).name,),
                        plan_budget["extras"][f"baselines+routing-s{seed}"]))
    return jobs


def _job_finished(study: Study, out: Path, job: Job) -> bool:
    spec = next((s for s in study.runs if s.name == job.name), None)
    if spec is not None:
        return _finished(out, spec)
    joint = study.joint(job.seed).name
    return ((out / "baselines" / f"s{job.seed}" / "results.json").is_file()
            and (out / "routing" / joint / "routing_analysis.json").is_file())


def do_job(study: Study, out: Path, job: Job, log: Log = print) -> tuple[dict[str, str], float]:
    """Run ``job`` (resuming); return (run name → status, its wall seconds)."""
    tick = time.time()
    spec = next((s for s in study.runs if s.name == job.name), None)
    if spec is not None:
        status = run_grid(_single(spec), out, log=lambda m: log(f"  {m}"))
    else:
        run_baselines_for(study, out, job.seed, log=log)
        routing_for(study, out, job.seed, log=log)
        status = {}
    return status, time.time() - tick


def _worker_start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_job(study: Study, out: Path, job: Job) -> tuple[dict[str, str], float]:
    return do_job(study, out, job, log=lambda m: print(m, flush=True))


def run_jobs(jobs: Sequence[Job], work: Callable[[Job], Any], on_done: Callable[[Job, Any], None], *,
             workers: int = 1, on_start: Callable[[Job], None] = lambda job: None,
             pool_work: Callable[[Job], Any] | None = None, threads: int = 1) -> None:
    """Run ``jobs`` in list order, each once its ``after`` jobs are done, ``workers`` at a time.

    With one worker the jobs run here, through ``work``; with more, in a pool of spawned
    processes (``pool_work``, picklable; ``threads`` torch threads each). ``on_done`` gets every
    result in this process as it arrives. A failed job stops the scheduling: the running jobs
    finish (they checkpoint), nothing new starts, and the error is raised.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    import multiprocessing

    names = {job.name for job in jobs}
    if workers <= 1:
        for job in jobs:
            on_start(job)
            on_done(job, work(job))
        return
    pending, done, running = list(jobs), set(), {}
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_start, initargs=(threads,)) as pool:
        while pending or running:
            ready = [j for j in pending if all(a in done or a not in names for a in j.after)]
            for job in ready[:workers - len(running)]:
                pending.remove(job)
                on_start(job)
                running[pool.submit(pool_work or work, job)] = job
            if not running:
                raise RuntimeError(f"jobs wait on each other: {', '.join(j.name for j in pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                on_done(job, future.result())  # raises the job's error
                done.add(job.name)


def reproduce(preset: str | Preset = "demo", *, out: Path, seeds: int | None = None, overrides: Sequence[str] = (),
              schedule: str = "matched", estimate_only: bool = False, command: str | None = None,
              jobs: int = 1, log: Log = print) -> dict[str, Any]:
    """Plan, state the budget, run (resuming) and report the whole reproduction.

    Args:
        preset: a key of :data:`PRESETS` or a :class:`Preset`.
        out: results directory: ``runs/``, ``baselines/``, ``routing/``, ``report.md``,
            ``report.json``, ``figures/reproduce/``.
        seeds: seeds per arm (default: the preset's).
        overrides: ``KEY=VALUE`` changes to the preset's config (e.g. ``data.corpora_dir=...``).
        schedule: ``matched`` (default) or ``global`` warm-ups (:mod:`multimodel.experiments.grid`).
        estimate_only: plan, calibrate and print the budget; train nothing.
        command: the command line, quoted in the report.
        jobs: runs trained at once, each in its own process with ``torch.get_num_threads() // jobs``
            torch threads (2 on 2 CPU cores: the demo model keeps only about one core busy per run).
        log: where progress goes.

    Returns:
        The ``report.json`` payload (with ``estimate_only``: the plan and budget).
    """
    import torch

    from multimodel.experiments.plots import require_matplotlib
    from multimodel.experiments.report import write_report

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    require_matplotlib()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = base_config(preset, overrides)
    study = plan_study(preset, cfg, seeds=seeds, schedule=schedule, command=command)
    log(f"reproduce ({preset.name} preset): {len(study.runs)} training runs over {study.seeds} seeds into"
        f" {out / 'runs'}; joint run {cfg.train.steps} steps on {len(cfg.data.tasks)} tasks; schedules {schedule};"
        f" {jobs} job{'s' if jobs > 1 else ''} at a time")
    for note in study.notes:
        log(f"  note: {note}")
    cal = calibrate(study, out, log=log)
    plan_budget = budget(study, cal)
    log("\nBudget (estimated before the first run):\n\n" + budget_markdown(study, cal, plan_budget, jobs=jobs) + "\n")
    write_json(out / "plan.json", {"preset": dataclasses.asdict(preset), "budget": plan_budget,
                                   "calibration": dataclasses.asdict(cal), "jobs": jobs,
                                   "runs": {s.name: {"arm": s.arm.name, "seed_index": s.seed_index,
                                                     "steps": s.cfg.train.steps, "task_steps": s.task_steps,
                                                     "warmup_steps": s.cfg.train.warmup_steps,
                                                     "overrides": list(s.arm.overrides), "init_from": s.init_from}
                                            for s in study.runs}})
    if estimate_only:
        return {"budget": plan_budget, "runs": [s.name for s in study.runs]}

    started = time.time()
    invocations = read_invocations(out)
    invocations.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)), "seconds": 0.0,
                        "jobs": jobs})
    all_jobs = plan_jobs(study, plan_budget)
    spent = {"actual": 0.0, "estimated": 0.0}  # job-seconds of the jobs run by this invocation
    finished = {job.name for job in all_jobs if _job_finished(study, out, job)}
    status: dict[str, str] = {}
    payload: dict[str, Any] = {}

    def remaining() -> float:  # wall seconds, from the estimates scaled by the slowdown seen so far
        left = sum(j.estimate for j in all_jobs if j.name not in finished)
        ratio = spent["actual"] / spent["estimated"] if spent["estimated"] > 0 else 1.0
        return left * ratio / jobs

    def on_start(job: Job) -> None:
        log(f"[reproduce {all_jobs.index(job) + 1}/{len(all_jobs)}] {job.name}: est. {_minutes(job.estimate / 60)}"
            f" min; elapsed {_hours(time.time() - started)}, remaining ≈ {_hours(remaining())}")

    def report(after_seed: int) -> None:
        nonlocal payload
        last = all(j.name in finished for j in all_jobs)
        invocations[-1]["seconds"] = time.time() - started
        write_json(out / WALL_FILE, {"invocations": invocations})
        payload = write_report(study, out, status, plan_budget=plan_budget, calibration=cal,
                               wall_seconds=time.time() - started, figures=last, invocations=invocations)
        log(f"[reproduce] report after seed {after_seed}: {out / 'report.md'} (elapsed {_hours(time.time() - started)})")

    def on_done(job: Job, result: tuple[dict[str, str], float]) -> None:
        status.update(result[0])
        finished.add(job.name)
        if "resumed" not in result[0].values():  # a resumed run did only part of its estimate
            spent["actual"] += result[1]
            spent["estimated"] += job.estimate
        if all(j.name in finished for j in all_jobs if j.seed == job.seed):
            report(job.seed)

    for job in all_jobs:  # reuse what earlier invocations finished (checks their configs)
        if job.name in finished and job.name in {s.name for s in study.runs}:
            status.update(do_job(study, out, job, log=lambda _m: None)[0])
    todo = [job for job in all_jobs if job.name not in finished]
    run_jobs(todo, lambda job: do_job(study, out, job, log=log), on_done, workers=jobs, on_start=on_start,
             pool_work=functools.partial(_worker_job, study, out), threads=max(1, torch.get_num_threads() // jobs))
    if not todo:  # everything was finished before: the report (and its figures) again
        report(study.seeds - 1)
    log(f"\nreproduce finished in {_hours(time.time() - started)} (this invocation): {out / 'report.md'},"
        f" {out / 'report.json'}, {out / 'figures' / 'reproduce'}")
    return payload


def _single(spec: RunSpec) -> Plan:
    return Plan("reproduce", spec.name, "", [spec], [spec.arm.column], list(spec.cfg.data.tasks))


__all__ = ["PRESETS", "Preset", "Study", "Calibration", "plan_study", "share_runs", "calibrate", "budget",
           "estimate_run", "reproduce"]

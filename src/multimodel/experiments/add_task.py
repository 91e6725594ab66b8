"""Adding a task to a trained model: how fast does it learn, and what do the old tasks forget?

Users of the original asked for this and tensor2tensor never offered it. Arms, per seed:

* ``before`` — the old tasks (``data.tasks`` without the new one) trained for ``train.steps``;
* ``after`` — ``before``'s final weights and vocabulary, continued on the old tasks *plus* the
  new one for ``add_steps`` steps (``train(..., init_from=...)``): the model is rebuilt with the
  union of the modality nets, the new nets start random, the optimiser and schedule restart;
* ``control`` — ``before``'s weights continued on the old tasks *only*, for as many steps as the
  old tasks received in ``after`` (``add_steps`` minus the new task's steps): the old tasks get
  the same amount of further training with and without the new task, so forgetting is
  ``after − control``, measured rather than guessed;
* ``scratch`` — the new task alone from a random initialisation (and its own vocabulary),
  for exactly as many steps as the new task received in ``after`` (matched compute).

Matched schedules (``schedule="matched"``, default): ``after`` warms up over
``train.warmup_steps``; ``control`` and ``scratch`` scale it by their steps / ``add_steps``.

The vocabulary is fixed by ``before``: the new task's text is encoded with the old subwords and
characters never seen become UNK (reported as the UNK rate; sentencepiece without byte fallback).
Reported: the new task's metrics after vs. from scratch, the steps on the new task each needed to
reach 90 % of the from-scratch run's final training per-token accuracy, and each old task's
metrics before, in the control and after (forgetting = after − control).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from multimodel.config import Config, ConfigError
from multimodel.evaluation.evaluate import METRIC_LABELS
from multimodel.experiments.grid import (
    Arm,
    Plan,
    check_schedule,
    fmt_stat,
    headline_metric,
    make_spec,
    matched_schedule,
    plan_config,
    read_eval,
    seeded,
    stats,
    with_tasks,
)
from multimodel.experiments.joint_vs_single import schedule_note
from multimodel.experiments.statistics import LEVEL, fmt_interval, paired_difference

QUESTION = ("Can a task be added to a trained model, and does it then learn faster than from scratch"
            " while the old tasks keep their quality? (Asked by users of the original; not in the paper.)")

ARM_LABELS = {"after": "added to the trained model", "scratch": "from scratch"}

#: Fraction of the from-scratch final training accuracy used as the "learned" threshold.
THRESHOLD = 0.9

#: The arms in which the old tasks are evaluated.
ARMS_OLD = ("before", "control", "after")


def split_tasks(cfg: Config, new_task: str | None) -> tuple[tuple[str, ...], str]:
    """(old tasks, new task): the new task defaults to the last of ``data.tasks``."""
    tasks = tuple(cfg.data.tasks)
    new = new_task or tasks[-1]
    old = tuple(t for t in tasks if t != new)
    if not old:
        raise ConfigError(f"add-task needs at least one task besides {new!r} in data.tasks")
    return old, new


def plan(cfg: Config, seeds: int, *, new_task: str | None = None, add_steps: int | None = None,
         schedule: str = "matched", vary_data_seed: bool = True) -> Plan:
    old, new = split_tasks(cfg, new_task)
    check_schedule(schedule)
    steps2 = add_steps or cfg.train.steps
    specs = []
    for i in range(seeds):
        base = seeded(cfg, i, vary_data_seed=vary_data_seed)
        before = make_spec(Arm("before", "before", old), i, with_tasks(base, old))
        after = make_spec(Arm("after", "after", (*old, new)), i, with_tasks(base, (*old, new), steps=steps2),
                          init_from="before")
        control_cfg = with_tasks(base, old, steps=max(1, steps2 - after.task_steps[new]))
        control = make_spec(Arm("control", "control", old), i, matched_schedule(control_cfg, steps2, schedule),
                            init_from="before")
        scratch_cfg = with_tasks(base, (new,), steps=max(1, after.task_steps[new]))
        scratch = make_spec(Arm("scratch", "scratch", (new,)), i, matched_schedule(scratch_cfg, steps2, schedule))
        specs += [before, after, control, scratch]
    notes = [f"before: {cfg.train.steps} steps on the {len(old)} old tasks; after: {steps2} more steps on"
             f" all {len(old) + 1} tasks, starting from before's weights; control: the old tasks alone from"
             f" before's weights for the steps they received in after; scratch: {new} alone for exactly"
             " the steps it received in after (at least 1).",
             schedule_note(schedule, "after", cfg.train.warmup_steps)]
    return Plan("add-task", f"Adding {new} to a model trained on {len(old)} tasks", QUESTION, specs,
                ["before", "after", "control", "scratch"], [*old, new], notes)


def steps_to_reach(x: np.ndarray, y: np.ndarray, threshold: float) -> float:
    """First x where y ≥ threshold (NaN if never)."""
    hits = np.nonzero(y >= threshold)[0]
    return float(x[hits[0]]) if hits.size else math.nan


def unk_rate(tokenizer_path: Path, cfg: Config, task: str) -> float | None:
    """Fraction of UNK ids when the new task's training text is encoded with the old vocabulary."""
    from multimodel.data.tokenizer import UNK, Tokenizer
    from multimodel.tasks.task_data import load_task_data

    tokenizer = Tokenizer.from_bytes(tokenizer_path.read_bytes())
    data = load_task_data(with_tasks(cfg, (task,)), splits=("train",), log=lambda _m: None)[task]
    total = unknown = 0
    for ex in data.train:
        for text in (ex.inputs, ex.target):
            if isinstance(text, str):
                ids = tokenizer.encode(text)
                total += len(ids)
                unknown += sum(1 for i in ids if i == UNK)
    return unknown / total if total else None


def analyse(plan_: Plan, out: Path) -> tuple[str, dict[str, Any], list[str]]:
    """Learning speed, forgetting, vocabulary coverage; an extra figure. Returns (markdown, json, figures)."""
    from multimodel.experiments.plots import mean_curve, plot_panels, run_curves

    new = plan_.tasks[-1]
    old = plan_.tasks[:-1]
    by_arm: dict[str, dict[int, Any]] = {}  # column → seed → spec (a shared run keeps its column)
    for spec in plan_.specs:
        by_arm.setdefault(spec.arm.column, {})[spec.seed_index] = spec
    seeds = sorted(by_arm["before"])

    def done(arm: str, i: int) -> bool:
        return (out / "runs" / by_arm[arm][i].name / "eval.json").is_file()

    # Learning speed of the new task (training per-token accuracy vs. steps on the task).
    reach: dict[str, list[float]] = {"after": [], "scratch": []}
    halfway: dict[str, list[float]] = {"after": [], "scratch": []}  # training acc at half the task's steps
    curves: dict[str, dict[str, list]] = {key: {"after": [], "scratch": []} for key in ("accuracy", "loss")}
    thresholds = []
    for i in seeds:
        if not (done("after", i) and done("scratch", i)):
            continue
        got = {arm: run_curves(by_arm[arm][i], out / "runs" / by_arm[arm][i].name).get(new, {})
               for arm in ("after", "scratch")}
        for key in curves:
            for arm in ("after", "scratch"):
                if key in got[arm]:
                    curves[key][arm].append(got[arm][key])
        if "accuracy" not in got["scratch"] or "accuracy" not in got["after"]:
            continue
        threshold = THRESHOLD * float(got["scratch"]["accuracy"][1][-1])
        thresholds.append(threshold)
        half = by_arm["scratch"][i].cfg.train.steps / 2
        for arm in ("after", "scratch"):
            reach[arm].append(steps_to_reach(*got[arm]["accuracy"], threshold))
            halfway[arm].append(float(np.interp(half, *got[arm]["accuracy"])))

    # Forgetting: old tasks after adding the new task vs. the control continued without it.
    forgetting: dict[str, dict[str, Any]] = {}
    measures = (("metric", None), ("acc", "token_accuracy"), ("ppl", "log_perplexity"))
    for task in old:
        metric = headline_metric(task, plan_config(plan_))
        rows: dict[str, dict[int, float]] = {f"{k}_{arm}": {} for k, _ in measures for arm in ARMS_OLD}
        for arm in ARMS_OLD:
            for i in seeds:
                if arm in by_arm and done(arm, i):
                    record = read_eval(out / "runs" / by_arm[arm][i].name)[task]
                    for key, field in measures:
                        value = record["metrics"][metric] if field is None else record[field]
                        rows[f"{key}_{arm}"][i] = float(value)
        forgetting[task] = {k: stats([v[i] for i in sorted(v)]) for k, v in rows.items()}
        for key, field in measures:
            for name, (a, b) in (("change", ("after", "before")), ("forgetting", ("after", "control"))):
                diff = paired_difference(rows[f"{key}_{a}"], rows[f"{key}_{b}"], field or metric)
                forgetting[task][f"{key}_{name}"] = {**stats(diff.values), "interval": diff.to_json()}

    unk = []
    for i in seeds:
        if done("before", i):
            rate = unk_rate(out / "runs" / by_arm["before"][i].name / "tokenizer.model", by_arm["after"][i].cfg, new)
            if rate is not None:
                unk.append(rate)

    lines = [f"## The new task: {new}", ""]
    lines.append(f"Learning speed of {new}, from its training log: steps on {new} needed to reach"
                 f" {THRESHOLD:.0%} of the from-scratch run's final training per-token accuracy (lower is"
                 " faster; '—' = not reached; resolution = train.log_every), and the training per-token"
                 " accuracy half-way through its steps (interpolated between log points).")
    lines.append("")
    lines.append("| arm | steps to threshold | threshold (per-token acc %) | training per-token acc % at half-way |")
    lines.append("|---|---:|---:|---:|")
    for arm in ("after", "scratch"):
        s = stats(reach[arm])
        cell = fmt_stat(s, 0) if s["n"] else "—"
        lines.append(f"| {ARM_LABELS[arm]} | {cell} | {fmt_stat(stats([100 * t for t in thresholds]))} |"
                     f" {fmt_stat(stats([100 * v for v in halfway[arm]]))} |")
    lines.append("")
    if unk:
        lines.append(f"Vocabulary: the old subword vocabulary encodes {new}'s training text with"
                     f" {100 * float(np.mean(unk)):.1f} % UNK ids (sentencepiece, no byte fallback).")
    else:
        lines.append(f"Vocabulary: {new} has no text, so the old vocabulary does not limit it.")
    lines += ["", "## Old tasks: forgetting, measured against a control", "",
              "`control` continues `before` on the old tasks alone for the steps they received in `after`;"
              " forgetting = after − control (negative on a higher-is-better measure = forgotten), paired by"
              f" seed, with its {LEVEL:.0%} t-interval.", "",
              "| task | measure | before | control | after | after − control | interval |",
              "|---|---|---:|---:|---:|---:|---|"]
    for task, f in forgetting.items():
        metric = headline_metric(task, plan_config(plan_))
        for key, label, digits in (("metric", METRIC_LABELS.get(metric, metric), 1), ("acc", "per-token acc %", 1),
                                   ("ppl", "log-perplexity", 3)):
            ci = f[f"{key}_forgetting"]["interval"]
            lines.append(f"| {task} | {label} | {fmt_stat(f[f'{key}_before'], digits)} |"
                         f" {fmt_stat(f[f'{key}_control'], digits)} | {fmt_stat(f[f'{key}_after'], digits)} |"
                         f" {fmt_stat(f[f'{key}_forgetting'], digits)} |"
                         f" {fmt_interval(ci['t_low'], ci['t_high'], digits)} |")

    figures = []
    panels = []
    for key, ylabel, scale in (("accuracy", "training per-token acc %", 100.0), ("loss", "training loss", 1.0)):
        drawn = {}
        for arm in ("after", "scratch"):
            if curves[key][arm]:
                x, y = mean_curve(curves[key][arm])
                drawn[ARM_LABELS[arm]] = (x, y * scale)
        panels.append((f"{new}: added vs. from scratch", ylabel, drawn))
    if any(p[2] for p in panels):
        plot_panels(panels, out / "new_task.png")
        figures.append("new_task.png")
    extra = {"new_task": new, "old_tasks": list(old), "threshold_fraction": THRESHOLD,
             "steps_to_threshold": {k: stats(v) for k, v in reach.items()}, "thresholds": thresholds,
             "training_accuracy_halfway": {k: stats(v) for k, v in halfway.items()},
             "forgetting": forgetting, "unk_rate": unk}
    return "\n".join(lines), extra, figures

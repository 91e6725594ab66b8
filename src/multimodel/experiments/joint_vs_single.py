"""RQ1 + RQ2 (paper Table 2): one model trained jointly on all tasks vs. each task trained alone.

Arms: ``joint`` trains on every task of ``data.tasks`` for ``train.steps`` steps; ``single-<task>``
trains on that task alone. Matched compute (``compute="task"``, the default): each single-task
run gets exactly the number of optimiser steps its task received in the joint run of the same
seed, so both arms see the same number of batches of that task and differ only in whether the
other tasks' steps happen in between. ``compute="total"`` instead gives every single-task run
all ``train.steps`` steps (the single model then sees more data of its task than the joint one).

Matched schedules (``schedule="matched"``, the default): a single-task run's warm-up is the
joint run's scaled by (its steps / the joint run's steps), so its task meets the same learning
rate after the same number of its own steps as in the joint run
(:func:`~multimodel.experiments.grid.matched_schedule`); ``schedule="global"`` keeps the
configured warm-up in every run, which favours the joint arm early.
"""

from __future__ import annotations

from multimodel.config import Config, ConfigError
from multimodel.experiments.grid import Arm, Plan, check_schedule, make_spec, matched_schedule, seeded, with_tasks

QUESTION = ("Does one model trained jointly on several tasks reach the quality of a model trained on"
            " each task alone (RQ1), and do the tasks help each other at similar compute (RQ2)?"
            " Paper, Table 2: about equal on the large tasks, better on the small ones.")


def plan(cfg: Config, seeds: int, *, compute: str = "task", schedule: str = "matched",
         vary_data_seed: bool = True) -> Plan:
    tasks = tuple(cfg.data.tasks)
    if len(tasks) < 2:
        raise ConfigError(f"joint-vs-single needs at least two tasks in data.tasks, got {list(tasks)}")
    if compute not in ("task", "total"):
        raise ConfigError(f"compute must be 'task' or 'total', got {compute!r}")
    check_schedule(schedule)
    specs = []
    for i in range(seeds):
        base = seeded(cfg, i, vary_data_seed=vary_data_seed)
        joint = make_spec(Arm("joint", "joint", tasks), i, with_tasks(base, tasks))
        specs.append(joint)
        for task in tasks:
            steps = joint.task_steps[task] if compute == "task" else base.train.steps
            single = matched_schedule(with_tasks(base, (task,), steps=max(1, steps)), base.train.steps, schedule)
            specs.append(make_spec(Arm(f"single-{task}", "single", (task,)), i, single))
    if compute == "task":
        notes = [f"joint: {cfg.train.steps} steps shared by the tasks (mixing {cfg.train.mixing!r});"
                 " each single-task run gets exactly the steps its task received in the joint run"
                 " of the same seed (at least 1)."]
    else:
        notes = [f"every run, joint or single, gets {cfg.train.steps} steps (compute='total')."]
    notes.append(schedule_note(schedule, "the joint run", cfg.train.warmup_steps))
    return Plan("joint-vs-single", "Joint training vs. single-task training (RQ1, RQ2; paper Table 2)",
                QUESTION, specs, ["joint", "single"], list(tasks), notes)


def schedule_note(schedule: str, reference: str, warmup: int) -> str:
    """The sentence of ``results.md`` that says how the arms' warm-ups relate."""
    if schedule == "matched":
        return (f"schedules matched: {reference} warms up over {warmup} steps; every other run's warm-up is"
                " scaled by (its steps / the reference's steps), so each task meets the same learning rate"
                " after the same number of its own steps (the warm-up column below).")
    return (f"schedules global (schedule='global'): every run warms up over {warmup} of its own global steps,"
            " so runs with fewer steps spend a larger share of their task's steps in warm-up.")

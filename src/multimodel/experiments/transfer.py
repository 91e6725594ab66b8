"""RQ4 (paper Table 3): does parsing gain from training together with unrelated tasks?

Arms: ``alone`` (the parsing task only); ``with-image`` (parsing + an image-classification task,
the paper's ImageNet); ``with-all`` (parsing + every task of ``data.tasks``, other parse-tree
tasks left out so that only one parsing task is in the mix, as in the paper's eight).

Matched compute, two ways (``match``):

* ``"parsing"`` (default): the parsing task receives exactly ``train.steps`` optimiser steps in
  every arm; the joint arms run as many extra steps as their mixing gives the other tasks.
* ``"all"``: ``with-all`` runs ``train.steps`` steps, like the joint run of joint-vs-single (with
  the same tasks in the same order it *is* that run); the parsing task then gets, in ``alone``
  and ``with-image``, exactly the steps it received in ``with-all`` of the same seed.

Matched schedules (``schedule="matched"``, default): the arm that runs ``train.steps`` keeps
``train.warmup_steps``; the others scale it by their steps / ``train.steps``, so parsing meets
the same learning rate after the same number of its own steps in every arm
(:mod:`multimodel.experiments.grid`).

The parsing task defaults to ``ptb_parsing`` (the real WSJ sample, from ``data.data_dir`` or
``data.corpora_dir``) when its data is found, else the built-in ``grammar_parsing``.
"""

from __future__ import annotations

from multimodel.config import Config, ConfigError
from multimodel.experiments.grid import (
    Arm,
    Plan,
    check_schedule,
    make_spec,
    matched_schedule,
    seeded,
    steps_for_task_count,
    with_tasks,
)
from multimodel.experiments.joint_vs_single import schedule_note
from multimodel.tasks import get_task

QUESTION = ("Does a small parsing task gain from being trained with an unrelated image task, or with"
            " all tasks (RQ4)? Paper, Table 3: both joint settings beat parsing alone.")

MATCHES = ("parsing", "all")


def default_parsing_task(cfg: Config) -> str:
    """``ptb_parsing`` when the treebank is found, else ``grammar_parsing``."""
    from multimodel.tasks.task_data import task_data_dir

    try:
        task_data_dir(cfg, get_task("ptb_parsing"))
        return "ptb_parsing"
    except FileNotFoundError:
        return "grammar_parsing"


def plan(cfg: Config, seeds: int, *, parsing_task: str | None = None, image_task: str = "fashion_mnist",
         match: str = "parsing", schedule: str = "matched", vary_data_seed: bool = True) -> Plan:
    parsing = parsing_task or default_parsing_task(cfg)
    if get_task(parsing, cfg).task_token != "To-Parse-Tree":
        raise ConfigError(f"{parsing} is not a parsing task (its task token is not To-Parse-Tree)")
    if not get_task(image_task, cfg).is_classification:
        raise ConfigError(f"{image_task} is not a classification task")
    if match not in MATCHES:
        raise ConfigError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
    check_schedule(schedule)
    others = [t for t in cfg.data.tasks if t not in (parsing, image_task)
              and get_task(t, cfg).task_token != "To-Parse-Tree"]
    # with-all keeps data.tasks' order, so that with the same tasks it is joint-vs-single's joint run.
    chosen = {parsing, image_task, *others}
    everything = tuple([t for t in (parsing, image_task) if t not in cfg.data.tasks]
                       + [t for t in cfg.data.tasks if t in chosen])
    arms = [Arm("alone", "alone", (parsing,)), Arm("with-image", "with-image", (parsing, image_task))]
    notes = []
    if others:
        arms.append(Arm("with-all", "with-all", everything))
    else:
        notes.append("data.tasks adds nothing beyond the parsing and image tasks, so the 'with-all'"
                     " arm would equal 'with-image' and is left out.")
    if match == "all" and not others:
        raise ConfigError("match='all' needs tasks beyond the parsing and image tasks in data.tasks")
    steps = cfg.train.steps
    specs = []
    for i in range(seeds):
        base = seeded(cfg, i, vary_data_seed=vary_data_seed)
        parsing_steps = steps
        if match == "all":
            reference = make_spec(arms[-1], i, with_tasks(base, everything))
            parsing_steps = max(1, reference.task_steps[parsing])
        for arm in arms:
            arm_cfg = with_tasks(base, arm.tasks)
            if arm.tasks == (parsing,):
                arm_cfg = with_tasks(arm_cfg, arm.tasks, steps=parsing_steps)
            elif not (match == "all" and arm.name == "with-all"):
                arm_cfg = with_tasks(arm_cfg, arm.tasks, steps=steps_for_task_count(arm_cfg, parsing, parsing_steps))
            specs.append(make_spec(arm, i, matched_schedule(arm_cfg, steps, schedule)))
    if match == "parsing":
        notes.insert(0, f"{parsing} gets exactly {steps} steps in every arm; the joint arms add the steps"
                        f" their mixing ({cfg.train.mixing!r}) gives the other tasks.")
        reference_name = "the parsing-alone run"
    else:
        notes.insert(0, f"with-all runs {steps} steps (mixing {cfg.train.mixing!r}); {parsing} gets, in every"
                        " other arm, exactly the steps it received there (same seed).")
        reference_name = "the with-all run"
    notes.append(schedule_note(schedule, reference_name, cfg.train.warmup_steps))
    return Plan("transfer", f"Transfer to parsing from unrelated tasks (RQ4; paper Table 3) — {parsing}",
                QUESTION, specs, [a.column for a in arms], [parsing, image_task, *others], notes)

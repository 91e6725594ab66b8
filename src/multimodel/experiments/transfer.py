"""RQ4 (paper Table 3): does parsing gain from training together with unrelated tasks?

Arms: ``alone`` (the parsing task only); ``with-image`` (parsing + an image-classification task,
the paper's ImageNet); ``with-all`` (parsing + every task of ``data.tasks``, other parse-tree
tasks left out so that only one parsing task is in the mix, as in the paper's eight).

Matched compute: the parsing task receives exactly ``train.steps`` optimiser steps in every arm;
the joint arms run as many extra steps as their mixing gives the other tasks. The parsing task
defaults to ``ptb_parsing`` (the real WSJ sample, from ``data.data_dir`` or ``data.corpora_dir``)
when its data is found, else the built-in ``grammar_parsing``.
"""

from __future__ import annotations

from multimodel.config import Config, ConfigError
from multimodel.experiments.grid import Arm, Plan, make_spec, seeded, steps_for_task_count, with_tasks
from multimodel.tasks import get_task

QUESTION = ("Does a small parsing task gain from being trained with an unrelated image task, or with"
            " all tasks (RQ4)? Paper, Table 3: both joint settings beat parsing alone.")


def default_parsing_task(cfg: Config) -> str:
    """``ptb_parsing`` when the treebank is found, else ``grammar_parsing``."""
    from multimodel.tasks.task_data import task_data_dir

    try:
        task_data_dir(cfg, get_task("ptb_parsing"))
        return "ptb_parsing"
    except FileNotFoundError:
        return "grammar_parsing"


def plan(cfg: Config, seeds: int, *, parsing_task: str | None = None, image_task: str = "fashion_mnist",
         vary_data_seed: bool = True) -> Plan:
    parsing = parsing_task or default_parsing_task(cfg)
    if get_task(parsing, cfg).task_token != "To-Parse-Tree":
        raise ConfigError(f"{parsing} is not a parsing task (its task token is not To-Parse-Tree)")
    if not get_task(image_task, cfg).is_classification:
        raise ConfigError(f"{image_task} is not a classification task")
    others = [t for t in cfg.data.tasks if t not in (parsing, image_task)
              and get_task(t, cfg).task_token != "To-Parse-Tree"]
    arms = [Arm("alone", "alone", (parsing,)), Arm("with-image", "with-image", (parsing, image_task))]
    notes = []
    if others:
        arms.append(Arm("with-all", "with-all", (parsing, image_task, *others)))
    else:
        notes.append("data.tasks adds nothing beyond the parsing and image tasks, so the 'with-all'"
                     " arm would equal 'with-image' and is left out.")
    steps = cfg.train.steps
    specs = []
    for i in range(seeds):
        base = seeded(cfg, i, vary_data_seed=vary_data_seed)
        for arm in arms:
            arm_cfg = with_tasks(base, arm.tasks)
            if len(arm.tasks) > 1:
                arm_cfg = with_tasks(arm_cfg, arm.tasks, steps=steps_for_task_count(arm_cfg, parsing, steps))
            specs.append(make_spec(arm, i, arm_cfg))
    notes.insert(0, f"{parsing} gets exactly {steps} steps in every arm; the joint arms add the steps"
                    f" their mixing ({cfg.train.mixing!r}) gives the other tasks.")
    return Plan("transfer", f"Transfer to parsing from unrelated tasks (RQ4; paper Table 3) — {parsing}",
                QUESTION, specs, [a.column for a in arms], [parsing, image_task, *others], notes)

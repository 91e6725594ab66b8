"""The paper's research questions as one command each (``multimodel experiment NAME``).

==================  ============================================  ==========================
experiment          question                                      paper
==================  ============================================  ==========================
joint-vs-single     joint model vs. each task alone (RQ1, RQ2)    Table 2
ablation            without MoE / without attention (RQ3)         Table 4
transfer            parsing alone / + image task / + all (RQ4)    Table 3
add-task            add a task to a trained model; forgetting     (users' request)
baselines           a run vs. a single-task baseline per task     Table 1
==================  ============================================  ==========================

``multimodel reproduce`` (:mod:`multimodel.experiments.reproduce`, ``make reproduce``) runs all of
them at once over shared runs, with seeds, paired intervals (:mod:`multimodel.experiments.statistics`)
and one report (:mod:`multimodel.experiments.report`).

``baselines`` is not a grid: it compares one finished run with a standard model per task
(:func:`multimodel.experiments.baselines.run_baselines`, its own files and table).

Each writes ``OUT/results.md`` (tables, mean ± std over seeds), ``OUT/results.json`` (every
number), ``OUT/curves.png`` (learning curves per task and arm; add-task also ``OUT/new_task.png``)
and keeps its runs under ``OUT/runs/<arm>-s<seed>/`` so an interrupted grid resumes
(:mod:`multimodel.experiments.grid`). Results of small real runs: docs/results.md.
``multimodel analyze-routing`` (:mod:`multimodel.experiments.routing_analysis`) shows which
experts each task uses.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from multimodel.config import Config, ConfigError
from multimodel.experiments import ablation, add_task, joint_vs_single, transfer
from multimodel.experiments.grid import Plan, run_grid, write_results
from multimodel.experiments.plots import plot_learning_curves, require_matplotlib

#: Experiment name → the function that plans its grid.
EXPERIMENTS: dict[str, Callable[..., Plan]] = {
    "joint-vs-single": joint_vs_single.plan,
    "ablation": ablation.plan,
    "transfer": transfer.plan,
    "add-task": add_task.plan,
}


def run_experiment(name: str, cfg: Config, *, seeds: int, out: Path, command: str | None = None,
                   log: Callable[[str], None] = print, **options: Any) -> tuple[Plan, dict[str, str]]:
    """Plan, run (resuming) and report experiment ``name``; returns the plan and each run's status.

    Args:
        name: a key of :data:`EXPERIMENTS`.
        cfg: the base config (tasks, model, steps); arms derive their configs from it.
        seeds: number of seeds per arm.
        out: results directory.
        command: the command line, quoted in ``results.md``.
        log: where progress messages go.
        options: experiment-specific keyword arguments of its ``plan`` (e.g. ``compute``).
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(EXPERIMENTS[name]).parameters
    wrong = sorted(k for k in options if k not in accepted)
    if wrong:
        raise ConfigError(f"experiment {name} takes no option {', '.join(wrong)}")
    require_matplotlib()
    plan = EXPERIMENTS[name](cfg, seeds, **options)
    log(f"{plan.title}: {len(plan.specs)} runs into {out / 'runs'}")
    for note in plan.notes:
        log(f"  {note}")
    status = run_grid(plan, out, log=log)
    figures = []
    if plot_learning_curves(plan, out, out / "curves.png"):
        figures.append("curves.png")
    extra_md, extra_json = "", None
    if name == "add-task":
        extra_md, extra_json, more = add_task.analyse(plan, out)
        figures += more
    path = write_results(plan, out, status, command=command, extra_markdown=extra_md,
                         extra_json=extra_json, figures=figures)
    log(f"\n{path.read_text()}")
    log(f"results: {path}, {out / 'results.json'}" + "".join(f", {out / f}" for f in figures))
    return plan, status


__all__ = ["EXPERIMENTS", "run_experiment"]

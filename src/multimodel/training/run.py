"""What `multimodel train` and `multimodel eval` do: train, evaluate, report, write results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from multimodel.config import Config, ConfigError, apply_overrides
from multimodel.corpora.cache import write_atomically
from multimodel.evaluation.evaluate import TaskResult, describe_input, evaluate_all, format_table
from multimodel.tasks import Task
from multimodel.tasks.task_data import TaskData, attach_collators, load_task_data
from multimodel.pretrained import load_pretrained
from multimodel.training.train import train


def train_and_evaluate(cfg: Config | None, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
                       evaluate: bool = True, progress: bool = True, blind_control: bool = True,
                       resume_from: Path | None = None, log: Callable[[str], None] = print) -> list[TaskResult]:
    """Train, then evaluate every task and write ``eval.json`` and ``results.md`` to ``run_dir``.

    ``resume``, ``resume_from`` and ``overwrite`` are :func:`~multimodel.training.train.train`'s. With
    ``blind_control`` (the default) every task is also scored on blinded inputs
    (``blind_<metric>`` in ``eval.json``, the "blind" column of ``results.md``).
    """
    start = time.time()
    result = train(cfg, run_dir, resume=resume, resume_from=resume_from, overwrite=overwrite, log=log,
                   progress=progress)
    train_seconds = time.time() - start
    if not evaluate or not _is_main():
        return []
    results = evaluate_all(result.model, result.task_data, result.tokenizer, result.config, log=log,
                           blind_control=blind_control)
    report = write_report(run_dir, results, result.task_data, train_seconds=train_seconds,
                          step=result.step)
    log("\n" + report)
    return results


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def write_report(run_dir: Path, results: Sequence[TaskResult], task_data: dict[str, TaskData], *,
                 train_seconds: float | None = None, step: int | None = None) -> str:
    tasks = {name: td.task for name, td in task_data.items()}
    table = format_table(results, tasks)
    lines = [table, "", "Example predictions (first held-out example of each task, greedy/beam as configured):"]
    for r in results:
        for ex in r.examples[:1]:
            pred, ref, blind = ex["prediction"], ex["reference"], ex.get("blind_prediction")
            labels = tasks[r.task].labels
            if labels and isinstance(pred, int):
                pred, ref = labels[pred], labels[ref]
                blind = None if blind is None else labels[blind]
            also = "" if blind is None else f"; blind: {blind!r}"
            lines.append(f"- {r.task}: {ex.get('input', '')!s} → {pred!r} (reference {ref!r}{also})")
    lines += breakdown_lines(results, tasks)
    skipped = {n: td.skipped for n, td in task_data.items() if td.skipped}
    if skipped:
        lines.append(f"Skipped bad records: {skipped}")
    if train_seconds is not None:
        lines.append(f"Training: {step} steps in {train_seconds / 60:.1f} min (data preparation included).")
    report = "\n".join(lines)
    (run_dir / "results.md").write_text(report + "\n")
    # eval.json marks a finished run (experiment grids skip it, reports read it while other runs
    # still train): written whole or not at all, so a reader never sees a partial file.
    evaluation = json.dumps([r.to_json() for r in results], indent=2).encode("utf-8")
    write_atomically(run_dir / "eval.json", lambda handle: handle.write(evaluation))
    return report


def breakdown_lines(results: Sequence[TaskResult], tasks: dict[str, Task]) -> list[str]:
    """One line per task and ``report_by`` field: the headline metric of each value's examples."""
    lines = []
    for r in results:
        for key, groups in r.breakdown.items():
            metric = tasks[r.task].metrics[0]
            cells = ", ".join(f"{value} {scores[metric]:.1f} ({int(scores['count'])})" for value, scores in groups.items())
            lines.append(f"- {r.task} {metric} by {key} (examples): {cells}")
    return ["", "By group:", *lines] if lines else []


def evaluate_checkpoint(path: Path, *, tasks: Sequence[str] | None = None, beam_size: int | None = None,
                        length_penalty: float | None = None, data_dir: str | None = None,
                        blind_control: bool = True, log: Callable[[str], None] = print) -> list[TaskResult]:
    """`multimodel eval`: load a checkpoint, evaluate its tasks on their held-out splits (with the
    blind control unless ``blind_control`` is False). ``beam_size``, ``length_penalty`` and
    ``data_dir`` replace the run's saved settings when given."""
    loaded = load_pretrained(path)
    model, tokenizer = loaded.model, loaded.tokenizer
    overrides = []
    if beam_size is not None:
        overrides.append(f"train.beam_size={beam_size}")
    if length_penalty is not None:
        overrides.append(f"train.length_penalty={float(length_penalty)!r}")
    if data_dir is not None:
        overrides.append(f"data.data_dir={data_dir!r}")
    cfg = apply_overrides(loaded.config, overrides)
    names = list(tasks) if tasks else list(loaded.tasks)
    unknown = sorted(set(names) - set(loaded.tasks))
    if unknown:
        raise ConfigError(f"the checkpoint was not trained on {unknown}; its tasks: {loaded.tasks}")
    task_data = load_task_data(cfg, names, splits=("test",), log=log)
    attach_collators(cfg, task_data, tokenizer, log=log)
    results = evaluate_all(model, task_data, tokenizer, cfg, log=log, blind_control=blind_control)
    tasks = {n: td.task for n, td in task_data.items()}
    log("\n".join(["", format_table(results, tasks), *breakdown_lines(results, tasks)]))
    return results


__all__ = ["train_and_evaluate", "evaluate_checkpoint", "write_report", "breakdown_lines"]

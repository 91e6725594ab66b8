"""The checkpoint's held-out scores for the page: its run's ``eval.json``, each metric with its blind control.

``eval.json`` is written into the run directory after training (``training/run.py``
``write_report``): one record per task with ``metrics`` (the task's own metrics, and
``blind_<metric>`` for each, from the blind control), ``token_accuracy``, ``log_perplexity`` and
``num_examples``, and ``breakdown`` (for tasks with ``report_by`` fields, e.g. speech by voice:
the metrics of each group of examples alone). The blind control scores the same model on the same
held-out examples with their content removed, so a score is evidence of learning only where it
stands clearly above its blind value; the page shows the two side by side, and the headline
metric of each group below.

A checkpoint is ``RUN/checkpoints/step-N/`` (or, for an exported model, a directory of its own
that is its "run"); ``eval.json`` scores the run's final model, so serving an earlier step says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multimodel.evaluation.evaluate import BLIND_PREFIX, METRIC_LABELS
from multimodel.tasks import Task
from multimodel.pretrained import list_checkpoints

EVAL_FILE = "eval.json"
BLIND_EXPLANATION = ("blind: the same model scored on the same held-out examples with their content removed"
                     " (blank images, silence, every word unknown); a score means something only well above it")
LOWER_IS_BETTER = frozenset({"wer"})


@dataclass
class Scores:
    """What ``eval.json`` says about a checkpoint.

    Args:
        records: task name → its ``eval.json`` record (empty when not evaluated).
        path: the ``eval.json`` read, or None when there is none.
        note: a line for the page: why there are no scores, or which model they score.
    """

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    note: str | None = None

    def for_task(self, task: Task) -> dict[str, Any] | None:
        """The API's scores of ``task`` (``TaskScoresOut``), or None when it was not evaluated."""
        record = self.records.get(task.name)
        if record is None:
            return None
        metrics = {name: float(value) for name, value in (record.get("metrics") or {}).items()
                   if _finite(value)}  # NaN/inf are not JSON; a missing value reads as not scored
        headline = [{"metric": name, "label": METRIC_LABELS.get(name, name), "value": metrics[name],
                     "blind": metrics.get(BLIND_PREFIX + name), "lower_is_better": name in LOWER_IS_BETTER}
                    for name in task.metrics if name in metrics]
        return {"metrics": metrics, "headline": headline, "groups": _groups(task, record.get("breakdown")),
                "token_accuracy": _number(record.get("token_accuracy")),
                "log_perplexity": _number(record.get("log_perplexity")),
                "num_examples": int(record["num_examples"]) if _finite(record.get("num_examples")) else None}


def run_dir_of(checkpoint_dir: Path) -> Path:
    """The run directory of ``RUN/checkpoints/step-N``; a checkpoint anywhere else is its own run."""
    checkpoint_dir = Path(checkpoint_dir)
    return checkpoint_dir.parent.parent if checkpoint_dir.parent.name == "checkpoints" else checkpoint_dir


def read_scores(checkpoint_dir: Path | None) -> Scores:
    """The scores in the ``eval.json`` of ``checkpoint_dir``'s run; an empty :class:`Scores` with a
    note when there is none or it cannot be read (the server never fails over it)."""
    if checkpoint_dir is None:
        return Scores(note="not evaluated: the checkpoint's directory is not known")
    run_dir = run_dir_of(checkpoint_dir)
    path = run_dir / EVAL_FILE
    if not path.is_file():
        return Scores(note=f"not evaluated: no {EVAL_FILE} in {run_dir} (`multimodel train` writes it when"
                      " training ends, unless run with --no-eval)")
    try:
        records = json.loads(path.read_text())
        by_task = {str(r["task"]): r for r in records}
    except (OSError, ValueError, TypeError, KeyError) as err:
        return Scores(note=f"not evaluated: {path} cannot be read ({err})")
    latest = list_checkpoints(run_dir / "checkpoints")
    note = None
    if latest and latest[-1].resolve() != Path(checkpoint_dir).resolve():
        note = (f"{path} scores the run's final model ({latest[-1].name}); this server runs"
                f" {Path(checkpoint_dir).name}")
    return Scores(by_task, path, note)


def _groups(task: Task, breakdown: Any) -> list[dict[str, Any]]:
    """The API's ``groups`` (``GroupScoresOut``): per ``report_by`` field, the task's headline
    metric of each value's examples, from an ``eval.json`` record's ``breakdown``; values without a
    finite score are left out, and a record without a breakdown has no groups."""
    if not isinstance(breakdown, dict) or not task.metrics:
        return []
    metric = task.metrics[0]
    out = []
    for key, values in breakdown.items():
        if not isinstance(values, dict):
            continue
        rows = [{"value": str(value), "score": float(scores[metric]), "count": int(scores.get("count", 0))}
                for value, scores in values.items()
                if isinstance(scores, dict) and _finite(scores.get(metric)) and _finite(scores.get("count", 0))]
        if rows:
            out.append({"field": str(key), "metric": metric, "label": METRIC_LABELS.get(metric, metric),
                        "lower_is_better": metric in LOWER_IS_BETTER, "values": rows})
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _finite(value) else None

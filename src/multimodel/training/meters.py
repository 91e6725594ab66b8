"""What the trainer keeps count of between log lines, on the device, and where it writes it.

:class:`TaskMeters` sums each task's :class:`~multimodel.training.step.StepStats` on the
device and is read on the host once per log line; :class:`RoutingTotals` sums the MoE's
routing statistics per task over the whole run (``routing.json``, checkpoints);
:class:`JsonlLogger` appends log records to ``log.jsonl`` and TensorBoard.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multimodel.training.distributed import DistInfo, all_reduce_sum
from multimodel.training.step import StepStats


@dataclass
class TaskTotals:
    """One task's sums between two log lines, read on the host."""

    steps: int
    loss: float
    aux_loss: float
    correct: float
    count: float
    skipped: int
    grad_norm: float

    @property
    def updated(self) -> int:
        return self.steps - self.skipped


class TaskMeters:
    """Per task: sums of loss, balancing loss, correct and real target tokens, gradient norm
    (before clipping), and skipped steps.

    The sums are device tensors; :meth:`read` moves all of them to the host in one transfer.
    A skipped step's (non-finite) loss is left out of the sums and counted as skipped.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = defaultdict(int)

    def add(self, task: str, stats: StepStats) -> None:
        kept = stats.skipped == 0
        row = torch.stack((torch.where(kept, stats.loss.float(), 0.0), torch.where(kept, stats.aux_loss.float(), 0.0),
                           stats.correct * kept, stats.count * kept, stats.skipped,
                           torch.where(kept, stats.grad_norm, 0.0)))  # (6,)
        if task in self.sums:
            self.sums[task] += row
        else:
            self.sums[task] = row
        self.steps[task] += 1

    def read(self) -> dict[str, TaskTotals]:
        if not self.sums:
            return {}
        names = list(self.sums)
        rows = torch.stack([self.sums[n] for n in names]).tolist()  # the one host read per log line
        return {n: TaskTotals(self.steps[n], loss, aux, correct, count, int(skipped), grad_norm)
                for n, (loss, aux, correct, count, skipped, grad_norm) in zip(names, rows)}

    def clear(self) -> None:
        self.sums.clear()
        self.steps.clear()


def log_record(step: int, totals: dict[str, TaskTotals], elapsed: float, lr: float,
               world_size: int) -> dict[str, Any]:
    """The log line of ``step``: per task mean loss, balancing loss, gradient norm before
    clipping and per-token accuracy over the updated steps since the last line; target tokens
    per second over all ranks."""
    record: dict[str, Any] = {"step": step, "lr": lr, "time": time.time()}
    tokens = 0.0
    for name, t in totals.items():
        if t.updated == 0:
            continue
        record[f"loss/{name}"] = t.loss / t.updated
        record[f"aux_loss/{name}"] = t.aux_loss / t.updated
        record[f"grad_norm/{name}"] = t.grad_norm / t.updated
        if t.count:
            record[f"accuracy/{name}"] = t.correct / t.count
        tokens += t.count
    record["tokens_per_s"] = tokens * world_size / max(elapsed, 1e-9)
    losses = [v for k, v in record.items() if k.startswith("loss/")]
    record["loss"] = sum(losses) / len(losses) if losses else math.nan
    return record


@dataclass
class RoutingTotals:
    """Per (task, MoE layer): token-slots per expert and gate sums, summed over training, on the
    device the statistics come from."""

    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    gates: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, task: str, routing: dict[str, Any]) -> None:
        for layer, stats in routing.items():
            if stats is None:
                continue
            for totals, value in ((self.tokens, stats.tokens_per_expert), (self.gates, stats.gate_sum_per_expert)):
                value = value.detach().float()
                previous = totals[task].get(layer)
                totals[task][layer] = value.clone() if previous is None else previous.to(value.device) + value

    def reduced(self, info: DistInfo) -> "RoutingTotals":
        """A copy summed over ranks (every rank trained the same tasks in the same order)."""
        out = RoutingTotals()
        for task in sorted(self.tokens):
            for layer in sorted(self.tokens[task]):
                out.tokens[task][layer] = all_reduce_sum(self.tokens[task][layer], info)
                out.gates[task][layer] = all_reduce_sum(self.gates[task][layer], info)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Host copies, for a checkpoint."""
        return {"tokens": {k: {layer: t.cpu() for layer, t in v.items()} for k, v in self.tokens.items()},
                "gates": {k: {layer: t.cpu() for layer, t in v.items()} for k, v in self.gates.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens = defaultdict(dict, {k: dict(v) for k, v in state["tokens"].items()})
        self.gates = defaultdict(dict, {k: dict(v) for k, v in state["gates"].items()})

    def to_json(self) -> dict[str, Any]:
        """task → layer → fraction of the task's token-slots per expert (and raw counts)."""
        out: dict[str, Any] = {}
        for task, layers in self.tokens.items():
            out[task] = {}
            for layer, counts in layers.items():
                counts = counts.cpu()
                total = float(counts.sum())
                out[task][layer] = {
                    "token_slots": counts.tolist(),
                    "fraction": (counts / total).tolist() if total > 0 else counts.tolist(),
                    "mean_gate": (self.gates[task][layer].cpu() / counts.clamp(min=1)).tolist(),
                }
        return out


class JsonlLogger:
    """Appends one JSON object per line; TensorBoard scalars alongside (main rank only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


__all__ = ["TaskMeters", "TaskTotals", "RoutingTotals", "JsonlLogger", "log_record"]

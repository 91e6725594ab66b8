"""Which experts does each task use? Task × expert heatmaps and a specialisation summary.

The original MultiModel gave no way to see this (PAPER.md, "known weaknesses"). For every MoE
layer (section 2.3 of the paper) we build the matrix ``F`` (tasks × E) of the fraction of each
task's token-slots routed to each expert, draw it as a heatmap, and summarise it:

* normalised entropy ``H(F_t) / log E`` per task (1 = spread evenly over all experts, 0 = one
  expert) and the effective number of experts ``exp H(F_t)``;
* the Jensen–Shannon divergence (base 2, in [0, 1]) between every two tasks' distributions
  (0 = the tasks use the experts identically, 1 = disjoint experts);
* experts *used* by one task only, by none, and by every task, where a task uses an expert when
  it sends it at least half of a uniform share, ``F_t,e ≥ 1 / (2E)``.

Task or modality? :func:`routing_information` asks whether experts specialise by task or
only by input modality. With every task weighted equally (so a task's share of the tokens does
not count), it takes a token-slot's expert ``E``, its task ``T`` and its task's input modality
``M`` (a function of ``T``) and reports, in bits and normalised:

* ``task_information`` = I(E; T) / H(T): 0 = every task routes identically, 1 = the expert
  alone tells the task;
* ``modality_information`` = I(E; M) / H(M), the same for modalities;
* ``modality_share`` = I(E; M) / I(E; T) ∈ [0, 1]: how much of the task-dependence of routing
  the input modality explains (1 = tasks of one modality route alike: specialisation by
  modality; 0 = tasks differ within a modality as much as across: by task).

Two sources: ``heldout`` runs a checkpoint in eval mode (no gating noise, so routing is the
model's deterministic choice) over each task's held-out split; ``training`` reads the trainer's
``routing.json`` (totals over all training steps, noisy gating included). ``auto`` prefers
``heldout`` when a checkpoint and the data are found.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from multimodel.errors import UserError

Log = Callable[[str], None]


@dataclass
class LayerRouting:
    """Routing of one MoE layer.

    Args:
        layer: the layer's name (``encoder.moe``).
        tasks: row labels.
        counts: (tasks, E) token-slots routed to each expert.
    """

    layer: str
    tasks: list[str]
    counts: np.ndarray

    @property
    def fractions(self) -> np.ndarray:
        """(tasks, E): each row sums to 1 (rows with no tokens stay 0)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, totals, out=np.zeros_like(self.counts), where=totals > 0)


def layers_from_json(data: dict[str, dict[str, dict[str, Any]]]) -> dict[str, LayerRouting]:
    """``routing.json`` (task → layer → {"token_slots": [E], ...}) → layer → :class:`LayerRouting`."""
    order = {"encoder": 0, "mixer": 1, "decoder": 2}  # the model's order, input to output
    names = sorted({layer for layers in data.values() for layer in layers},
                   key=lambda n: (order.get(n.split(".")[0], 3), n))
    out = {}
    for layer in names:
        tasks = [t for t in data if layer in data[t]]
        counts = np.asarray([data[t][layer]["token_slots"] for t in tasks], dtype=np.float64)
        out[layer] = LayerRouting(layer, tasks, counts)
    return out


def recompute_routing(path: Path, *, data_dir: str | None = None, eval_size: int | None = None,
                      log: Log = print) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route each task's held-out data through the checkpoint at ``path`` in eval mode.

    Returns the routing in ``routing.json``'s format and a description of the source.
    """
    import torch

    from multimodel.config import apply_overrides
    from multimodel.data.batching import eval_batches
    from multimodel.tasks.task_data import attach_collators, load_task_data
    from multimodel.training.meters import RoutingTotals
    from multimodel.pretrained import load_pretrained
    from multimodel.training.step import model_inputs

    loaded = load_pretrained(path)
    model, tokenizer = loaded.model, loaded.tokenizer
    overrides = []
    if data_dir is not None:
        overrides.append(f"data.data_dir={data_dir!r}")
    if eval_size is not None:  # the same number for every task, the per-task overrides too
        overrides += [f"data.eval_size={int(eval_size)}", "data.eval_sizes={}"]
    cfg = apply_overrides(loaded.config, overrides)
    task_data = load_task_data(cfg, loaded.tasks, splits=("test",), log=log)
    attach_collators(cfg, task_data, tokenizer)
    totals = RoutingTotals()
    model.eval()
    with torch.no_grad():
        for name, td in task_data.items():
            for _, batch in eval_batches(td.test, td.collate, cfg.data.batch_size):
                args, kwargs = model_inputs(batch, td.task)
                totals.add(name, model(*args, **kwargs).routing)
    source = {"source": "heldout", "checkpoint": str(loaded.directory),
              "examples_per_task": {n: len(td.test) for n, td in task_data.items()},
              "num_experts": cfg.model.moe.num_experts, "top_k": cfg.model.moe.top_k}
    return totals.to_json(), source


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (0 … 1)."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / m[mask])).sum())

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def specialisation(lr: LayerRouting) -> dict[str, Any]:
    """The numbers of the module docstring for one layer."""
    frac = lr.fractions
    n_tasks, n_experts = frac.shape
    log_e = math.log(n_experts) if n_experts > 1 else 1.0
    entropy = {t: _entropy(frac[i]) / log_e for i, t in enumerate(lr.tasks)}
    effective = {t: math.exp(_entropy(frac[i])) for i, t in enumerate(lr.tasks)}
    js = np.zeros((n_tasks, n_tasks))
    for i in range(n_tasks):
        for j in range(i + 1, n_tasks):
            js[i, j] = js[j, i] = js_divergence(frac[i], frac[j])
    used = frac >= 1.0 / (2 * n_experts)  # (tasks, E)
    users = used.sum(axis=0)
    only_one = {int(e): lr.tasks[int(np.nonzero(used[:, e])[0][0])] for e in np.nonzero(users == 1)[0]}
    pairs = [js[i, j] for i in range(n_tasks) for j in range(i + 1, n_tasks)]
    return {
        "layer": lr.layer, "tasks": lr.tasks, "num_experts": n_experts,
        "token_slots": {t: float(lr.counts[i].sum()) for i, t in enumerate(lr.tasks)},
        "fractions": frac.tolist(),
        "normalised_entropy": entropy, "effective_experts": effective,
        "js_divergence": js.tolist(), "mean_js_divergence": float(np.mean(pairs)) if pairs else None,
        "experts_used_by_one_task": only_one,
        "experts_used_by_no_task": [int(e) for e in np.nonzero(users == 0)[0]],
        "experts_used_by_every_task": [int(e) for e in np.nonzero(users == n_tasks)[0]],
        "top_expert": {t: int(frac[i].argmax()) for i, t in enumerate(lr.tasks)},
    }


def routing_information(lr: LayerRouting, groups: dict[str, str]) -> dict[str, Any]:
    """I(E;T), I(E;G) with tasks weighted equally; ``groups`` maps each task to its group (its
    input modality). Tasks with no token-slots in the layer are left out. See the module docstring."""
    keep = [i for i, t in enumerate(lr.tasks) if lr.counts[i].sum() > 0]
    tasks = [lr.tasks[i] for i in keep]
    frac = lr.fractions[keep]  # (T, E): p(e | t)
    n = len(tasks)
    out: dict[str, Any] = {"layer": lr.layer, "tasks": tasks, "groups": {t: groups[t] for t in tasks}}
    if n < 2:
        return {**out, "task_bits": None, "modality_bits": None, "task_information": None,
                "modality_information": None, "modality_share": None}
    log2 = math.log(2.0)
    h_e = _entropy(frac.mean(axis=0)) / log2  # H(E), p(t) = 1/T
    task_bits = max(0.0, h_e - float(np.mean([_entropy(row) for row in frac])) / log2)
    names = sorted({groups[t] for t in tasks})
    members = {g: [i for i, t in enumerate(tasks) if groups[t] == g] for g in names}
    p_g = np.asarray([len(members[g]) / n for g in names])
    h_g = _entropy(p_g) / log2
    modality_bits = max(0.0, h_e - sum(p * _entropy(frac[members[g]].mean(axis=0)) / log2
                                       for p, g in zip(p_g, names)))
    modality_bits = min(modality_bits, task_bits)  # M is a function of T; guard rounding
    return {**out, "task_bits": task_bits, "modality_bits": modality_bits,
            "task_information": task_bits / math.log2(n),
            "modality_information": modality_bits / h_g if h_g > 0 else None,
            "modality_share": modality_bits / task_bits if task_bits > 1e-9 and h_g > 0 else None}


def verdict(mean_js: float | None, mean_entropy: float) -> str:
    """A one-line reading of a layer's numbers."""
    if mean_js is None:
        return "one task only: nothing to compare."
    if mean_js < 0.1:
        kind = "largely shared: the tasks send their tokens to nearly the same experts"
    elif mean_js < 0.4:
        kind = "partly specialised: the tasks overlap but prefer different experts"
    else:
        kind = "specialised: the tasks use mostly different experts"
    spread = "spread over many experts" if mean_entropy > 0.8 else "concentrated on a few experts"
    return f"{kind}; within a task, routing is {spread} (mean normalised entropy {mean_entropy:.2f})."


def summary_markdown(results: list[dict[str, Any]], source: dict[str, Any], figures: dict[str, str]) -> str:
    lines = ["# Routing analysis", ""]
    if source["source"] == "heldout":
        lines.append(f"Source: held-out data of each task routed through `{source['checkpoint']}` in eval mode"
                     f" (no gating noise); examples per task: {source['examples_per_task']}.")
    else:
        lines.append(f"Source: `{source['path']}`, token-slot totals over all training steps (noisy gating).")
    lines += ["", "A task *uses* an expert when it routes at least half a uniform share (1/2E) of its"
              " token-slots there. Jensen–Shannon divergence in bits: 0 = identical routing, 1 = disjoint.", ""]
    for r in results:
        layer, tasks = r["layer"], r["tasks"]
        lines += [f"## {layer} ({r['num_experts']} experts)", "", f"![{layer}]({figures[layer]})", ""]
        lines += ["| task | token-slots | normalised entropy | effective experts | top expert (share) |",
                  "|---|---:|---:|---:|---|"]
        for i, t in enumerate(tasks):
            top = r["top_expert"][t]
            lines.append(f"| {t} | {r['token_slots'][t]:.0f} | {r['normalised_entropy'][t]:.2f} |"
                         f" {r['effective_experts'][t]:.1f} | {top} ({100 * r['fractions'][i][top]:.0f} %) |")
        lines.append("")
        if len(tasks) > 1:
            lines += ["Pairwise Jensen–Shannon divergence:", "",
                      "| | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
            for i, t in enumerate(tasks):
                lines.append(f"| {t} | " + " | ".join(f"{v:.2f}" for v in r["js_divergence"][i]) + " |")
            lines.append("")
        only = r["experts_used_by_one_task"]
        only_text = ", ".join(f"{e} ({t})" for e, t in sorted(only.items())) or "none"
        lines.append(f"Experts used by one task only: {only_text}. Used by no task:"
                     f" {r['experts_used_by_no_task'] or 'none'}. Used by every task:"
                     f" {len(r['experts_used_by_every_task'])} of {r['num_experts']}.")
        mean_entropy = float(np.mean(list(r["normalised_entropy"].values())))
        lines += ["", f"Reading: {verdict(r['mean_js_divergence'], mean_entropy)}", ""]
    return "\n".join(lines)


def analyze_routing(path: Path, out: Path | None = None, *, source: str = "auto", data_dir: str | None = None,
                    eval_size: int | None = None, log: Log = print) -> dict[str, Any]:
    """`multimodel analyze-routing`: heatmaps (one PNG per MoE layer), ``routing.md``, ``routing_analysis.json``.

    Args:
        path: a run directory or a checkpoint directory.
        out: output directory (default ``PATH/routing``).
        source: ``heldout``, ``training`` or ``auto`` (see the module docstring).
        data_dir: where the held-out data is (default: the checkpoint config's).
        eval_size: held-out examples per task (default: the checkpoint config's).
    """
    from multimodel.experiments.plots import plot_routing_heatmap, require_matplotlib
    from multimodel.pretrained import CheckpointError, resolve_checkpoint

    path = Path(path)
    if source not in ("auto", "heldout", "training"):
        raise UserError(f"source must be auto, heldout or training, got {source!r}")
    require_matplotlib()
    routing_json = path / "routing.json"
    data: dict[str, Any] | None = None
    info: dict[str, Any] = {}
    if source in ("auto", "heldout"):
        try:
            resolve_checkpoint(path)
            data, info = recompute_routing(path, data_dir=data_dir, eval_size=eval_size, log=log)
        except (CheckpointError, FileNotFoundError) as err:
            if source == "heldout" or not routing_json.is_file():
                raise
            log(f"held-out routing unavailable ({err}); using {routing_json}")
    if data is None:
        if not routing_json.is_file():
            raise FileNotFoundError(f"{routing_json}: not found; give a run directory that finished training"
                                    " or a checkpoint (held-out routing)")
        data = json.loads(routing_json.read_text())
        info = {"source": "training", "path": str(routing_json)}
    layers = layers_from_json(data)
    if not layers:
        raise UserError(f"{path}: no MoE routing recorded (was the model trained with model.use_moe=false?)")
    out = Path(out) if out is not None else path / "routing"
    out.mkdir(parents=True, exist_ok=True)
    results, figures, heatmaps = [], {}, {}
    for name, lr in layers.items():
        fig = f"routing-{name.replace('.', '-')}.png"
        heatmaps[name] = plot_routing_heatmap(lr.fractions, lr.tasks, out / fig,
                                              title=f"{name}: % of each task's token-slots per expert")
        figures[name] = fig
        results.append(specialisation(lr))
    md = summary_markdown(results, info, figures)
    (out / "routing.md").write_text(md + "\n")
    (out / "routing_analysis.json").write_text(json.dumps({"source": info, "layers": results}, indent=1))
    log(md)
    log(f"written: {out / 'routing.md'}, {out / 'routing_analysis.json'}, "
        + ", ".join(str(out / f) for f in figures.values()))
    return {"source": info, "layers": results, "heatmaps": heatmaps, "out": out}


__all__ = ["analyze_routing", "recompute_routing", "layers_from_json", "routing_information", "specialisation",
           "LayerRouting"]

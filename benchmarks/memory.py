"""Memory of a training step with the memory savers off and on: ``train.precision=bf16`` and
``train.activation_checkpointing=true`` (src/multimodel/training/memory.py).

Demo preset, each demo task shape at batch 32 (as benchmarks/train_step.py), the trainer's own
``train_step``. Each configuration runs in a fresh process and reports:

* **saved for backward**: the bytes of the tensors autograd keeps for the backward pass during
  one step's forward (``torch.autograd.graph.saved_tensors_hooks``, each storage counted
  once, the parameters themselves not counted; autocast's bf16 copies of them are): the
  activations, which is what both savers act on. Under activation checkpointing a
  checkpointed block's own saved tensors are not kept (the hook sees none of them) and its
  inputs are kept by reference, not through the hook: the figure counts what the rest of the
  model saves, a lower bound.
* **peak − before**: the resident high-water mark (VmHWM, reset once the model and the batch
  exist) over two steps, minus the resident size then: what training adds (activations,
  gradients, Adam's moments, and freed memory the allocator keeps), the same for every
  configuration except for the activations.

    python benchmarks/memory.py              # demo preset, 4 tasks × 4 configurations (~3 minutes)
    python benchmarks/memory.py --quick      # tiny preset, one task: smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import SPECS, VOCAB, as_batch, _proc_status_mb, _reset_hwm, adam, demo_batches, preset  # noqa: E402

from multimodel.model.multimodel import MultiModel  # noqa: E402
from multimodel.training.memory import checkpoint_body_blocks  # noqa: E402
from multimodel.training.step import train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATIONS = {
    "float32": {"precision": "float32", "checkpointing": False},
    "bf16": {"precision": "bf16", "checkpointing": False},
    "checkpointing": {"precision": "float32", "checkpointing": True},
    "bf16 + checkpointing": {"precision": "bf16", "checkpointing": True},
}


def saved_bytes(step: Any, model: torch.nn.Module) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``step()`` runs, the
    parameters themselves not counted (autocast's bf16 copies of them are)."""
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in parameters:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, one task, in this (fresh) process."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = MultiModel(preset(spec["preset"]), VOCAB, SPECS).train()
    if spec["checkpointing"]:
        checkpoint_body_blocks(model)
    optimizer = adam(model)
    kwargs = demo_batches(spec["batch"], spec["scale"])[spec["task"]]
    batch, task_kwargs = as_batch(kwargs, "benchmark")

    def step() -> None:
        train_step(model, optimizer, None, batch, task_kwargs, grad_clip=2.0, precision=spec["precision"])

    before = _proc_status_mb("VmRSS")
    reset = _reset_hwm()
    saved = saved_bytes(step, model)  # the first step (Adam's moments appear here)
    step()
    peak = _proc_status_mb("VmHWM") if reset else None
    return {"saved_mb": saved / 2**20, "before_mb": before, "peak_mb": peak}


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, one task, small batch: smoke test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(run_probe(json.loads(args.probe))))
        return 0
    name, batch, scale = ("tiny", 4, 0.5) if args.quick else ("demo", 32, 1.0)
    tasks = ["text"] if args.quick else ["classification", "captioning", "speech", "text"]
    print(f"## Memory savers (benchmarks/memory.py)\n\nCommand: `python benchmarks/memory.py"
          f" {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(f"{name} preset, batch {batch}, {args.threads} thread(s); each row a fresh process. 'saved' = bytes autograd"
          " keeps for the backward during one step; 'peak − before' = resident high-water mark over two steps minus"
          " the resident size once model and batch exist (MB); ratios against float32 of the same task.\n")
    print("| task | configuration | saved (MB) | saved ratio | peak − before (MB) | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for task in tasks:
        base: dict[str, float] = {}
        for label, options in CONFIGURATIONS.items():
            r = probe({"preset": name, "task": task, "batch": batch, "scale": scale, "threads": args.threads,
                       **options})
            grown = None if r["peak_mb"] is None else r["peak_mb"] - r["before_mb"]
            base = base or {"saved": r["saved_mb"], "grown": grown or float("nan")}
            grown_text = "n/a" if grown is None else f"{grown:.0f} | {grown / base['grown']:.2f}"
            print(f"| {task} | {label} | {r['saved_mb']:.1f} | {r['saved_mb'] / base['saved']:.2f} | {grown_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

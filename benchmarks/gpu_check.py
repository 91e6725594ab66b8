"""A few minutes on one GPU: step time and peak memory of the trainer's own step (not yet run;
docs/scaling.md, "On a GPU", says where its figures go).

1. **Demo preset**, each demo task shape at batch 32 (as benchmarks/train_step.py), float32 and
   bf16 autocast (``train.precision``): median seconds per step and peak allocated memory.
2. **Paper preset at 1/8 scale**: the paper's model (hidden 1536, k = 4, every dense part)
   with 30 experts per MoE layer instead of 240, i.e. what one GPU holds in an 8-GPU
   ``train.expert_parallel=8`` run, on a text→text batch (``--paper-batch`` × 64 source and
   64 target tokens) in bf16, with and without activation checkpointing: seconds per step,
   target tokens per second, peak allocated memory.

Each configuration builds its own model and Adam state, takes warm-up steps, then times
``--reps`` steps with ``torch.cuda.synchronize`` around each; peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps. Results also go to ``--json``.

    python benchmarks/gpu_check.py                          # one GPU, ~3-5 minutes
    python benchmarks/gpu_check.py --device cpu --quick     # smoke test of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import SPECS, VOCAB, as_batch, adam, demo_batches, preset, text_batch  # noqa: E402

from multimodel.config import load_config  # noqa: E402
from multimodel.model.multimodel import MultiModel  # noqa: E402
from multimodel.training.memory import checkpoint_body_blocks  # noqa: E402
from multimodel.training.step import train_step  # noqa: E402


def paper_eighth() -> Any:
    """The paper's model config with 240 / 8 = 30 experts per MoE layer."""
    model = load_config("paper").model
    return replace(model, moe=replace(model.moe, num_experts=model.moe.num_experts // 8))


def measure(config: Any, kwargs: dict[str, Any], device: torch.device, precision: str, checkpointing: bool,
            warmup: int, reps: int) -> dict[str, Any]:
    """Median step time and peak memory of ``train_step`` on one batch."""
    torch.manual_seed(0)
    model = MultiModel(config, VOCAB, SPECS).train()
    if checkpointing:
        checkpoint_body_blocks(model)
    model.to(device)
    optimizer = adam(model)
    batch, task_kwargs = as_batch(kwargs, "check")
    batch = batch.to(device)
    cuda = device.type == "cuda"

    def step() -> None:
        train_step(model, optimizer, None, batch, task_kwargs, grad_clip=2.0, precision=precision)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    tokens = int(kwargs["target_mask"].sum()) if kwargs["target_mask"] is not None else len(kwargs["targets"])
    parameters = sum(p.numel() for p in model.parameters())
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return {"step_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "peak_gib": peak,
            "target_tokens": tokens, "parameters": parameters}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--paper-batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny preset, small batches, 1 rep: smoke test")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    warmup, reps = (1, 1) if args.quick else (3, args.reps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"## One-GPU check (benchmarks/gpu_check.py)\n\nCommand: `python benchmarks/gpu_check.py"
          f" {' '.join(argv if argv is not None else sys.argv[1:])}`  \nDevice: {name}, torch {torch.__version__}\n")
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "rows": []}

    demo = preset("tiny" if args.quick else "demo")
    print(f"### {'Tiny' if args.quick else 'Demo'} preset, batch {4 if args.quick else 32}\n")
    print("| task | precision | step (s) [min, max] | peak (GiB) |\n|---|---|---:|---:|")
    for task, kwargs in demo_batches(4 if args.quick else 32, 0.5 if args.quick else 1.0).items():
        for precision in ("float32", "bf16"):
            r = measure(demo, kwargs, device, precision, False, warmup, reps)
            results["rows"].append({"preset": "demo", "task": task, "precision": precision, **r})
            print(f"| {task} | {precision} | {r['step_s']:.4f} [{r['min_s']:.4f}, {r['max_s']:.4f}] | {r['peak_gib']:.2f} |")

    paper = preset("tiny") if args.quick else paper_eighth()
    batch = 2 if args.quick else args.paper_batch
    kwargs = text_batch(batch, 16 if args.quick else 64, 16 if args.quick else 64)
    print(f"\n### Paper preset at 1/8 scale ({paper.moe.num_experts} experts per MoE layer), text→text, batch {batch}\n")
    print("| precision | activation checkpointing | step (s) [min, max] | target tokens/s | peak (GiB) |")
    print("|---|---|---:|---:|---:|")
    for checkpointing in (False, True):
        r = measure(paper, kwargs, device, "bf16", checkpointing, warmup, reps)
        results["rows"].append({"preset": "paper/8", "task": "text", "precision": "bf16",
                                "activation_checkpointing": checkpointing, **r})
        print(f"| bf16 | {'yes' if checkpointing else 'no'} | {r['step_s']:.3f} [{r['min_s']:.3f}, {r['max_s']:.3f}] |"
              f" {r['target_tokens'] / r['step_s']:,.0f} | {r['peak_gib']:.1f} |")
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

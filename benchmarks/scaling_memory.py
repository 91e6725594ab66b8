"""Per-rank memory of the paper preset under each layout (docs/scaling.md), computed from the
model's own parameter shapes: the model is built on the meta device (no memory, no data).

* **Static memory per rank**: float32 weights (4 B/parameter), gradients (4 B) and Adam's two
  moments (8 B), for data parallelism (DDP: everything on every rank), expert parallelism
  (``train.expert_parallel=P``: E/P experts per rank, dense replicated) and expert parallelism
  with FSDP (``train.shard=fsdp``: dense parameters sharded over all W ranks), on W = 8, 16 and
  64 GPUs. P is the largest number dividing both W and the 240 experts (16 on 64 GPUs: four
  replicas of each expert), or 8, one node's GPUs, where the all-to-all stays inside a node.
* **Activations per token**: bytes autograd keeps for the backward in one training forward of
  a text→text batch (source and target ``--length`` tokens; meta tensors, so only shapes
  count), per target token, in float32 and under bf16 autocast, with and without activation
  checkpointing (block inputs counted), assuming the gate spreads the tokens evenly over the
  experts (the expert counts a meta tensor cannot give). Autocast does not run on meta
  tensors, so bf16 is measured on a real CPU model with ``--few-experts`` experts, plus the
  float32 gate tensors of the other experts (see :func:`activations_per_token`).

Not counted: DDP's gradient buckets (an extra 4 B per replicated parameter unless
``gradient_as_bucket_view``), FSDP's all-gathered unit during its forward and backward (the
largest unit is printed), autocast's bf16 copies of the weights it uses, the all-to-all
buffers (a few activations' worth), the CUDA context and allocator slack.

    python benchmarks/scaling_memory.py                   # the paper preset (~1 minute)
    python benchmarks/scaling_memory.py --config tiny     # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import replace
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from multimodel.config import PAD_ID, load_config
from multimodel.layers.moe import MixtureOfExperts
from multimodel.model.multimodel import MultiModel
from multimodel.training.memory import body_blocks, checkpoint_body_blocks

SPECS = ["text", "image", "audio", "class_label:1000"]
WORLDS = (8, 16, 64)
GIB = 2**30
STATIC_BYTES = {"weights": 4, "gradients": 4, "Adam": 8}


def build(config: str, num_experts: int | None = None, device: str = "meta") -> MultiModel:
    """The preset's model on ``device``; ``num_experts`` replaces the preset's number of experts."""
    cfg = load_config(config).model
    if num_experts is not None:
        cfg = replace(cfg, moe=replace(cfg.moe, num_experts=num_experts))
    torch.manual_seed(0)
    with torch.device(device):
        return MultiModel(cfg, load_config(config).data.vocab_size, SPECS)


def parameter_counts(model: MultiModel) -> dict[str, int]:
    """Expert, dense and total parameters, and the largest FSDP unit (layout.py's units)."""
    experts = sum(p.numel() for m in model.modules() if isinstance(m, MixtureOfExperts)
                  for p in (m.w1, m.b1, m.w2, m.b2))
    total = sum(p.numel() for p in model.parameters())
    units = [*model.encoder.blocks, model.encoder.moe, model.mixer, *model.decoder.blocks, model.decoder.moe]
    sizes = [sum(p.numel() for p in u.parameters()) for u in units if u is not None]
    sizes = [s - (experts // 2 if u is not None and isinstance(u, type(model.encoder.moe)) else 0)
             for s, u in zip(sizes, [u for u in units if u is not None])]
    root = total - experts - sum(sizes)
    return {"experts": experts, "dense": total - experts, "total": total, "largest_unit": max(sizes + [root]),
            "root": root, "num_experts": model.config.moe.num_experts}


def expert_parallel(world: int, num_experts: int, cap: int | None = None) -> int:
    """The largest P dividing both the world size and the experts (at most ``cap``)."""
    return max(p for p in range(1, world + 1) if world % p == 0 and num_experts % p == 0 and (cap is None or p <= cap))


def layouts(counts: dict[str, int], world: int) -> Iterator[tuple[str, float, float]]:
    """(layout, dense parameters per rank, expert parameters per rank)."""
    E, dense, experts = counts["num_experts"], counts["dense"], counts["experts"]
    yield "DDP", dense, experts
    for P in sorted({expert_parallel(world, E, cap=8), expert_parallel(world, E)}):
        yield f"expert parallel {P} ({E // P} experts/rank)", dense, experts / P
        yield f"expert parallel {P} + FSDP", dense / world, experts / P


@contextmanager
def balanced_expert_counts(model: MultiModel) -> Iterator[None]:
    """On meta tensors the MoE's one host read (its per-expert slot counts) has no values:
    answer it with an even spread of each call's slots."""
    slots: list[int] = []

    def note(module: MixtureOfExperts, args: tuple[Any, ...]) -> None:
        x = args[0]
        slots.append(x.shape[0] * x.shape[1] * module.top_k)

    hooks = [m.register_forward_pre_hook(note) for m in model.modules() if isinstance(m, MixtureOfExperts)]

    class Balanced(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            if getattr(func, "__name__", "") == "tolist" and args[0].is_meta:
                rows, width = args[0].shape
                S, E = slots[-1], width - 1
                return [[S // E + (e < S % E) for e in range(E)] + [0] for _ in range(rows)]
            return func(*args, **(kwargs or {}))

    try:
        with Balanced():
            yield
    finally:
        for hook in hooks:
            hook.remove()


def saved_bytes(model: MultiModel, length: int, precision: str) -> int:
    """Bytes autograd keeps for the backward of one training forward of a text→text batch of
    one example (``length`` source and target tokens), parameters not counted."""
    model.train()
    device = next(model.parameters()).device
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def keep(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage._cdata not in parameters:
            seen[storage._cdata] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        keep(t)
        return t

    # A checkpointed block keeps its input (outside the saved-tensor hooks); a plain block's
    # input is counted here too if something saves it.
    hooks = [b.register_forward_pre_hook(lambda m, args: keep(args[0]) if getattr(m.forward, "checkpointed", False)
                                         else None) for b in body_blocks(model)]
    ids = torch.full((1, length), PAD_ID + 5, dtype=torch.long, device=device)
    mask = torch.ones(1, length, dtype=torch.bool, device=device)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    counts = balanced_expert_counts(model) if device.type == "meta" else contextlib.nullcontext()
    with counts, autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, mask, ids, mask, input_modality="text", target_modality="text", task_token="To-German")
    for hook in hooks:
        hook.remove()
    return sum(seen.values())


def per_token(model: MultiModel, length: int, precision: str) -> float:
    """Bytes kept per target token, between ``length // 2`` and ``length`` tokens: what does
    not grow with the tokens (autocast's bf16 copies of the weights) cancels out."""
    half = length // 2
    return (saved_bytes(model, length, precision) - saved_bytes(model, half, precision)) / (length - half)


def activations_per_token(config: str, length: int, few_experts: int) -> dict[tuple[str, bool], float]:
    """Per (precision, activation checkpointing): bytes kept per target token.

    float32 on the meta device, with every expert. bf16 needs autocast, which runs on real
    tensors only: a CPU model with ``few_experts`` experts, plus what the other experts add
    (the gate's (tokens, E) tensors, float32 under autocast too) from the meta runs."""
    exact, small, real = build(config), build(config, few_experts), build(config, few_experts, "cpu")
    out = {}
    for checkpointing in (False, True):
        if checkpointing:
            for model in (exact, small, real):
                checkpoint_body_blocks(model)
        full = per_token(exact, length, "float32")
        out["float32", checkpointing] = full
        out["bf16", checkpointing] = per_token(real, length, "bf16") + full - per_token(small, length, "float32")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--length", type=int, default=64, help="source and target tokens of the text batch")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU, for the last column")
    parser.add_argument("--few-experts", type=int, default=8,
                        help="experts of the real CPU model that measures bf16 activations")
    args = parser.parse_args(argv)

    model = build(args.config)
    counts = parameter_counts(model)
    print(f"## Per-rank memory of the {args.config} preset (benchmarks/scaling_memory.py)\n")
    print(f"Command: `python benchmarks/scaling_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(f"Parameters: {counts['total'] / 1e9:.3f} B in all (modalities {', '.join(SPECS)}); experts"
          f" {counts['experts'] / 1e9:.3f} B ({counts['num_experts']} per MoE layer, 2 layers); dense"
          f" {counts['dense'] / 1e9:.3f} B. Largest FSDP unit {counts['largest_unit'] / 1e6:.1f} M parameters"
          f" (the root: modality nets and task embeddings, {counts['root'] / 1e6:.1f} M).\n")

    print("### Activations per target token (text→text, source = target = "
          f"{args.length} tokens; bytes kept for the backward)\n")
    print("| precision | activation checkpointing | KiB / token |")
    print("|---|---|---:|")
    per_token = activations_per_token(args.config, args.length, args.few_experts)
    for (precision, checkpointing), value in per_token.items():
        print(f"| {precision} | {'yes' if checkpointing else 'no'} | {value / 1024:.0f} |")

    act = per_token["bf16", True]
    print(f"\n### Static memory per rank (GiB: float32 weights + gradients + Adam) and target tokens per rank that"
          f" fit in {args.gpu_gib:g} GiB with bf16 + activation checkpointing ({act / 1024:.0f} KiB/token)\n")
    print("| GPUs | layout | weights | gradients | Adam | total | tokens / rank |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for world in WORLDS:
        for name, dense, experts in layouts(counts, world):
            parts = {k: (dense + experts) * b / GIB for k, b in STATIC_BYTES.items()}
            total = sum(parts.values())
            free = args.gpu_gib - total
            fits = "none" if free <= 0 else f"{math.floor(free * GIB / act):,d}"
            print(f"| {world} | {name} | {parts['weights']:.1f} | {parts['gradients']:.1f} | {parts['Adam']:.1f} |"
                  f" {total:.1f} | {fits} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

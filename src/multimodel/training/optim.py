"""Optimiser and learning-rate schedule: Adam with the released code's betas and epsilon,
warm-up then 1/sqrt decay.

The "noam" schedule (Vaswani et al. 2017; tensor2tensor's later ``multimodel_base``) rises
linearly for ``warmup_steps`` and then decays with the inverse square root of the step. The
code released with the paper used a different one (learning rate 0.05, an exponential warm-up
over 3,000 steps, then roughly constant; docs/architecture.md, Deviations). We scale it so its peak equals
``learning_rate``, which makes the learning rate a number a user can reason about.

The update uses PyTorch's fused Adam kernel (one kernel over all parameters instead of a loop of
small ops; about 4× faster for the optimiser update) whenever every parameter is a floating-point
tensor on CPU or CUDA, and the default implementation otherwise. The two agree to float32
rounding. A resumed run keeps the implementation its checkpoint was written with: the saved
optimiser state carries the ``fused`` flag, so an older (unfused) checkpoint continues unfused.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multimodel.config import TrainConfig


def noam_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    s = step + 1
    w = max(1, warmup_steps)
    return min(s / w, math.sqrt(w / s))


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Whether PyTorch's fused Adam kernel takes ``params``: floating point, on CPU or CUDA."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[tuple[list[str], dict[str, float]]]:
    """The optimiser's parameter groups by parameter name, with their options: one group, or
    with weight decay the matrices (decayed) then the vectors. This is the order a checkpoint's
    optimiser state follows, whatever the layout (:mod:`multimodel.training.full_state`)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if cfg.weight_decay <= 0:
        return [([name for name, _ in named], {})]
    return [([name for name, p in named if p.ndim >= 2], {"weight_decay": cfg.weight_decay}),
            ([name for name, p in named if p.ndim < 2], {"weight_decay": 0.0})]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (or AdamW when weight_decay > 0) with the noam schedule; fused when :func:`can_fuse`.

    The groups are :func:`parameter_groups`'; under FSDP each is split in two, its sharded
    parameters (DTensors) and the others (the experts of an expert-parallel run), because the
    fused kernel takes one kind of tensor per group."""
    by_name = dict(model.named_parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    fused = True if can_fuse(params) else None  # None: PyTorch's default implementation
    groups = []
    for names, options in parameter_groups(model, cfg):
        kinds = [[by_name[n] for n in names if hasattr(by_name[n], "device_mesh") == sharded] for sharded in (False, True)]
        groups += [{"params": kind, **options} for kind in kinds if kind] or [{"params": [], **options}]
    if cfg.weight_decay > 0:
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=fused)
    else:
        optimizer = torch.optim.Adam(groups, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                     fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: noam_factor(step, cfg.warmup_steps))
    return optimizer, scheduler

"""Optimiser and learning-rate schedule of the original code: Adam, warm-up then 1/sqrt decay.

The "noam" schedule (Vaswani et al. 2017) rises linearly for ``warmup_steps`` and then
decays with the inverse square root of the step. We scale it so its peak equals
``learning_rate``, which makes the learning rate a number a user can reason about.
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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (or AdamW when weight_decay > 0) with the noam schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.weight_decay > 0:
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps)
    else:
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: noam_factor(step, cfg.warmup_steps))
    return optimizer, scheduler

"""Optimiser and learning-rate schedule: Adam with the released code's betas and epsilon,
warm-up then a constant rate (or 1/sqrt decay), optionally a final linear cool-down to zero.

The code released with the paper used learning rate 0.05, an exponential warm-up over 3,000
steps, then a roughly constant rate (docs/architecture.md, Deviations). The default,
``train.lr_decay='none'``, takes that shape after a linear warm-up: it rises linearly for
``warmup_steps`` and then holds the peak. ``train.lr_decay='rsqrt'`` is the "noam" schedule
(Vaswani et al. 2017; tensor2tensor's later ``multimodel_base``): the same linear rise, then a
decay with the inverse square root of the step. We scale either so its peak equals
``learning_rate``, which makes the learning rate a number a user can reason about.

``train.cooldown_fraction`` (off by default: the paper has none) multiplies the schedule, over
the last fraction of training, by a factor falling linearly to zero (the "decay" phase of a
warm-up/stable/decay schedule; Hägele et al. 2024 measure its gain over 1/sqrt at a fixed
budget). The end of training is ``train.steps`` or, when a time budget is set, whichever of the
two comes first: the trainer tells the schedule how much of the budget has passed after every
step (:attr:`LearningRateSchedule.clock_progress`). Without a time budget the learning rate is
a pure function of the step, so a resumed run follows it exactly; with one it follows the clock,
as the number of steps does (a resumed run gets a new budget, and its cool-down starts again).

The update uses PyTorch's fused Adam kernel (one kernel over all parameters instead of a loop of
small ops; about 4× faster for the optimiser update) whenever every parameter is a floating-point
tensor on CPU or CUDA, and the default implementation otherwise. The two agree to float32
rounding. A resumed run keeps the implementation its checkpoint was written with: the saved
optimiser state carries the ``fused`` flag, so an older (unfused) checkpoint continues unfused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from multimodel.config import TrainConfig


def noam_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    s = step + 1
    w = max(1, warmup_steps)
    return min(s / w, math.sqrt(w / s))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The linear warm-up alone: rising to 1 over ``warmup_steps``, then 1."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


@dataclass
class LearningRateSchedule:
    """The learning-rate multiplier per optimiser step: the warm-up (then constant, or noam), times the cool-down.

    Args:
        warmup_steps: linear warm-up steps (``train.warmup_steps``).
        steps: the run's last step (``train.steps``).
        cooldown_fraction: the last fraction of training over which the multiplier falls
            linearly to zero; 0 = none (``train.cooldown_fraction``).
        decay: after the warm-up, 'none' (constant) or 'rsqrt' (``train.lr_decay``).
        clock_progress: the fraction of the time budget spent so far (0 without a budget); set
            by the training loop.
    """

    warmup_steps: int
    steps: int
    cooldown_fraction: float = 0.0
    decay: str = "none"
    clock_progress: float = 0.0

    def progress(self, step: int) -> float:
        """How far training is at optimiser step ``step`` (0-based): steps or clock, the further."""
        return max(step / max(1, self.steps), self.clock_progress)

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
        shape = noam_factor if self.decay == "rsqrt" else warmup_factor
        return shape(step, self.warmup_steps) * cooldown_factor(self.progress(step), self.cooldown_fraction)


def cooldown_factor(progress: float, fraction: float) -> float:
    """1 until the last ``fraction`` of training, then falling linearly to 0 at ``progress`` 1."""
    if fraction <= 0:
        return 1.0
    return min(1.0, max(0.0, 1.0 - progress) / fraction)


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


def build_optimizer(model: nn.Module, cfg: TrainConfig, schedule: LearningRateSchedule | None = None,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (or AdamW when weight_decay > 0) with ``schedule`` (default: the one ``cfg``
    describes, see :func:`schedule_for`); fused when :func:`can_fuse`.

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
    schedule = schedule_for(cfg) if schedule is None else schedule
    # A lambda, not the schedule object: LambdaLR saves an object's attributes in its state
    # dict, and a resumed run must take steps and budget from its own config.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step))
    return optimizer, scheduler


def schedule_for(cfg: TrainConfig) -> LearningRateSchedule:
    """The learning-rate schedule ``cfg`` describes."""
    return LearningRateSchedule(cfg.warmup_steps, cfg.steps, cfg.cooldown_fraction, cfg.lr_decay)

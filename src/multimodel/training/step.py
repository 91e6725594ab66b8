"""One training step, the one every caller shares: the trainer, the benchmarks and the tests.

forward through the task's modality nets and the shared body → label-smoothed loss + MoE
balancing loss → backward → clip → Adam → learning-rate schedule (MultiModel section 3).

The step never reads a tensor on the host. Its statistics stay on the device
(:class:`StepStats`), and a step whose loss or gradient norm is not finite is skipped on the
device: PyTorch's fused Adam takes a ``found_inf`` flag and leaves weights, moments and its
step count untouched when it is set (the mechanism ``torch.amp.GradScaler`` uses). Only an
optimiser without that kernel (a parameter off CPU/CUDA, or a non-float one) needs the flag
on the host, once per step. The MoE's dropless dispatch reads its per-expert token counts;
that is the model's one host read (``tests/training/test_step.py`` names it; with expert
parallelism the same read also takes the other ranks' counts, which size the all-to-all).

The parallel layouts (:mod:`multimodel.training.layout`) plug in here: the module called is the
model or its DDP wrapper, and the layout reduces the sharded experts' gradients and computes the
global gradient norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from multimodel.data.batching import Batch
from multimodel.layers.moe import RoutingStats
from multimodel.tasks import Task
from multimodel.training.distributed import DistInfo, all_reduce_sum
from multimodel.training.layout import Layout
from multimodel.training.memory import autocast


@dataclass
class StepStats:
    """What one step measured, as device tensors (read them on the host only when logging).

    Args:
        loss: () the task's label-smoothed loss, averaged over its real target tokens.
        aux_loss: () the MoE balancing loss of the step.
        correct: () target tokens (or labels) predicted right.
        count: () real target tokens (labels for a classifier) in this rank's batch.
        skipped: () 1.0 when the update was skipped for a non-finite loss or gradient, else 0.0.
        grad_norm: () the global gradient norm before clipping.
        routing: per MoE layer, where this batch's tokens went.
    """

    loss: torch.Tensor
    aux_loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor
    skipped: torch.Tensor
    grad_norm: torch.Tensor
    routing: dict[str, RoutingStats]


def model_inputs(batch: Batch, task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of MultiModel.forward for ``batch``."""
    return (batch.inputs, batch.input_mask, batch.targets, batch.target_mask), {
        **task.model_kwargs, **padding_hints(batch)}


def padding_hints(batch: Batch) -> dict[str, bool]:
    """MultiModel.forward's hints that a side of ``batch`` has no padding (the collator's)."""
    return {"input_padded": batch.input_padded, "target_padded": batch.target_padded}


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batch: Batch,
    task_kwargs: Mapping[str, str | None],
    *,
    grad_clip: float,
    dist_info: DistInfo | None = None,
    parameters: list[nn.Parameter] | None = None,
    layout: Layout | None = None,
    precision: str = "float32",
    loss_multiplier: float = 1.0,
    normalize_gradients: bool = False,
) -> StepStats:
    """Train ``model`` on one batch of one task (already on the model's device).

    Args:
        model: a :class:`~multimodel.model.multimodel.MultiModel`, or its
            ``DistributedDataParallel`` wrapper in a data-parallel run.
        optimizer: from :func:`~multimodel.training.optim.build_optimizer`.
        scheduler: the learning-rate schedule, advanced after every step, skipped ones too
            (the schedule follows the step count); None to leave the rate alone.
        batch: this rank's share of the global batch.
        task_kwargs: which task the batch is, as ``MultiModel.forward``'s keywords
            (:attr:`~multimodel.tasks.task.Task.model_kwargs`: its modalities and task token).
        grad_clip: maximum global gradient norm.
        dist_info: the process group; in a data-parallel run each rank's per-token mean loss is
            weighted by its share of the global token count, so DDP's gradient average is the
            global per-token mean, and a step is skipped on every rank when any rank saw a
            non-finite value.
        parameters: the parameters to clip (default: all of ``model``'s).
        layout: where the parameters live (:mod:`multimodel.training.layout`): with sharded
            experts their gradients are reduced over their replicas, and with any sharding the
            clipping norm is the global one. None: every rank holds everything.
        precision: ``train.precision``; "bf16" runs the forward under bfloat16 autocast
            (:mod:`multimodel.training.memory`).
        loss_multiplier: the task's factor on its loss (``train.loss_multipliers``); the
            statistics report the loss without it.
        normalize_gradients: rescale the gradient to global norm 1 instead of clipping it
            (``train.normalize_gradients``).
    """
    params = list(model.parameters()) if parameters is None else parameters
    with autocast(precision, batch.targets.device):
        out = model(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **task_kwargs,
                    **padding_hints(batch))
    task_loss = out.loss.loss * loss_multiplier if loss_multiplier != 1.0 else out.loss.loss
    distributed = dist_info is not None and dist_info.enabled
    if distributed:
        global_count = all_reduce_sum(out.loss.count.detach().float(), dist_info)
        task_loss = task_loss * (out.loss.count * dist_info.world_size / global_count)
    loss = task_loss + out.aux_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if layout is not None:
        layout.reduce_expert_gradients()
    clip = nn.utils.clip_grad_norm_ if layout is None else layout.clip_gradients
    grad_norm = bound_gradients(params, grad_clip, normalize_gradients, clip)
    found_inf = (~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))).float()
    if distributed:
        found_inf = (all_reduce_sum(found_inf, dist_info) > 0).float()
    _apply_update(optimizer, found_inf)
    if scheduler is not None:
        scheduler.step()
    return StepStats(loss=out.loss.loss.detach(), aux_loss=out.aux_loss.detach(),
                     correct=out.loss.correct.detach().float(), count=out.loss.count.detach().float(),
                     skipped=found_inf, grad_norm=grad_norm.detach().float(), routing=out.routing)


def bound_gradients(params: list[nn.Parameter], grad_clip: float, normalize: bool,
                    clip: Callable[[list[nn.Parameter], float], torch.Tensor] = nn.utils.clip_grad_norm_,
                    ) -> torch.Tensor:
    """Clip the gradients of ``params`` to global norm ``grad_clip`` or, with ``normalize``
    (``train.normalize_gradients``), rescale them to global norm 1; return their global norm
    before either. ``clip(params, max_norm)`` clips and returns that norm (a layout's
    :meth:`~multimodel.training.layout.Layout.clip_gradients` when parameters are sharded)."""
    norm = clip(params, 1.0 if normalize else grad_clip)
    if normalize:  # clipped to norm ≤ 1 above; a smaller gradient is scaled up to 1
        grads = [g.to_local() if hasattr(g, "to_local") else g for g in (p.grad for p in params) if g is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / norm.clamp(1e-12, 1.0))
    return norm


def _apply_update(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``found_inf`` is set; without a host read when the optimiser
    is fused (its kernel checks the flag), with one otherwise."""
    fused = all(group.get("fused") for group in optimizer.param_groups)
    if fused:
        optimizer.found_inf = found_inf  # read by the fused kernel, as GradScaler does
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(found_inf):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # a skipped step must not leave its gradients behind


__all__ = ["StepStats", "train_step", "model_inputs", "bound_gradients"]

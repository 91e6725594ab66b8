"""Where a multi-rank run keeps the model: data parallel, expert parallel, FSDP (docs/scaling.md).

Every layout trains the same model on the same global batch with the same step
(:func:`~multimodel.training.step.train_step`); they differ in what each rank holds:

* **data parallel** (the default under torchrun): every rank holds everything;
  DistributedDataParallel averages the gradients.
* **expert parallel** (``train.expert_parallel=P``): the world's ranks form groups of P
  consecutive ranks; each rank of a group holds E/P of every MoE layer's experts
  (:mod:`multimodel.layers.expert_parallel`) and the dense parameters. DDP averages the dense
  gradients over all ranks and ignores the experts; an expert's gradient (which already holds
  the contributions of every token of its group, brought back by the all-to-all) is summed over
  the ranks that hold the same experts in the other groups, the expert's *replicas*
  (:meth:`Layout.reduce_expert_gradients`).
* **FSDP** (``train.shard=fsdp``): the dense parameters, their gradients and Adam's moments are
  sharded over all ranks with FSDP2 (one unit per body block, per MoE sublayer's gate and norm,
  and the rest at the root); combined with expert parallelism the experts stay out of FSDP.

Scaling the gradient: each rank's loss is weighted by W × its share of the global tokens
(W = world size; :func:`~multimodel.training.step.train_step`), so the mean over ranks that
DDP and FSDP take is the global per-token mean. An expert on rank r gets Σ over the ranks s of
its group of W·∂(tokens of s)/G; summed over its replicas that is W × the global gradient,
hence the 1/W.

Gradient clipping uses the global norm: replicated gradients count once, FSDP shards and
expert gradients are summed over the ranks that hold different pieces (one all-reduce).

Dimensions: W ranks in all, P ranks per expert-parallel group, W/P groups (replicas of each
expert), E experts per MoE layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from multimodel.config import ConfigError, TrainConfig
from multimodel.layers.expert_parallel import ExpertShard
from multimodel.layers.moe import MixtureOfExperts
from multimodel.training.distributed import DistInfo, all_reduce_sum
from multimodel.training.memory import checkpoint_body_blocks

EXPERT_WEIGHTS = ("w1", "b1", "w2", "b2")
"""A MoE layer's expert parameters, stacked over experts along dim 0 (the dim that is sharded)."""


@dataclass
class Layout:
    """This rank's place in the run's layout; what the step and checkpoints need of it.

    Args:
        dist_info: the process group.
        expert_shard: this rank's experts (None: every rank holds every expert).
        expert_replicas: the ranks that hold the same experts as this one (one per
            expert-parallel group), or None.
        fsdp: the dense parameters are FSDP2 shards (DTensors).
        expert_params: this rank's expert parameters, by name (their slices when sharded).
    """

    dist_info: DistInfo = field(default_factory=DistInfo)
    expert_shard: ExpertShard | None = None
    expert_replicas: dist.ProcessGroup | None = None
    fsdp: bool = False
    expert_params: dict[str, nn.Parameter] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        """Whether some rank holds only part of the model (checkpoints are then gathered)."""
        return self.expert_shard is not None or self.fsdp

    def reduce_expert_gradients(self) -> None:
        """Sum each sharded expert gradient over the expert's replicas and divide by W (see
        the module docstring); a no-op unless the experts are sharded."""
        if self.expert_shard is None:
            return
        grads = [p.grad for p in self.expert_params.values() if p.grad is not None]
        replicas = self.dist_info.world_size // self.expert_shard.size
        for grad in grads:
            if replicas > 1:
                dist.all_reduce(grad, group=self.expert_replicas)
        if grads:
            torch._foreach_mul_(grads, 1.0 / self.dist_info.world_size)

    def clip_gradients(self, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Scale the gradients so their global norm is at most ``max_norm``; return the norm (a
        device tensor, the same on every rank). :func:`torch.nn.utils.clip_grad_norm_` when no
        rank holds a piece of the model."""
        if not self.sharded:
            return nn.utils.clip_grad_norm_(parameters, max_norm)
        experts = {id(p) for p in self.expert_params.values()}
        replicated, pieces, expert = [], [], []
        for p in parameters:
            if p.grad is None:
                continue
            if id(p) in experts:
                expert.append(p.grad)
            elif hasattr(p.grad, "to_local"):  # an FSDP shard (DTensor): its local piece
                pieces.append(p.grad.to_local())
            else:
                replicated.append(p.grad)
        device = next(iter(parameters)).device
        replicas = self.dist_info.world_size // (self.expert_shard.size if self.expert_shard else 1)
        spread = _squares(pieces, device) + _squares(expert, device) / replicas  # different on every rank
        total = (_squares(replicated, device) + all_reduce_sum(spread, self.dist_info)).sqrt()
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_
        grads = replicated + pieces + expert
        if grads:
            torch._foreach_mul_(grads, scale)
        return total


def _squares(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Σ of the squared entries of ``grads`` (float32 at least), a () tensor."""
    if not grads:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm(grads)
    return torch.stack([n.float() for n in norms]).square().sum()


def moe_layers(model: nn.Module) -> list[MixtureOfExperts]:
    return [m for m in model.modules() if isinstance(m, MixtureOfExperts)]


def check_layout(cfg: TrainConfig, dist_info: DistInfo, num_experts: int) -> None:
    """The layout fits the world: ``expert_parallel`` divides the world size and the experts."""
    P = cfg.expert_parallel
    if P > 1 and dist_info.world_size % P:
        raise ConfigError(f"train.expert_parallel={P} must divide the number of ranks ({dist_info.world_size});"
                          " launch with torchrun --nproc-per-node a multiple of it")
    if P > 1 and num_experts % P:
        raise ConfigError(f"train.expert_parallel={P} must divide model.moe.num_experts ({num_experts})")


def apply_layout(model: nn.Module, cfg: TrainConfig, dist_info: DistInfo,
                 device: torch.device) -> tuple[Layout, nn.Module]:
    """Place ``model`` (full, on the CPU) for this rank: checkpoint its blocks if asked, keep its
    share of the experts, move it to ``device``, and wrap it for the layout. Returns the layout
    and the module the step calls (``model`` itself, or its DDP wrapper). A collective."""
    moes = moe_layers(model)
    check_layout(cfg, dist_info, moes[0].num_experts if moes else 1)
    if cfg.activation_checkpointing:
        checkpoint_body_blocks(model)
    layout = Layout(dist_info=dist_info)
    if dist_info.enabled:
        for moe in moes:  # balance the experts over the global batch
            moe.sync_statistics = True
    if cfg.expert_parallel > 1 and moes:
        layout.expert_shard, layout.expert_replicas = _expert_groups(dist_info, cfg.expert_parallel,
                                                                     moes[0].num_experts)
        for moe in moes:
            moe.shard_experts(layout.expert_shard)
        owners = {id(m): name for name, m in model.named_modules()}
        layout.expert_params = {f"{owners[id(m)]}.{w}": getattr(m, w) for m in moes for w in EXPERT_WEIGHTS}
    model.to(device)
    if not dist_info.enabled:
        return layout, model
    if cfg.shard == "fsdp":
        _fully_shard(model, device, dist_info, set(layout.expert_params.values()))
        layout.fsdp = True
        return layout, model
    if layout.expert_params:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(layout.expert_params))
    return layout, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                           find_unused_parameters=True)


def _expert_groups(dist_info: DistInfo, P: int, num_experts: int) -> tuple[ExpertShard, dist.ProcessGroup]:
    """Groups of P consecutive ranks each hold all experts (one node's GPUs, for a fast
    all-to-all); rank g·P + j holds the j-th share, as do its replicas j, P + j, 2P + j, ...
    Every rank creates every group, in the same order."""
    W = dist_info.world_size
    group, _ = dist.new_subgroups_by_enumeration([list(range(g * P, (g + 1) * P)) for g in range(W // P)])
    replicas, _ = dist.new_subgroups_by_enumeration([list(range(j, W, P)) for j in range(P)])
    return ExpertShard(group, dist_info.rank % P, P, num_experts), replicas


def _fully_shard(model: nn.Module, device: torch.device, dist_info: DistInfo, experts: set[nn.Parameter]) -> None:
    """FSDP2 over all ranks: one unit per body block and MoE sublayer (the experts left out),
    the modality nets and the rest at the root. Units are modules the model calls (FSDP's
    hooks run on ``module(...)``; the modality nets' ``bottom``/``top`` are methods)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist_info.world_size,))
    body = [*model.encoder.blocks, model.encoder.moe, model.mixer, *model.decoder.blocks, model.decoder.moe]
    for unit in body:
        if unit is not None:
            fully_shard(unit, mesh=mesh, ignored_params=experts or None)
    fully_shard(model, mesh=mesh, ignored_params=experts or None)


__all__ = ["Layout", "apply_layout", "check_layout", "moe_layers", "EXPERT_WEIGHTS"]

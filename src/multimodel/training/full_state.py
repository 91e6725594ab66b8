"""Checkpoints that do not depend on the layout: the full model and optimiser state.

Whatever the layout (:mod:`multimodel.training.layout`), a checkpoint holds what one process
training the whole model would hold: ``model.safetensors`` with every expert (so
:func:`multimodel.pretrained.load_pretrained` loads it on one CPU), and the optimiser and
schedule state indexed as :func:`~multimodel.training.optim.parameter_groups` orders the
parameters. Saving gathers the pieces tensor by tensor (FSDP shards with
``DTensor.full_tensor``, expert slices with an all-gather over their expert-parallel group)
and only the main rank keeps them, on the CPU; resuming loads the full weights into the full
model *before* the layout is applied, and the optimiser state through :func:`load_optimizer`,
which takes this rank's piece of each tensor. A run saved on 2 ranks therefore resumes on 1,
on 4, or under another layout.

In a layout where every rank holds everything (one process, DDP) the optimiser's own state
dict already has this form and is saved and loaded as it is, as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from multimodel.config import TrainConfig
from multimodel.layers.expert_parallel import all_gather
from multimodel.model.multimodel import MultiModel
from multimodel.training.layout import Layout
from multimodel.training.optim import parameter_groups


def full_tensor(layout: Layout, name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` (parameter ``name``, or a tensor of its optimiser state) at full size. A collective
    for a sharded tensor; ``t`` itself otherwise."""
    if hasattr(t, "full_tensor"):  # an FSDP shard
        return t.full_tensor()
    shard = layout.expert_shard
    if shard is not None and name in layout.expert_params and t.dim() >= 1:
        out = t.new_empty((shard.size * t.shape[0], *t.shape[1:]))  # (E, ...)
        all_gather(out, t, shard.group)
        return out
    return t


def local_piece(layout: Layout, name: str, param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This rank's piece of ``full``, a full-size tensor of parameter ``param`` (``name``) or
    of its optimiser state. No communication: every rank read the same checkpoint."""
    if full.dim() == 0:  # Adam's step count
        return full
    shard = layout.expert_shard
    if shard is not None and name in layout.expert_params:
        return full[shard.experts].clone()
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return full


def full_weights(model: nn.Module, layout: Layout) -> dict[str, torch.Tensor] | None:
    """Every weight of ``model`` at full size on the CPU, on the main rank (None on the
    others). A collective: every rank calls it."""
    main = layout.dist_info.is_main
    out: dict[str, torch.Tensor] = {}
    gathered: dict[int, torch.Tensor] = {}  # a tied parameter is gathered once
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in gathered:
            full = full_tensor(layout, name, t.detach())
            gathered[id(t)] = full.cpu() if main else full[:0]
        out[name] = gathered[id(t)]
    return out if main else None


def model_with(model: MultiModel, weights: dict[str, torch.Tensor], *, materialise: bool) -> MultiModel:
    """A MultiModel like ``model`` holding ``weights`` (from :func:`full_weights`), on the CPU.
    ``materialise=False`` builds it on the meta device and adopts the tensors (nothing
    allocated; for writing it out); True builds a working copy (for evaluation), without
    touching the random number generators."""
    if materialise:
        with torch.random.fork_rng(devices=[]):
            full = MultiModel(model.config, model.vocab_size, model.modality_specs)
        full.load_state_dict(weights)
        return full
    with torch.device("meta"):
        full = MultiModel(model.config, model.vocab_size, model.modality_specs)
    full.load_state_dict(weights, assign=True)
    return full


def _names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """The name of each parameter in the optimiser's own order (its state's indices)."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _group_map(optimizer: torch.optim.Optimizer, model: nn.Module, cfg: TrainConfig) -> list[int]:
    """For each of the optimiser's groups, the index of the :func:`parameter_groups` group it is
    part of (FSDP splits each in two)."""
    canonical = {name: g for g, (names, _) in enumerate(parameter_groups(model, cfg)) for name in names}
    names = _names(optimizer, model)
    first, out = 0, []
    for group in optimizer.param_groups:
        out.append(canonical[names[first]] if group["params"] else len(out))
        first += len(group["params"])
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, layout: Layout,
                         cfg: TrainConfig) -> dict[str, Any] | None:
    """The optimiser's state dict as one process would save it; on the main rank (None on the
    others). A collective in a sharded layout."""
    own = optimizer.state_dict()
    if not layout.sharded:
        return own
    names, canonical = _names(optimizer, model), parameter_groups(model, cfg)
    index = {name: i for i, name in enumerate(n for group, _ in canonical for n in group)}
    state: dict[int, dict[str, Any]] = {}
    for i, name in enumerate(names):  # the same order on every rank: the gathers line up
        for key, value in own["state"].get(i, {}).items():
            full = full_tensor(layout, name, value) if isinstance(value, torch.Tensor) else value
            state.setdefault(index[name], {})[key] = full.cpu() if isinstance(full, torch.Tensor) else full
    mapping = _group_map(optimizer, model, cfg)
    groups = []
    for g, (group_names, _) in enumerate(canonical):
        like = own["param_groups"][mapping.index(g)] if g in mapping else own["param_groups"][0]
        groups.append({**{k: v for k, v in like.items() if k != "params"}, "params": [index[n] for n in group_names]})
    return {"state": state, "param_groups": groups} if layout.dist_info.is_main else None


def load_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, layout: Layout, cfg: TrainConfig,
                   saved: dict[str, Any]) -> None:
    """Load a :func:`full_optimizer_state` (or an older checkpoint's optimiser state, which has
    the same form), taking this rank's piece of every tensor."""
    if not layout.sharded:
        optimizer.load_state_dict(saved)
        return
    canonical = parameter_groups(model, cfg)
    saved_names = [n for group, _ in canonical for n in group]
    by_name = {saved_names[int(i)]: entry for i, entry in saved["state"].items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    own = optimizer.state_dict()
    state = {i: {k: local_piece(layout, name, params[i], v) if isinstance(v, torch.Tensor) else v
                 for k, v in by_name[name].items()}
             for i, name in enumerate(_names(optimizer, model)) if name in by_name}
    mapping = _group_map(optimizer, model, cfg)
    groups = [{**{k: v for k, v in saved["param_groups"][mapping[g]].items() if k != "params"}, "params": group["params"]}
              for g, group in enumerate(own["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def full_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer,
                         model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """The schedule's state dict with one entry per :func:`parameter_groups` group in its
    per-group lists (as one process saves it)."""
    mapping = _group_map(optimizer, model, cfg)
    count = len(parameter_groups(model, cfg))
    return {k: [v[mapping.index(g)] for g in range(count)] if _per_group(v, mapping) else v
            for k, v in scheduler.state_dict().items()}


def load_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer,
                   model: nn.Module, cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Load a :func:`full_scheduler_state`, one entry per group of this optimiser."""
    mapping = _group_map(optimizer, model, cfg)
    count = len(parameter_groups(model, cfg))
    scheduler.load_state_dict({k: [v[g] for g in mapping] if isinstance(v, list) and len(v) == count else v
                               for k, v in saved.items()})


def _per_group(value: Any, mapping: list[int]) -> bool:
    return isinstance(value, list) and len(value) == len(mapping)


__all__ = ["full_weights", "model_with", "full_optimizer_state", "load_optimizer", "full_scheduler_state",
           "load_scheduler", "full_tensor", "local_piece"]

"""Scale-out with PyTorch's own engine: torchrun and its process group.

``torchrun --nproc-per-node N -m multimodel train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; we
join the process group (gloo on CPU, NCCL on GPU). Every rank trains the same task at the
same step (the task sampler is a pure function of the step) on its own shard of the global
batch, so the ranks' graphs match and their collectives line up. How the model is placed over
the ranks (data parallel, expert parallel, FSDP) is :mod:`multimodel.training.layout`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from multimodel.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """The number of ranks torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world_size = launched_world_size()
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity in a single process)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def select_device(name: str) -> torch.device:
    """The device ``train.device`` names; "auto" is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but CUDA is not available; use train.device=cpu")
    return torch.device(name)

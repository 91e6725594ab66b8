"""The layers and batches tests/layers/test_expert_parallel.py runs both ways (shared with its worker)."""

import torch
from torch import nn

from multimodel.config import MoEConfig
from multimodel.layers.moe import MixtureOfExperts

CASES = {
    "dropless": dict(capacity_factor=None, idle_rank=False),
    "capacity": dict(capacity_factor=0.75, idle_rank=False),
    "a rank with only padding": dict(capacity_factor=None, idle_rank=True),
}


def make_layer(case: str) -> MixtureOfExperts:
    """D = 8, E = 4, K = 2, no gate noise (its draws would depend on each rank's batch), a
    random gate (zero at initialisation, which ties every expert)."""
    torch.manual_seed(0)
    config = MoEConfig(num_experts=4, top_k=2, expert_hidden_size=16, noisy_gating=False,
                       capacity_factor=CASES[case]["capacity_factor"])
    moe = MixtureOfExperts(8, config).train()
    nn.init.normal_(moe.w_gate)
    return moe


def case_inputs(case: str, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch (world · 2 rows of 5 tokens, some padding), its mask and the loss weights;
    rank r takes rows r, r + world, ..."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(world * 2, 5, 8, generator=g)
    mask = torch.rand(world * 2, 5, generator=g) > 0.3
    mask[:, 0] = True
    if CASES[case]["idle_rank"]:
        mask[1::world] = False  # rank 1 holds only padding
    weight = torch.randn(world * 2, 5, 8, generator=g)
    return x, mask, weight

"""A dense feed-forward layer with the mixture-of-experts interface (for ablations).

It is one "expert" applied to every token: ``Linear -> ReLU -> Linear``. It returns
``(out, aux_loss, routing)`` like :class:`multimodel.layers.moe.MixtureOfExperts`, with a zero
auxiliary loss and no routing statistics, so it can stand wherever a MoE layer stands.

Dimensions: B batch, T time, D hidden size, F feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.config import MoEConfig


class FeedForward(nn.Module):
    """Position-wise ``W2 ReLU(W1 x)``; padded positions give zeros, as in the MoE layer.

    Args:
        hidden_size: D.
        config: only ``expert_hidden_size`` (F) is used, so a MoE config can be reused.
    """

    def __init__(self, hidden_size: int, config: MoEConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, config.expert_hidden_size)
        self.fc2 = nn.Linear(config.expert_hidden_size, hidden_size)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, statistics: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """x (B, T, D), mask (B, T) or None -> (out (B, T, D), zero aux loss, None).

        ``statistics`` is accepted for the MoE interface; there are none to compute.
        """
        out = self.fc2(F.relu(self.fc1(x)))
        if mask is not None:
            out = out * mask[..., None].to(out.dtype)
        return out, x.new_zeros(()), None

"""The mixture-of-experts sublayer of the encoder and decoder (MultiModel §2.3–2.4).

    x -> LayerNorm(x + Dropout(MoE(x)))

The released code wraps its MoE layer this way in both stacks: the experts' output, after
dropout, is added to the input and the sum is layer-normalised. The auxiliary loss and routing
statistics of the MoE layer pass through unchanged.

Dimensions: B batch, T time, D hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.dropout import Dropout
from multimodel.layers.moe import MixtureOfExperts, RoutingStats


class MoESublayer(nn.Module):
    """``LayerNorm(x + Dropout(experts(x)))`` around a :class:`MixtureOfExperts`.

    Args:
        config: model config (``hidden_size``, ``moe``, ``dropout``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.experts = MixtureOfExperts(config.hidden_size, config.moe)
        self.dropout = Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, *, statistics: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, RoutingStats | None]:
        """(B, T, D), mask (B, T) or None -> ((B, T, D), aux loss, routing statistics).

        ``statistics=False`` (incremental decoding) skips the balancing loss and the statistics.
        """
        out, aux_loss, stats = self.experts(x, mask, statistics=statistics)
        if self.training:
            out = self.dropout(out)
        return self.norm(x + out), aux_loss, stats

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for a decoding step's tokens, as at evaluation: (N, D) -> (N, D)."""
        norm = self.norm
        return F.layer_norm(x + self.experts.step(x), norm.normalized_shape, norm.weight, norm.bias, norm.eps)

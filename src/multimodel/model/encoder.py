"""The encoder (MultiModel §2.4): non-causal conv blocks with a MoE layer in the middle.

    x + timing signal -> ConvBlock × ceil(n/2) -> MoE sublayer -> ConvBlock × floor(n/2) -> memory

with n = ``encoder_blocks`` (paper: 6, so 3 + MoE + 3). The timing signal (the released code's
slicenet encoder adds it) gives every memory position a code of where it is, which the
decoder's content-based attention needs to read the input in order. The MoE sublayer
(layers/moe_sublayer.py) adds the experts' output (after dropout) to its input and
layer-normalises the sum, as the released code did.

Dimensions: B batch, T input length, D hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.moe import RoutingStats
from multimodel.layers.moe_sublayer import MoESublayer
from multimodel.layers.separable_conv import ConvBlock
from multimodel.layers.timing import timing_signal


def moe_position(num_blocks: int) -> int:
    """Index of the block after which the MoE layer sits ("in the middle")."""
    return (num_blocks - 1) // 2


class Encoder(nn.Module):
    """Non-causal conv blocks over the input sequence, MoE after the middle block.

    Args:
        config: model config (``encoder_blocks``, ``conv_kernel_sizes``, ``conv_dilations``,
            ``dropout``, ``use_moe``, ``encoder_timing_signal``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvBlock(config.hidden_size, config.conv_kernel_sizes, config.conv_dilations, False, config.dropout)
            for _ in range(config.encoder_blocks)
        )
        self.moe_after = moe_position(config.encoder_blocks)
        self.moe = MoESublayer(config) if config.use_moe else None
        self.timing_signal = config.encoder_timing_signal

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, RoutingStats]]:
        """x (B, T, D), mask (B, T) -> (memory (B, T, D), aux loss, {"encoder.moe": stats})."""
        aux_loss = x.new_zeros(())
        routing: dict[str, RoutingStats] = {}
        if self.timing_signal:
            x = x + timing_signal(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, mask)
            if i == self.moe_after and self.moe is not None:
                x, aux, stats = self.moe(x, mask)
                aux_loss = aux_loss + aux
                if stats is not None:
                    routing["encoder.moe"] = stats
        return x, aux_loss, routing

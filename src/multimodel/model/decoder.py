"""The decoder (MultiModel §2.4): causal conv blocks interleaved with attention to the memory.

    x -> [causal ConvBlock -> attention block to the memory] × n, MoE after the middle block

with n = ``decoder_blocks`` (paper: 4). Causal throughout, so it can run incrementally:
``step`` computes one new position (decoding), ``forward`` all of them (training; the
reference that tests hold ``step`` equal to).

Dimensions: B batch, T target length, S memory length, D hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.moe import RoutingStats
from multimodel.layers.moe_sublayer import MoESublayer
from multimodel.layers.separable_conv import ConvBlock, DecodingStates
from multimodel.model.encoder import moe_position
from multimodel.model.mixer import target_attention_block


class DecoderBlock(nn.Module):
    """A causal conv block then (unless ablated) an attention block to the memory.

    Args:
        config: model config.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.conv = ConvBlock(D, config.conv_kernel_sizes, config.conv_dilations, True, config.dropout)
        self.attention = target_attention_block(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.conv(x, mask)
        if self.attention is not None:
            x = self.attention(x, mask, memory, memory_mask)
        return x

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone (decoding): (B, D) -> (B, D)."""
        x = self.conv.step(x, states, t)
        if self.attention is not None:
            x = self.attention.step(x, states, t)
        return x


class Decoder(nn.Module):
    """``decoder_blocks`` decoder blocks with a MoE sublayer after the middle one.

    Args:
        config: model config (``decoder_blocks``, ``use_moe``, ...).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_blocks))
        self.moe_after = moe_position(config.decoder_blocks)
        self.moe = MoESublayer(config) if config.use_moe else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, RoutingStats]]:
        """x (B, T, D), memory (B, S, D) -> ((B, T, D), aux loss, {"decoder.moe": stats})."""
        aux_loss = x.new_zeros(())
        routing: dict[str, RoutingStats] = {}
        for i, block in enumerate(self.blocks):
            x = block(x, mask, memory, memory_mask)
            if i == self.moe_after and self.moe is not None:
                x, aux, stats = self.moe(x, mask)
                aux_loss = aux_loss + aux
                routing["decoder.moe"] = stats
        return x, aux_loss, routing

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward`'s output at position ``t`` alone (decoding: no balancing loss, no
        routing statistics): (B, D) -> (B, D)."""
        for i, block in enumerate(self.blocks):
            x = block.step(x, states, t)
            if i == self.moe_after and self.moe is not None:
                x = self.moe.step(x)
        return x

"""The I/O mixer (MultiModel §2.4): where the decoder side first meets the encoder.

    shifted targets -> attention block to the memory -> causal ConvBlock × mixer_blocks

Everything here is causal over target positions, so it can run incrementally (``step``).

Dimensions: B batch, T target length, S memory length, D hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.attention import AttentionBlock
from multimodel.layers.separable_conv import ConvBlock, DecodingStates


def target_attention_block(config: ModelConfig) -> AttentionBlock | None:
    """The attention block of the I/O mixer and of each decoder block (causal over targets), as
    the config sets it; None when attention is ablated (``use_attention=false``)."""
    if not config.use_attention:
        return None
    return AttentionBlock(
        config.hidden_size,
        config.num_heads,
        config.attention_kernel_size,
        config.dropout,
        causal=True,
        self_attention=config.self_attention,
        self_attention_residual=config.self_attention_residual,
    )


class IOMixer(nn.Module):
    """Attention block from the shifted targets to the memory, then causal conv blocks.

    Args:
        config: model config (``mixer_blocks``, ``use_attention``, conv and attention sizes).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.attention = target_attention_block(config)
        self.blocks = nn.ModuleList(
            ConvBlock(D, config.conv_kernel_sizes, config.conv_dilations, True, config.dropout)
            for _ in range(config.mixer_blocks)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, T, D), memory (B, S, D) -> (B, T, D)."""
        if self.attention is not None:
            x = self.attention(x, mask, memory, memory_mask)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone (decoding): (B, D) -> (B, D)."""
        if self.attention is not None:
            x = self.attention.step(x, states, t)
        for block in self.blocks:
            x = block.step(x, states, t)
        return x

"""Incremental decoding state (MultiModel §2.4 decoder, run one position at a time).

The decoder side of MultiModel is causal: causal ConvSteps, masked self-attention and
attention to a fixed memory. So to extend a decoded prefix by one token, each causal ConvStep
needs only its last ``(k - 1) · dilation`` inputs, each self-attention the keys and values of
the positions decoded so far, and each attention to the memory only the memory's keys and
values, which never change. This object holds exactly those, per layer, in buffers allocated
once for the longest decoding (static shapes: a step writes in place and allocates no state),
plus how many positions have been decoded.

Greedy and beam search share it; beam search reorders it with :meth:`reorder` when beams are
re-ranked.

Dimensions: B batch (× beams), L longest decoding, H heads, S memory length, hd head size.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class LayerState(Protocol):
    """What a layer keeps while decoding (a ConvWindow, a KeyValueBuffer, MemoryKeyValues, ...)."""

    def reorder(self, index: torch.Tensor, length: int) -> None: ...


class IncrementalState:
    """Per-layer state of a decoding in progress.

    Args:
        layers: each stateful layer of the decoder side (a causal ConvStep, an attention
            block, a self-attention or attention layer) -> its state, made by the layer's
            ``decoding_state``; the layers' ``step`` methods read and write it.
        max_length: positions the buffers hold.
    """

    def __init__(self, layers: dict[nn.Module, LayerState], max_length: int) -> None:
        self.layers = layers
        self.max_length = max_length
        self.length = 0
        """Positions decoded so far; the next step computes position ``length``."""

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,) of every layer's state: beam search's re-ranking."""
        for state in self.layers.values():
            state.reorder(index, self.length)

"""Incremental decoding state (MultiModel §2.4 decoder, run one position at a time).

The decoder side of MultiModel is causal: causal ConvSteps, masked self-attention and
attention to a fixed memory. So to extend a decoded prefix by one token, each causal ConvStep
needs only its last ``(k - 1) · dilation`` inputs, each self-attention the keys and values of
the positions decoded so far, and each attention to the memory only the memory's keys and
values, which never change. This object holds exactly those tensors, keyed by the layer that
owns them, plus how many positions have been decoded (for the timing signal).

Greedy and beam search share it; beam search reorders it with :meth:`reorder` when beams are
re-ranked.

Dimensions: B batch (× beams), W window length, H heads, S memory length, hd head size.
"""

from __future__ import annotations

import torch
from torch import nn

Saved = torch.Tensor | tuple[torch.Tensor, ...]


class IncrementalState:
    """Per-layer saved tensors of a decoding in progress.

    ``cache`` maps each stateful layer (a causal ``SeparableConv1d``, a
    ``MultiHeadSelfAttention`` or a ``MultiHeadAttention``) to a (B, W, C) window or a tuple of
    per-row tensors (a self-attention's keys and values so far (B, H, t, hd); an attention
    layer's memory keys and values (B, H, S, hd), and its additive memory mask (B, 1, 1, S)
    when the memory has padding); the layers read and write it themselves. ``length`` is the number of
    positions already decoded.
    """

    def __init__(self) -> None:
        self.cache: dict[nn.Module, Saved] = {}
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N',) of every saved tensor: beam search's re-ranking."""
        for layer, saved in self.cache.items():
            if isinstance(saved, tuple):
                self.cache[layer] = tuple(t.index_select(0, index) for t in saved)
            else:
                self.cache[layer] = saved.index_select(0, index)

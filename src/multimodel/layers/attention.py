"""Multi-head dot-product attention and the attention block (MultiModel §2.2, Figure 3).

The attention block lets the decoder side (the shifted targets) look at the encoder's
memory:

    x -> + timing signal -> ConvStep(k, dilation 1) -> ConvStep(k, dilation 4)
      -> masked multi-head self-attention            (the paper's "self-attend"; optional)
      -> multi-head attention to the memory          (its result is the block's update)
      -> LayerNorm(x + Dropout(update))

The timing signal tells the order-blind dot products where each target position is; the two
ConvSteps (kernel 5 in the paper, causal over targets) mix neighbouring positions; the
self-attention (masked to the past on the decoder side) lets every position gather the whole
prefix; its output is the query of the attention to the source, whose keys and values are two
pointwise (linear) maps of the memory. The paper chains the two attentions without a residual
between them; the outer residual and LayerNorm are the released code's.

Incremental decoding runs the block one position at a time with the ``step`` methods, beside
the training path ``forward`` and held equal to it by tests: the memory's keys and values are
projected once (:class:`MemoryKeyValues`); each new position's keys and values are written into
preallocated buffers (:class:`KeyValueBuffer`) that its query then attends over; the causal
ConvSteps keep their own windows.

Dimensions: B batch, T query (target) length, S memory length, D hidden size, H heads,
hd = D / H head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.layers.dropout import Dropout
from multimodel.layers.padding import padding_or_none
from multimodel.layers.separable_conv import ConvStep, DecodingStates
from multimodel.layers.timing import timing_signal


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean key mask (True = attend) -> 0 / -inf, the form SDPA adds to the scores."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class MemoryKeyValues:
    """The memory's keys and values (B, H, S, hd) for decoding, projected once, its additive
    mask (B, 1, 1, S) (None when no memory position is padded), and the layer's query and
    output weights (the parameters themselves: a step reads no module attributes)."""

    def __init__(
        self, layer: MultiHeadAttention, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        self.keys, self.values, self.mask = keys, values, mask
        self.heads = layer.num_heads
        self.query = (layer.query.weight, layer.query.bias)
        self.out = (layer.out.weight, layer.out.bias)

    def reorder(self, index: torch.Tensor, length: int) -> None:
        """Keep rows ``index`` (beam search)."""
        self.keys, self.values = self.keys.index_select(0, index), self.values.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention from queries to a memory, with a key padding mask.

    Args:
        hidden_size: D, model width of queries, keys, values and output.
        num_heads: H; must divide D.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the memory (B, S, D) -> two (B, H, S, hd)."""
        B, S, D = memory.shape
        H = self.num_heads
        k = self.key(memory).view(B, S, H, D // H).transpose(1, 2)  # (B, H, S, hd)
        v = self.value(memory).view(B, S, H, D // H).transpose(1, 2)  # (B, H, S, hd)
        return k, v

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """Queries x (B, T, D) attend to memory (B, S, D); memory_mask (B, S) True = real."""
        B, T, D = x.shape
        H = self.num_heads
        k, v = self.project_memory(memory)
        attn_mask = None if memory_mask is None else memory_mask[:, None, None, :]  # (B, 1, 1, S)
        q = self.query(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)

    def decoding_state(
        self, memory: torch.Tensor, memory_mask: torch.Tensor | None, max_length: int
    ) -> MemoryKeyValues:
        """The memory's keys, values and mask, prepared once for a whole decoding."""
        k, v = self.project_memory(memory)
        mask = padding_or_none(memory_mask)
        # SDPA turns a boolean mask into an additive one on every call: store that form.
        additive = None if mask is None else _additive_mask(mask[:, None, None, :], k.dtype)  # (B, 1, 1, S)
        return MemoryKeyValues(self, k, v, additive)

    def step(self, x: torch.Tensor, states: DecodingStates) -> torch.Tensor:
        """:meth:`forward` for one query per row (decoding): x (B, D) -> (B, D)."""
        B, D = x.shape
        memory = states[self]
        q = F.linear(x, *memory.query).view(B, memory.heads, 1, D // memory.heads)  # (B, H, 1, hd)
        y = F.scaled_dot_product_attention(q, memory.keys, memory.values, attn_mask=memory.mask)  # (B, H, 1, hd)
        return F.linear(y.view(B, D), *memory.out)


class KeyValueBuffer:
    """A causal self-attention's keys and values while decoding: (B, H, L, hd) each,
    preallocated for L positions, position t's written at index t; and the layer's weights
    (the parameters themselves: a step reads no module attributes)."""

    def __init__(self, layer: MultiHeadSelfAttention, batch: int, max_length: int, like: torch.Tensor) -> None:
        self.heads = H = layer.num_heads
        self.qkv = (layer.qkv.weight, layer.qkv.bias)
        self.out = (layer.out.weight, layer.out.bias)
        head_size = layer.out.in_features // H
        self.keys = like.new_zeros(batch, H, max_length, head_size)
        self.values = like.new_zeros(batch, H, max_length, head_size)

    def reorder(self, index: torch.Tensor, length: int) -> None:
        """Keep rows ``index`` (beam search) of the ``length`` positions decoded."""
        for buffer in (self.keys, self.values):
            live = buffer[:, :, :length]
            live.copy_(live.index_select(0, index))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head dot-product self-attention, masked to the past when ``causal``.

    Args:
        hidden_size: D, model width; queries, keys, values and output all have it.
        num_heads: H; must divide D.
        causal: position t attends only to positions <= t (decoder side).
    """

    def __init__(self, hidden_size: int, num_heads: int, causal: bool = True) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True = real or None -> (B, T, D)."""
        B, T, D = x.shape
        H = self.num_heads
        # Three strided views of the (B, T, 3, H, hd) projection (SDPA takes them as they are):
        # fwd + bwd 9.6 ms against 10.1 for one 5-D permute of it (best of 60, causal, B 32,
        # T 32, D 256, 8 heads, 2 threads; 2026-12-03).
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, T, 3, H, D // H).unbind(2))  # each (B, H, T, hd)
        attn_mask = None
        is_causal = self.causal and mask is None and T > 1
        if mask is not None:
            attn_mask = mask[:, None, None, :]  # (B, 1, 1, T)
            if self.causal:
                attn_mask = attn_mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (B, 1, T, T)
            # A padded query with no real key left to see gets all -inf scores (NaN); let it
            # see itself instead: its output is padding and never reaches a real position.
            attn_mask = attn_mask | torch.eye(T, dtype=torch.bool, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)

    def decoding_state(
        self, memory: torch.Tensor, memory_mask: torch.Tensor | None, max_length: int
    ) -> KeyValueBuffer:
        """Empty key and value buffers for decoding ``max_length`` positions."""
        if not self.causal:
            raise ValueError("non-causal self-attention cannot be run incrementally")
        return KeyValueBuffer(self, memory.shape[0], max_length, memory)

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone (decoding): x (B, D) -> (B, D); positions
        0..t-1's keys and values come from this layer's buffers in ``states``."""
        B, D = x.shape
        buffers = states[self]
        H = buffers.heads
        qkv = F.linear(x, *buffers.qkv).view(B, 3, H, D // H)
        buffers.keys[:, :, t] = qkv[:, 1]
        buffers.values[:, :, t] = qkv[:, 2]
        q = qkv[:, 0].unsqueeze(2)  # (B, H, 1, hd)
        y = F.scaled_dot_product_attention(q, buffers.keys[:, :, : t + 1], buffers.values[:, :, : t + 1])
        return F.linear(y.view(B, D), *buffers.out)  # y: (B, H, 1, hd)


class AttentionBlock(nn.Module):
    """Timing signal + two ConvSteps + self-attention on the query side, attention to the
    memory, residual.

    Args:
        hidden_size: D.
        num_heads: attention heads H.
        kernel_size: kernel of the two ConvSteps (paper: 5); their dilations are 1 and 4.
        dropout: dropout on the attention output in training.
        causal: causal ConvSteps and self-attention (True whenever the query side is the
            target sequence).
        self_attention: self-attend the mixed targets before attending to the memory (paper);
            False gives the released code's "simple" block, which attends to the memory only.
        self_attention_residual: add the self-attention's input to its output (a Transformer
            decoder's residual) instead of passing on its output alone (the paper's chain).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        kernel_size: int = 5,
        dropout: float = 0.0,
        causal: bool = True,
        self_attention: bool = True,
        self_attention_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = ConvStep(hidden_size, hidden_size, kernel_size, dilation=1, causal=causal)
        self.conv2 = ConvStep(hidden_size, hidden_size, kernel_size, dilation=4, causal=causal)
        self.self_attention = MultiHeadSelfAttention(hidden_size, num_heads, causal) if self_attention else None
        self.self_attention_residual = self_attention_residual
        self.attention = MultiHeadAttention(hidden_size, num_heads)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor | None,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, T, D), memory (B, S, D) -> (B, T, D)."""
        B, T, D = x.shape
        y = x + timing_signal(T, D, device=x.device, dtype=x.dtype)  # (B, T, D)
        y = self.conv2(self.conv1(y, x_mask), x_mask)
        if self.self_attention is not None:
            attended_self = self.self_attention(y, x_mask)
            y = y + attended_self if self.self_attention_residual else attended_self
        attended = self.attention(y, memory, memory_mask)
        if self.training:
            attended = self.dropout(attended)
        return self.norm(x + attended)

    def decoding_state(
        self, memory: torch.Tensor, memory_mask: torch.Tensor | None, max_length: int
    ) -> TimingRows:
        """The timing signal of every position a decoding may reach, computed once."""
        signal = timing_signal(max_length, memory.shape[-1], device=memory.device, dtype=memory.dtype)
        norm = self.norm
        return TimingRows(signal, (norm.normalized_shape, norm.weight, norm.bias, norm.eps))

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone, as at evaluation: x (B, D) -> (B, D)."""
        y = x + states[self].signal[t]  # (B, D); signal (L, D)
        y = self.conv2.step(self.conv1.step(y, states, t), states, t)
        if self.self_attention is not None:
            attended_self = self.self_attention.step(y, states, t)
            y = y + attended_self if self.self_attention_residual else attended_self
        attended = self.attention.step(y, states)
        return F.layer_norm(x + attended, *states[self].norm_args)


class TimingRows:
    """What an attention block's step needs of its own: the timing signal (L, D) of the
    positions a decoding may reach, and its LayerNorm's arguments."""

    def __init__(self, signal: torch.Tensor, norm_args: tuple) -> None:
        self.signal, self.norm_args = signal, norm_args

    def reorder(self, index: torch.Tensor, length: int) -> None:
        """The same for every row: nothing to reorder."""

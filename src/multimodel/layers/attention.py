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

For incremental decoding the memory's keys and values are computed once and kept in the
``cache`` (keyed by the attention layer); the self-attention appends each new position's keys
and values to its cached ones; the causal ConvSteps keep their own windows.

Dimensions: B batch, T query (target) length, S memory length, D hidden size, H heads,
hd = D / H head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.layers.dropout import Dropout
from multimodel.layers.padding import padding_or_none
from multimodel.layers.separable_conv import Cache, ConvStep
from multimodel.layers.timing import timing_signal


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean key mask (True = attend) -> 0 / -inf, the form SDPA adds to the scores."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


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

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """Queries x (B, T, D) attend to memory (B, S, D); memory_mask (B, S) True = real."""
        B, T, D = x.shape
        H = self.num_heads
        saved = cache.get(self) if cache is not None else None
        if saved is None:
            k, v = self.project_memory(memory)
            attn_mask = None if memory_mask is None else memory_mask[:, None, None, :]  # (B, 1, 1, S)
            if cache is not None:
                # The memory never changes while decoding: project it and prepare its mask once.
                # SDPA turns a boolean mask into an additive one on every call, so store that
                # form, or nothing when no position is padded.
                attn_mask = padding_or_none(attn_mask)
                if attn_mask is not None:
                    attn_mask = _additive_mask(attn_mask, k.dtype)
                saved = (k, v) if attn_mask is None else (k, v, attn_mask)
                cache[self] = saved
        else:
            k, v = saved[0], saved[1]
            attn_mask = saved[2] if len(saved) == 3 else None
        if T == 1:  # decoding: (B, 1, D) and (B, H, 1, hd) share a layout, so no transposes
            q = F.linear(x, self.query.weight, self.query.bias).view(B, H, 1, D // H)  # (B, H, 1, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).view(B, 1, D)  # (B, 1, D)
            return F.linear(y, self.out.weight, self.out.bias)
        q = self.query(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True = real or None -> (B, T, D).

        With ``cache`` (causal only), x holds the next T positions; their keys and values are
        appended to the cached ones of the earlier positions, which they may all attend to.
        """
        B, T, D = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        if cache is not None:
            if not self.causal:
                raise ValueError("non-causal self-attention cannot be run incrementally")
            past = cache.get(self)
            if past is not None:
                k = torch.cat([past[0], k], dim=2)  # (B, H, P + T, hd)
                v = torch.cat([past[1], v], dim=2)  # (B, H, P + T, hd)
            cache[self] = (k, v)
        P = k.shape[2] - T  # positions before the first query
        attn_mask = None
        is_causal = False
        if self.causal and T > 1:
            if mask is None and P == 0:
                is_causal = True
            else:
                # Query i (position P + i) sees keys 0 .. P + i.
                attn_mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(P)  # (T, P + T)
        if mask is not None:
            keys_real = mask[:, None, None, :]  # (B, 1, 1, T)
            if P:
                keys_real = F.pad(keys_real, (P, 0), value=True)  # cached keys are real
            attn_mask = keys_real if attn_mask is None else attn_mask & keys_real  # (B, 1, T, P + T)
            # A padded query with no real key left to see gets all -inf scores (NaN); let it
            # see itself instead: its output is padding and never reaches a real position.
            attn_mask = attn_mask | torch.eye(T, P + T, dtype=torch.bool, device=x.device).roll(P, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)


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
        self._timing: torch.Tensor | None = None  # cached signal; derived, so not a buffer

    def timing(self, length: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        """Timing signal (T, D) of positions offset.., reused across decoding steps."""
        cached = self._timing
        stale = cached is None or cached.device != like.device or cached.dtype != like.dtype
        if stale or cached.shape[0] < offset + length:
            size = max(2 * (offset + length), 64)
            cached = timing_signal(size, like.shape[-1], device=like.device, dtype=like.dtype)  # (T_max, D)
            self._timing = cached
        return cached[offset : offset + length]

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor | None,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: Cache | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """x (B, T, D) at positions offset.., memory (B, S, D) -> (B, T, D)."""
        B, T, D = x.shape
        y = x + self.timing(T, offset, x)  # (B, T, D)
        y = self.conv2(self.conv1(y, x_mask, cache), x_mask, cache)
        if self.self_attention is not None:
            attended_self = self.self_attention(y, x_mask, cache)
            y = y + attended_self if self.self_attention_residual else attended_self
        attended = self.attention(y, memory, memory_mask, cache)
        if self.training:
            attended = self.dropout(attended)
        norm = self.norm  # called as a function: module calls matter when decoding token by token
        return F.layer_norm(x + attended, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

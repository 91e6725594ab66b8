"""Sinusoidal timing signal (Vaswani et al. 2017 §3.5; MultiModel §2.2, attention block).

The attention block adds this signal to its query side so that dot-product attention, which
is blind to order, knows where each target position is. Channels are split in two halves:
sines then cosines of ``position / timescale`` with timescales spaced geometrically between
``min_timescale`` and ``max_timescale``.

Dimensions: T sequence length, D channels.
"""

from __future__ import annotations

import math

import torch


def timing_signal(
    length: int,
    channels: int,
    *,
    offset: int = 0,
    min_timescale: float = 1.0,
    max_timescale: float = 1.0e4,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Timing signal for positions ``offset .. offset + length - 1``.

    ``offset`` lets incremental decoding ask for the signal of the one new position only.
    Returns a (T, D) tensor; an odd D gets a zero last channel.
    """
    num_timescales = channels // 2
    position = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
    # Geometric progression of timescales; max(..., 1) keeps D = 2 from dividing by zero.
    log_increment = math.log(max_timescale / min_timescale) / max(num_timescales - 1, 1)
    inv_timescales = min_timescale * torch.exp(
        torch.arange(num_timescales, device=device, dtype=torch.float32) * -log_increment
    )
    scaled = position[:, None] * inv_timescales[None, :]  # (T, D // 2)
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)  # (T, 2 * (D // 2))
    if channels % 2:
        signal = torch.nn.functional.pad(signal, (0, 1))  # (T, D)
    return signal.to(dtype)

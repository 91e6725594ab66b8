"""Padding masks: a mask that marks no padding is as good as none.

The body's layers take a (B, T) boolean mask (True = real position) or None. With None they
skip their masking work: zeroing padded positions before every ConvStep, gathering the real
tokens before each MoE, masking attention to the memory. A batch without padding should
take that path whatever its caller passed.
"""

from __future__ import annotations

import torch


def padding_or_none(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` if it marks any padding, else None."""
    return None if mask is None or bool(mask.all()) else mask

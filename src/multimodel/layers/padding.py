"""Padding masks: a mask that marks no padding is as good as none.

The body's layers take a (B, T) boolean mask (True = real position) or None. With None they
skip their masking work: zeroing padded positions before every ConvStep, sending only real
tokens to the experts, masking attention to the memory. Finding out that a mask marks no
padding reads it on the host, so the model does it only outside training
(``MultiModel._body_mask``) and when decoding starts. In training it takes the collator's word
instead: the collator reads its masks on the host as it builds a batch and says which sides
have no padding (``Batch.input_padded`` / ``target_padded``, ``MultiModel.forward``'s hints).
"""

from __future__ import annotations

import torch


def padding_or_none(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` if it marks any padding, else None (a host read of the mask)."""
    return None if mask is None or bool(mask.all()) else mask

"""Categorical output modality net (MultiModel §2.5, "categorical modality net").

Classification tasks skip the decoder: this net reads the encoder memory directly.
``class_label_blocks`` downsampling blocks (a ConvStep over the sequence, then every second
position kept) shrink the memory, a ReLU and a masked global average pool give one vector per
example, and a linear map gives the class logits.

Dimensions: B batch, T memory length, D hidden size, C classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.separable_conv import ConvStep
from multimodel.modalities.base import LossOutput, Modality, ModalityError, label_smoothed_loss


class ClassLabelModality(Modality):
    """Encoder memory (B, T, D) -> class logits (B, C); targets are class indices (B,).

    Args:
        config: model config (``hidden_size``, ``class_label_blocks``, ``label_smoothing``).
        num_classes: C.
    """

    skips_decoder = True

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ModalityError(f"class_label needs at least 2 classes, got {num_classes}")
        D = config.hidden_size
        self.num_classes = num_classes
        self.label_smoothing = config.label_smoothing
        self.downsample = nn.ModuleList(ConvStep(D, D, 3) for _ in range(config.class_label_blocks))
        self.output = nn.Linear(D, num_classes)

    def top(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """memory (B, T, D), mask (B, T) or None -> logits (B, C)."""
        for step in self.downsample:
            h = step(h, mask)[:, ::2]  # (B, ceil(T/2), D): stride 2 after a "same" conv
            mask = None if mask is None else mask[:, ::2]
        h = F.relu(h)
        if mask is None:
            pooled = h.mean(dim=1)  # (B, D)
        else:
            weight = mask[..., None].to(h.dtype)  # (B, T, 1)
            pooled = (h * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)  # (B, D)
        return self.output(pooled)

    def example_targets(self, batch, length, generator=None):
        return torch.randint(0, self.num_classes, (batch,), generator=generator), None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> LossOutput:
        """Label-smoothed cross-entropy of class indices (B,); ``mask`` is unused."""
        if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
            raise ModalityError(f"class targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        if targets.is_floating_point():
            raise ModalityError(f"class targets must be integer class indices, got dtype {targets.dtype}")
        if int(targets.min()) < 0 or int(targets.max()) >= self.num_classes:
            raise ModalityError(
                f"class targets must lie in [0, {self.num_classes}), got range"
                f" [{int(targets.min())}, {int(targets.max())}]"
            )
        return label_smoothed_loss(logits, targets, None, self.label_smoothing)

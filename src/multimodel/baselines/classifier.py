"""Image classification baseline: a small convolutional network (the classic MNIST CNN).

    conv 3×3, 32 filters, ReLU → conv 3×3, 64 filters, ReLU → 2×2 max-pool → dropout
    → flatten → fully connected 128, ReLU → dropout → fully connected C

Convolutions use "same" padding, so an H×W image gives a (64, H/2, W/2) map before the
flatten; the network is built for the image size of its task.

Dimensions: B batch, C classes, H × W pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from multimodel.baselines.base import BaselineConfig, BaselineOutput
from multimodel.modalities.base import label_smoothed_loss


class ImageClassifierCNN(nn.Module):
    """Images (B, channels, H, W) → class logits (B, C).

    Args:
        config: baseline settings (``classifier_channels``, ``classifier_hidden_size``,
            ``classifier_dropout``, ``label_smoothing``).
        image_shape: (channels, H, W) of the task's images.
        num_classes: C.
    """

    def __init__(self, config: BaselineConfig, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.config = config
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        c1, c2 = config.classifier_channels
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(config.classifier_dropout),
        )
        flat = c2 * (height // 2) * (width // 2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, config.classifier_hidden_size), nn.ReLU(),
            nn.Dropout(config.classifier_dropout), nn.Linear(config.classifier_hidden_size, num_classes),
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C) of images (B, channels, H, W)."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"this classifier takes images (B, {', '.join(map(str, self.image_shape))}),"
                             f" got {tuple(images.shape)}")
        return self.head(self.features(images.float()))

    def forward(self, inputs: torch.Tensor, input_mask: torch.Tensor | None, targets: torch.Tensor,
                target_mask: torch.Tensor | None = None, **task: object) -> BaselineOutput:
        """Logits and label-smoothed loss of class indices ``targets`` (B,).

        ``input_mask``, ``target_mask`` and the task's keywords (``input_modality`` ...) are
        accepted so that evaluation calls every model alike; a baseline serves one task.
        """
        logits = self.logits(inputs)  # (B, C)
        return BaselineOutput(logits, label_smoothed_loss(logits, targets, None, self.config.label_smoothing))

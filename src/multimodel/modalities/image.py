"""Image modality net: the Xception-like entry flow (MultiModel §2.5, "image modality net").

    ConvStep 3×3, ``image_entry_filters[0]`` filters, stride 2 (no ReLU on raw pixels)
    ConvStep 3×3, ``image_entry_filters[1]`` filters
    3 residual blocks: 2 separable 3×3 ConvSteps + 3×3 max-pool stride 2, strided 1×1 residual;
       widths min(128, D), min(256, D), D
    flatten the (H', W') grid to a sequence of H'·W' positions of width D.

All convolutions use "same" padding, so each stride-2 stage maps H to ceil(H / 2): a 28×28
image becomes 2×2 (4 positions), an 8×8 one 1×1. Grayscale input is repeated to
``image_channels``.

Dimensions: B batch, C channels, H × W pixels, D hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.separable_conv import ConvStep2d, DownsampleBlock2d
from multimodel.modalities.base import Modality, ModalityError

# Below this size the later stride-2 stages would see nothing but a 1×1 map from the start.
MIN_IMAGE_SIZE = 8


class ImageModality(Modality):
    """Images (B, C, H, W) in [0, 1] -> a (B, H'·W', D) sequence with an all-True mask.

    Args:
        config: model config (``hidden_size``, ``image_channels``, ``image_entry_filters``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.hidden_size
        f1, f2 = config.image_entry_filters
        self.channels = config.image_channels
        self.entry1 = ConvStep2d(self.channels, f1, (3, 3), (2, 2), separable=False, first_relu=False)
        self.entry2 = ConvStep2d(f1, f2, (3, 3), separable=False)
        widths = (min(128, D), min(256, D), D)
        self.blocks = nn.ModuleList(
            DownsampleBlock2d(c_in, c_out, (2, 2), residual_relu=(i > 0))
            for i, (c_in, c_out) in enumerate(zip((f2,) + widths[:-1], widths))
        )

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ModalityError(f"images must have shape (B, C, H, W), got {shape}")
        if not images.is_floating_point():
            raise ModalityError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        B, C, H, W = images.shape
        if B == 0:
            raise ModalityError("images: empty batch")
        if C not in (1, self.channels):
            raise ModalityError(
                f"images must have 1 or {self.channels} channels, got {C} (shape {tuple(images.shape)})"
            )
        if H < MIN_IMAGE_SIZE or W < MIN_IMAGE_SIZE:
            raise ModalityError(
                f"images must be at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} for the entry flow to"
                f" stride them down 16×, got {H}×{W}"
            )
        if C == 1 and self.channels != 1:
            images = images.expand(B, self.channels, H, W)  # grayscale -> (B, C, H, W)
        return images

    def example_inputs(self, batch, length, generator=None):
        """Random images of side ``max(length, MIN_IMAGE_SIZE)``; images have no mask."""
        side = max(length, MIN_IMAGE_SIZE)
        return torch.rand(batch, self.channels, side, side, generator=generator), None

    def bottom(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) -> (x (B, H'·W', D), mask (B, H'·W') all True); ``mask`` is ignored."""
        x = self._check(inputs)
        x = self.entry2(self.entry1(x))  # (B, f2, ceil(H/2), ceil(W/2))
        for block in self.blocks:
            x, _ = block(x)
        B, D, H, W = x.shape
        x = x.permute(0, 2, 3, 1).reshape(B, H * W, D)  # (B, H'·W', D), row-major over the grid
        return x, torch.ones(B, H * W, dtype=torch.bool, device=x.device)

    def blind(self, inputs, mask, generator=None):
        """A blank image of the same shape: all zeros, the background of the built-in corpora
        (Fashion-MNIST photos and the caption canvases are light items on black)."""
        return torch.zeros_like(inputs), mask

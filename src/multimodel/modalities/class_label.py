"""Categorical output modality net (MultiModel §2.5, "categorical modality net").

Classification tasks skip the decoder: this net reads the encoder memory (a sequence; for an
image, its grid in raster order) directly. The default, ``class_label_net="downsample"``, is
the released code's downsampling conv block (tensor2tensor ``conv_block_downsample``, an
Xception exit flow) run over the memory sequence, once per ``class_label_blocks``:

    residual = ConvStep(w_res, stride 2)(x)
    x = ConvStep(D) -> ConvStep(w1) -> max-pool (kernel k, stride 2) -> + residual
    x = ConvStep(w2, no first ReLU) -> ConvStep(w3)

with widths (w1 = w_res, w2, w3) = ``class_label_widths`` × D (released code: 1.25, 2, 2.5),
then a ReLU, a masked global average pool and a linear map (the released code's 1×1 conv) to
the classes. A stride-2 "same" ConvStep is computed as the full ConvStep with every second
position kept. Differences from the released code (docs/architecture.md, Deviations): it ran
over the 2-D image grid, here over the 1-D memory sequence the body produces; its residual
was a plain convolution, here a separable ConvStep like the others; and a second block here
keeps the widths of the first (multiples of D), where the released code, with one block,
would have widened from its input.

``class_label_net="convstep"`` is a narrower net (the one format-1 checkpoints hold): per
block one D-wide ConvStep with every second position kept, then ReLU, pool and linear.

Dimensions: B batch, T memory length, D hidden size, C classes, W a net's width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.separable_conv import ConvStep
from multimodel.modalities.base import LossOutput, Modality, ModalityError, checks_values, label_smoothed_loss

def _keep_every_second(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, W), mask (B, T) -> (B, ceil(T/2), W), mask: a stride-2 "same" conv's positions."""
    return x[:, ::2], (None if mask is None else mask[:, ::2])


class DownsampleBlock(nn.Module):
    """One downsampling conv block over a (B, T, W_in) sequence: T -> ceil(T/2), W_in -> w3.

    Args:
        in_channels: W_in.
        hidden_size: D, width of the first ConvStep.
        widths: (w1, w2, w3) channels of the residual and second ConvStep, then of the third and
            fourth.
        kernel_size: k of every ConvStep and of the max-pool (odd).
    """

    def __init__(self, in_channels: int, hidden_size: int, widths: tuple[int, int, int], kernel_size: int) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ModalityError(f"class_label_kernel_size must be odd, got {kernel_size}")
        w1, w2, w3 = widths
        self.kernel_size = kernel_size
        self.residual = ConvStep(in_channels, w1, kernel_size)
        self.conv0 = ConvStep(in_channels, hidden_size, kernel_size)
        self.conv1 = ConvStep(hidden_size, w1, kernel_size)
        self.conv2 = ConvStep(w1, w2, kernel_size, first_relu=False)
        self.conv3 = ConvStep(w2, w3, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, W_in), mask (B, T) or None -> ((B, ceil(T/2), w3), mask (B, ceil(T/2)))."""
        residual, out_mask = _keep_every_second(self.residual(x, mask), mask)  # (B, T', w1)
        y = self.conv1(self.conv0(x, mask), mask)  # (B, T, w1)
        if mask is not None:
            y = y.masked_fill(~mask[..., None], float("-inf"))  # padding never wins the max
        k = self.kernel_size
        y = F.max_pool1d(y.transpose(1, 2), k, stride=2, padding=k // 2).transpose(1, 2)  # (B, T', w1)
        y = y + residual
        if out_mask is not None:
            y = y.masked_fill(~out_mask[..., None], 0.0)  # -inf + residual on padded positions
        return self.conv3(self.conv2(y, out_mask), out_mask), out_mask


class ClassLabelModality(Modality):
    """Encoder memory (B, T, D) -> class logits (B, C); targets are class indices (B,).

    Args:
        config: model config (``hidden_size``, ``class_label_net``, ``class_label_blocks``,
            ``class_label_widths``, ``class_label_kernel_size``, ``label_smoothing``).
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
        self.net = config.class_label_net
        if self.net == "downsample":
            widths = tuple(max(1, round(m * D)) for m in config.class_label_widths)
            self.downsample = nn.ModuleList(
                DownsampleBlock(D if i == 0 else widths[2], D, widths, config.class_label_kernel_size)
                for i in range(config.class_label_blocks)
            )
            width = widths[2] if config.class_label_blocks else D
        else:
            self.downsample = nn.ModuleList(ConvStep(D, D, 3) for _ in range(config.class_label_blocks))
            width = D
        self.output = nn.Linear(width, num_classes)

    def top(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """memory (B, T, D), mask (B, T) or None -> logits (B, C)."""
        for block in self.downsample:
            if self.net == "downsample":
                h, mask = block(h, mask)  # (B, ceil(T/2), W)
            else:
                h, mask = _keep_every_second(block(h, mask), mask)  # (B, ceil(T/2), D)
        h = F.relu(h)
        if mask is None:
            pooled = h.mean(dim=1)  # (B, W)
        else:
            weight = mask[..., None].to(h.dtype)  # (B, T, 1)
            pooled = (h * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)  # (B, W)
        return self.output(pooled)

    def example_targets(self, batch, length, generator=None):
        return torch.randint(0, self.num_classes, (batch,), generator=generator), None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> LossOutput:
        """Label-smoothed cross-entropy of class indices (B,); ``mask`` is unused."""
        if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
            raise ModalityError(f"class targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        if targets.is_floating_point():
            raise ModalityError(f"class targets must be integer class indices, got dtype {targets.dtype}")
        if checks_values(self) and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ModalityError(
                f"class targets must lie in [0, {self.num_classes}), got range"
                f" [{int(targets.min())}, {int(targets.max())}]"
            )
        return label_smoothed_loss(logits, targets, None, self.label_smoothing)

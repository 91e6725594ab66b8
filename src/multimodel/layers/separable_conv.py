"""Depthwise-separable convolutions, ConvSteps and conv blocks (MultiModel §2.1).

The paper's convolutional unit is the ConvStep, ``LayerNorm(SepConv(ReLU(x)))``: a depthwise
convolution over time (one filter per channel, with a kernel size and dilation) followed by a
pointwise linear map across channels. Four ConvSteps with two residual connections make a
conv block, the building block of the encoder, the I/O mixer and the decoder.

Padding never leaks into real positions: every ConvStep zeroes padded positions before it
convolves, so a real position sees exactly what it would see with no padding in the batch.

Causal convolutions (decoder side) are left-padded by ``(k - 1) * dilation`` positions.
Incremental decoding runs a causal ConvStep one position at a time with :meth:`ConvStep.step`,
beside the training path :meth:`ConvStep.forward` and held equal to it by tests: the step keeps
the inputs seen so far in a preallocated :class:`ConvWindow` and computes the depthwise conv
of the new position as a weighted sum of its k taps.

The 2-D variants (``SeparableConv2d``, ``ConvStep2d``, ``DownsampleBlock2d``) serve the image
and audio modality nets (the Xception-like entry flow of §2.5).

Speed (the layout, not the maths): on CPU, oneDNN's depthwise convs are several times faster
on channels-last maps, forward and backward, so the 1-D depthwise conv runs as a 2-D conv on a
channels-last view of the (B, T, C) sequence (:func:`depthwise_conv_time`, held equal to the
plain ``conv1d`` of :func:`depthwise_conv_reference`), and the 2-D maps are kept channels-last
throughout, where LayerNorm over channels and the pointwise conv need no permute copies.
docs/benchmarks.md has the figures.

Dimensions: B batch, T time, C channels, D hidden size, H × W spatial size, k kernel size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from multimodel.layers.dropout import Dropout

DecodingStates = dict
"""Maps each layer that keeps state while decoding (a causal ConvStep, an attention layer) to
its state object, made once per decoding by the layer's ``decoding_state`` (see
model/incremental.py)."""


def depthwise_conv_reference(x: torch.Tensor, weight: torch.Tensor, dilation: int, left: int) -> torch.Tensor:
    """:func:`depthwise_conv_time` written plainly: ``conv1d`` over the transposed sequence."""
    k = weight.shape[-1]
    right = (k - 1) * dilation - left
    y = F.conv1d(F.pad(x.transpose(1, 2), (left, right)), weight, dilation=dilation, groups=x.shape[-1])
    return y.transpose(1, 2)  # (B, T, C)


def depthwise_conv_time(x: torch.Tensor, weight: torch.Tensor, dilation: int, left: int) -> torch.Tensor:
    """Depthwise conv over time of a (B, T, C) sequence with ``left`` zeros before it and
    ``(k - 1) · dilation - left`` after it; weight (C, 1, k). Returns (B, T, C).

    Written as a 2-D depthwise conv on a channels-last view, which oneDNN runs several times
    faster (forward and backward) than ``conv1d`` on the transposed (B, C, T) sequence
    (:func:`depthwise_conv_reference`). The dilation is folded into the layout instead of given
    to the conv: the padded sequence of length L = d · L' is viewed, without a copy, as an
    (L', d) image whose column j holds the positions ≡ j (mod d); a (k, 1) kernel with
    dilation 1 over that image is exactly the dilated conv over time (oneDNN's dilated
    channels-last path is slow). A symmetric "same" padding (odd k, T a multiple of d) is left
    to the conv itself, which saves writing a padded copy of x and slicing its gradient back.
    """
    B, T, C = x.shape
    k = weight.shape[-1]
    context = (k - 1) * dilation
    if 2 * left == context and left % dilation == 0 and T % dilation == 0:
        # "Same" padding that is whole rows of the folded image on both sides: the conv pads
        # it itself, with no padded copy of x to write forward and to slice back (backward).
        image = x.reshape(B, T // dilation, dilation, C).permute(0, 3, 1, 2)  # (B, C, T / d, d) channels-last
        y = F.conv2d(image, weight.unsqueeze(-1), padding=(left // dilation, 0), groups=C)  # (B, C, T / d, d)
        return y.permute(0, 2, 3, 1).reshape(B, T, C)  # (B, T, C)
    length = -(-(T + context) // dilation) * dilation  # padded length, a multiple of d
    x = F.pad(x, (0, 0, left, length - T - left))  # (B, L, C)
    image = x.view(B, length // dilation, dilation, C).permute(0, 3, 1, 2)  # (B, C, L', d) channels-last
    y = F.conv2d(image, weight.unsqueeze(-1), groups=C)  # (B, C, L' - k + 1, d)
    return y.permute(0, 2, 3, 1).reshape(B, -1, C)[:, :T]  # (B, T, C)


class SeparableConv1d(nn.Module):
    """Depthwise conv over time, then a pointwise linear map across channels.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: taps of the depthwise filter.
        dilation: spacing between taps.
        causal: left-pad so position t sees only positions ≤ t; otherwise "same" padding.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, causal: bool = False
    ) -> None:
        super().__init__()
        self.causal = causal
        self.context = (kernel_size - 1) * dilation  # past (or surrounding) positions needed
        self.depthwise = nn.Conv1d(
            in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels, bias=False
        )
        self.pointwise = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in) -> (B, T, C_out)."""
        left = self.context if self.causal else self.context // 2
        return self.pointwise(depthwise_conv_time(x, self.depthwise.weight, self.depthwise.dilation[0], left))


class ConvWindow:
    """A causal ConvStep's inputs while decoding one position at a time.

    ``inputs`` (B, context + L, C) holds the (ReLU'd) input of position t at row
    ``context + t``; the rows before ``context`` are the zero left padding of the full
    computation. Preallocated for L positions and written in place: a step allocates no
    window and its shapes never change. The window also holds the step's weights (views of
    the layer's parameters, not copies, so they follow any change to them): a step then reads
    no module attributes, a noticeable share of its cost at batch 1.

    Args:
        step: the causal ConvStep.
        batch: rows B.
        max_length: positions L the decoding may reach.
        like: a tensor of the dtype and device to use.
    """

    def __init__(self, step: ConvStep, batch: int, max_length: int, like: torch.Tensor) -> None:
        conv, norm = step.conv, step.norm
        self.context, self.dilation, self.first_relu = conv.context, conv.depthwise.dilation[0], step.first_relu
        self.taps_weight = conv.depthwise.weight.detach()[:, 0].t()  # (k, C_in)
        self.pointwise_weight, self.pointwise_bias = conv.pointwise.weight, conv.pointwise.bias
        self.norm_args = (norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        self.inputs = like.new_zeros(batch, self.context + max_length, self.taps_weight.shape[1])  # (B, context + L, C)

    def reorder(self, index: torch.Tensor, length: int) -> None:
        """Keep rows ``index`` (beam search), ``length`` positions decoded: only the rows later
        steps read (the last ``context`` inputs) are moved."""
        live = self.inputs[:, length : length + self.context]  # (B, context, C)
        live.copy_(live.index_select(0, index))


class ConvStep(nn.Module):
    """``LayerNorm(SepConv(ReLU(x)))`` over time (§2.1).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: taps of the depthwise filter.
        dilation: spacing between taps.
        causal: see :class:`SeparableConv1d`.
        first_relu: apply the ReLU (the released code turns it off for some steps, e.g. the
            one after the class-label net's max-pool).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        causal: bool = False,
        *,
        first_relu: bool = True,
    ) -> None:
        super().__init__()
        self.first_relu = first_relu
        self.conv = SeparableConv1d(in_channels, out_channels, kernel_size, dilation, causal)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C_in), mask (B, T) bool or None -> (B, T, C_out)."""
        if self.first_relu:
            x = F.relu(x)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)  # padding must not reach real positions
        return self.norm(self.conv(x))

    def decoding_state(
        self, memory: torch.Tensor, memory_mask: torch.Tensor | None, max_length: int
    ) -> ConvWindow:
        """An empty window for decoding ``max_length`` positions of a batch of ``memory``'s rows."""
        if not self.conv.causal:
            raise ValueError("a non-causal convolution cannot be run incrementally")
        return ConvWindow(self, memory.shape[0], max_length, memory)

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone, for decoding (no autograd): x (B, C_in), the
        input there, -> (B, C_out); earlier positions' inputs come from this layer's window in
        ``states``. Equals ``forward`` over positions 0..t at position t, to rounding."""
        window = states[self]
        row = window.inputs[:, window.context + t]  # (B, C_in), where position t's input goes
        if window.first_relu:
            torch.clamp(x, min=0.0, out=row)
        else:
            row.copy_(x)
        taps = window.inputs[:, t : t + window.context + 1 : window.dilation]  # (B, k, C_in)
        y = (taps * window.taps_weight).sum(1)  # (B, C_in), the depthwise conv at t
        y = F.linear(y, window.pointwise_weight, window.pointwise_bias)  # (B, C_out)
        return F.layer_norm(y, *window.norm_args)


class ConvBlock(nn.Module):
    """Four ConvSteps with residual connections after the 2nd and 4th, then dropout (§2.1).

    Args:
        hidden_size: channels D of input and output.
        kernel_sizes: kernel of each of the four ConvSteps.
        dilations: dilation of each of the four ConvSteps.
        causal: causal (decoder side) or "same" (encoder side) convolutions.
        dropout: dropout probability applied to the block output in training.
    """

    def __init__(
        self,
        hidden_size: int,
        kernel_sizes: Sequence[int],
        dilations: Sequence[int],
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != 4 or len(dilations) != 4:
            raise ValueError(
                f"a conv block has 4 ConvSteps: expected 4 kernel sizes and 4 dilations,"
                f" got {tuple(kernel_sizes)} and {tuple(dilations)}"
            )
        self.steps = nn.ModuleList(
            ConvStep(hidden_size, hidden_size, k, d, causal) for k, d in zip(kernel_sizes, dilations)
        )
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D), mask (B, T) or None -> (B, T, D)."""
        s1, s2, s3, s4 = self.steps
        y = x + s2(s1(x, mask), mask)
        z = y + s4(s3(y, mask), mask)
        return self.dropout(z) if self.training else z

    def step(self, x: torch.Tensor, states: DecodingStates, t: int) -> torch.Tensor:
        """:meth:`forward` at position ``t`` alone (decoding, no dropout): (B, D) -> (B, D)."""
        s1, s2, s3, s4 = self.steps
        y = x + s2.step(s1.step(x, states, t), states, t)
        return y + s4.step(s3.step(y, states, t), states, t)


# ----------------------------------------------------------------------------------------
# 2-D variants for the image and audio modality nets.


def _layer_norm_2d(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of a (B, C, H, W) map, like the 1-D ConvStep's per-position norm.

    On a channels-last map the (B, H, W, C) view is contiguous, so neither permute copies.
    """
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def _zero_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero padded rows (first spatial axis, i.e. time for audio) of a (B, C, H, W) map.

    Computed on the (B, H, W, C) view so a channels-last map stays channels-last.
    """
    if mask is None:
        return x
    return (x.permute(0, 2, 3, 1) * mask[:, :, None, None].to(x.dtype)).permute(0, 3, 1, 2)


def downsample_mask(mask: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """Mask after a stride-``stride`` "same" convolution: length L becomes ceil(L / stride)."""
    return None if mask is None else mask[:, ::stride]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The same (B, C, H, W) map stored as (B, H, W, C): oneDNN's fast layout for depthwise
    convs, and the one where LayerNorm and the pointwise map over channels need no copy."""
    return x.contiguous(memory_format=torch.channels_last)


class SeparableConv2d(nn.Module):
    """Depthwise 2-D conv (one filter per channel) then a pointwise 1×1 conv.

    Maps are kept channels-last (see :func:`channels_last`); the pointwise conv is applied as
    a matrix product over the channels of the (B, H, W, C) view.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: (kh, kw), odd; "same" padding.
        stride: (sh, sw).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int] = (1, 1)
    ) -> None:
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W'), channels-last."""
        y = self.depthwise(channels_last(x)).permute(0, 2, 3, 1)  # (B, H', W', C_in)
        w = self.pointwise.weight
        y = F.linear(y, w.view(w.shape[0], w.shape[1]), self.pointwise.bias)  # (B, H', W', C_out)
        return y.permute(0, 3, 1, 2)  # (B, C_out, H', W') channels-last


class ConvStep2d(nn.Module):
    """2-D ConvStep: ``LayerNorm(Conv(ReLU(x)))`` with a regular or separable conv.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: (kh, kw), odd; "same" padding, so a stride s gives ceil(H / s).
        stride: (sh, sw).
        separable: depthwise-separable conv (True) or a regular conv (False).
        first_relu: apply the ReLU (off for the very first step on raw pixels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        *,
        separable: bool = True,
        first_relu: bool = True,
    ) -> None:
        super().__init__()
        self.first_relu = first_relu
        if separable:
            self.conv = SeparableConv2d(in_channels, out_channels, kernel_size, stride)
        else:
            padding = (kernel_size[0] // 2, kernel_size[1] // 2)
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, H, W), row mask (B, H) or None -> (B, C_out, H', W'), channels-last."""
        x = channels_last(x)
        if self.first_relu:
            x = F.relu(x)
        return _layer_norm_2d(self.norm, channels_last(self.conv(_zero_rows(x, mask))))


class DownsampleBlock2d(nn.Module):
    """Xception-style residual block: 2 separable 3×3 ConvSteps + 3×3 max-pool with a stride,
    plus a strided 1×1 ConvStep on the residual path (MultiModel §2.5, image entry flow).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: (sh, sw); audio strides over time only, (2, 1).
        residual_relu: ReLU on the residual path's input.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: tuple[int, int] = (2, 2), residual_relu: bool = True
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = ConvStep2d(in_channels, out_channels, (3, 3))
        self.conv2 = ConvStep2d(out_channels, out_channels, (3, 3))
        self.pool = nn.MaxPool2d(3, stride, padding=1)
        self.residual = ConvStep2d(
            in_channels, out_channels, (1, 1), stride, separable=False, first_relu=residual_relu
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C_in, H, W), row mask (B, H) or None -> ((B, C_out, H', W'), mask (B, H'))."""
        y = self.conv2(self.conv1(x, mask), mask)  # channels-last
        if mask is not None:
            # Max-pool pads with -inf; padded rows must look the same so they never win.
            # (On the (B, H, W, C) view: the result stays channels-last, where pooling is fast.)
            y = y.permute(0, 2, 3, 1).masked_fill(~mask[:, :, None, None], float("-inf")).permute(0, 3, 1, 2)
        y = self.pool(y)
        out_mask = downsample_mask(mask, self.stride[0])
        y = y + self.residual(x, mask)
        if out_mask is not None:
            # Padded rows are -inf + residual: set them to 0 (multiplying would give NaN).
            y = y.permute(0, 2, 3, 1).masked_fill(~out_mask[:, :, None, None], 0.0).permute(0, 3, 1, 2)
        return y, out_mask

"""Audio modality net (MultiModel §2.5, "audio modality net").

Input: log-mel spectrogram frames (B, T, n_mels), or a raw waveform (B, T_samples) that a
front end (layers/log_mel.py) turns into the same log-mel frames the corpora store.

The spectrogram is treated as an image with time as height and frequency as width: a ConvStep,
then ``audio_time_strides`` Xception-style residual blocks that stride over time only (each
halves T, frequency resolution is kept). Frequency is then folded into channels and a linear
map gives width D. The padding mask is downsampled with the time axis.

The paper's net (``audio_block_filters``, used by configs/paper.py) has no entry ConvStep and
stacks 8 such blocks with 2, 4, ..., 256 filters (l_i = ConvRes(l_(i-1), 2^i)), so T shrinks
256-fold: right for WSJ's long utterances at 100 frames a second, too coarse for the built-in
task's ~1-3 s clips, hence the two-block default (docs/architecture.md, Deviations).

Deviation (an option, ``frequency_patch``; 1 = the paper): before the 2-D net, each frame's
F mel bands are cut into F / P patches of P adjacent bands, and a patch becomes the channels
of one frequency position (space-to-depth over frequency, a reshape that loses nothing; F is
zero-padded up to a multiple of P). The net then runs on a (T, F / P) map with P input channels
instead of a one-channel (T, F) map. Its first ConvStep sees 3 frames × 3P bands, and every
later layer does P times less work: the paper's net spends almost all of a speech step on
full-frequency-resolution maps (at B = 32, T = 280, F = 80 its first residual block alone
writes 2 × 46 M activations), which a 2-core CPU cannot afford. Striding stays over time only.

Optionally (``audio_normalize``; off in the paper), each utterance's features are first
normalised to mean 0 and variance 1 per mel band (layers/utterance_norm.py).

In training, optional SpecAugment masks (``audio_frequency_masks``, ``audio_time_masks``; none by
default) blank random mel bands and frame spans of the features first (layers/spec_augment.py).

Dimensions: B batch, T frames, F mel bands, C conv channels, D hidden size, N samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.log_mel import LOG_FLOOR, LogMelFrontEnd
from multimodel.layers.separable_conv import ConvStep2d, DownsampleBlock2d
from multimodel.layers.spec_augment import spec_augment
from multimodel.layers.utterance_norm import normalize_utterances
from multimodel.modalities.base import Modality, ModalityError, check_mask, checks_values, random_lengths_mask

class AudioModality(Modality):
    """Log-mel frames or waveforms -> a (B, T', D) sequence, T' = T / 2^(number of blocks).

    Args:
        config: model config (``hidden_size``, ``audio_mels``, ``audio_sample_rate``,
            ``audio_time_strides``, ``image_entry_filters`` for the conv widths,
            ``audio_block_filters`` for the paper's net, and ``audio_frequency_patch``).
        frequency_patch: P, adjacent mel bands folded into channels before the 2-D net (see
            the module docstring; 1 = the paper). None = ``config.audio_frequency_patch``.
    """

    def __init__(self, config: ModelConfig, frequency_patch: int | None = None) -> None:
        super().__init__()
        if frequency_patch is None:
            frequency_patch = config.audio_frequency_patch
        if frequency_patch < 1:
            raise ModalityError(f"frequency_patch must be >= 1, got {frequency_patch}")
        f1, f2 = config.image_entry_filters
        self.n_mels = config.audio_mels
        self.frequency_patch = P = frequency_patch
        self.bands = -(-config.audio_mels // P)  # frequency positions of the 2-D map
        self.front_end = LogMelFrontEnd(config.audio_sample_rate, config.audio_mels)
        self.normalize = config.audio_normalize
        self.masking = {"frequency_masks": config.audio_frequency_masks,
                        "frequency_width": config.audio_frequency_mask_width,
                        "time_masks": config.audio_time_masks, "time_fraction": config.audio_time_mask_fraction}
        if config.audio_block_filters:  # the paper's net: ConvRes blocks straight on the features
            self.entry = None
            widths = (P, *config.audio_block_filters)
        else:  # an entry ConvStep, then audio_time_strides blocks of f2 filters
            self.entry = ConvStep2d(P, f1, (3, 3), separable=False, first_relu=False)
            widths = (f1, *([f2] * config.audio_time_strides))
        self.blocks = nn.ModuleList(
            DownsampleBlock2d(c_in, c_out, stride=(2, 1), residual_relu=(i > 0))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        channels = widths[-1]
        self.project = nn.Linear(channels * self.bands, config.hidden_size)

    def example_inputs(self, batch, length, generator=None):
        """Random log-mel features (B, length, F) with a right-padding mask."""
        mask = random_lengths_mask(batch, length, generator)
        return torch.randn(batch, length, self.n_mels, generator=generator), mask

    def bottom(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F) or waveform (B, N); mask (B, T) / (B, N) or None -> ((B, T', D), (B, T'))."""
        if not isinstance(inputs, torch.Tensor) or inputs.dim() not in (2, 3):
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ModalityError(
                f"audio must be log-mel features (B, T, {self.n_mels}) or a waveform (B, N), got {shape}"
            )
        if not inputs.is_floating_point():
            raise ModalityError(f"audio must be floating point, got dtype {inputs.dtype}")
        if inputs.shape[0] == 0 or inputs.shape[1] == 0:
            raise ModalityError(f"audio input is empty: shape {tuple(inputs.shape)}")
        check_mask(mask, inputs.shape[0], inputs.shape[1], "audio", values=checks_values(self))
        if inputs.dim() == 2:
            inputs, mask = self.front_end(inputs, mask)
        elif inputs.shape[2] != self.n_mels:
            raise ModalityError(
                f"audio features must have {self.n_mels} mel bands (B, T, {self.n_mels}), got {tuple(inputs.shape)}"
            )
        if self.normalize:
            inputs = normalize_utterances(inputs, mask)  # (B, T, F)
        if self.training and (self.masking["frequency_masks"] or self.masking["time_masks"]):
            inputs = spec_augment(inputs, mask, **self.masking)  # (B, T, F)
        B, T, F = inputs.shape
        P, bands = self.frequency_patch, self.bands
        if bands * P != F:
            inputs = torch.nn.functional.pad(inputs, (0, bands * P - F))  # (B, T, bands·P)
        # Time is the image height; patch p of band f is channel p at width f. The (B, T, bands, P)
        # view is already the channels-last layout of (B, P, T, bands): no copy.
        x = inputs.reshape(B, T, bands, P).permute(0, 3, 1, 2)  # (B, P, T, bands)
        if self.entry is not None:
            x = self.entry(x, mask)  # (B, f1, T, bands)
        for block in self.blocks:
            x, mask = block(x, mask)  # (B, f2, ceil(T/2), bands)
        B, C, T, F = x.shape
        x = x.permute(0, 2, 1, 3).reshape(B, T, C * F)  # (B, T', C·bands): frequency folded into channels
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        return self.project(x), mask

    def blind(self, inputs, mask, generator=None):
        """Silence of the same length: log-mel frames (B, T, F) become log(LOG_FLOOR), what the
        front end (and the corpora's features) give a silent frame; a waveform (B, N) becomes
        zeros. Padded frames and the mask are kept."""
        if inputs.dim() == 2:
            return torch.zeros_like(inputs), mask  # waveform: padded samples are zeros already
        silence = torch.full_like(inputs, math.log(LOG_FLOOR))
        if mask is None:
            return silence, mask
        return torch.where(mask[..., None], silence, inputs), mask  # (B, T, F), padding untouched

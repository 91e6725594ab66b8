"""Audio modality net (MultiModel §2.4, "audio modality net").

Input: log-mel spectrogram frames (B, T, n_mels), or a raw waveform (B, T_samples) that a
front end turns into log-mel frames first (25 ms windows every 10 ms, torch.stft, a
triangular mel filterbank built here; torchaudio is not needed).

The spectrogram is treated as a one-channel image with time as height and frequency as width:
a ConvStep, then ``audio_time_strides`` Xception-style residual blocks that stride over time
only (each halves T, frequency resolution is kept). Frequency is then folded into channels and
a linear map gives width D. The padding mask is downsampled with the time axis.

Dimensions: B batch, T frames, F mel bands, C conv channels, D hidden size, N samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multimodel.config import ModelConfig
from multimodel.layers.separable_conv import ConvStep2d, DownsampleBlock2d
from multimodel.modalities.base import Modality, ModalityError, check_mask, random_lengths_mask

LOG_FLOOR = 1e-6  # keeps log() finite on silent frames


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)  # HTK mel scale


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist: (n_freqs, n_mels)."""
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (n_freqs,)
    mel_edges = torch.linspace(0.0, _hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    hz_edges = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0)  # (n_mels + 2,) left, centre, right
    left, centre, right = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]  # each (n_mels,)
    rising = (bin_hz[:, None] - left) / (centre - left)  # (n_freqs, n_mels)
    falling = (right - bin_hz[:, None]) / (right - centre)  # (n_freqs, n_mels)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMelFrontEnd(nn.Module):
    """Waveform (B, N) -> log-mel frames (B, T, F), with the frame mask.

    Frames are not centred (no reflection padding), so a real frame only ever covers real
    samples and padding a batch does not change any real frame.

    Args:
        sample_rate: samples per second.
        n_mels: F, mel bands.
    """

    def __init__(self, sample_rate: int, n_mels: int) -> None:
        super().__init__()
        self.win_length = round(0.025 * sample_rate)
        self.hop_length = round(0.010 * sample_rate)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(self.win_length // 2 + 1, n_mels, sample_rate), persistent=False
        )

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N = wave.shape
        lengths = torch.full((B,), N, device=wave.device) if mask is None else mask.sum(dim=1)
        if int(lengths.min()) < self.win_length:
            raise ModalityError(
                f"waveforms must hold at least one {self.win_length}-sample frame, got an example"
                f" with {int(lengths.min())} samples"
            )
        if mask is not None:
            wave = wave * mask.to(wave.dtype)
        spec = torch.stft(
            wave.float(), self.win_length, self.hop_length, window=self.window, center=False, return_complex=True
        )  # (B, n_freqs, T)
        power = spec.abs().pow(2).transpose(1, 2)  # (B, T, n_freqs)
        features = torch.log(power @ self.filterbank + LOG_FLOOR)  # (B, T, F)
        if mask is None:
            return features, None
        frames = (lengths - self.win_length) // self.hop_length + 1  # real frames per example
        frame_mask = torch.arange(features.shape[1], device=wave.device)[None, :] < frames[:, None]  # (B, T)
        return features, frame_mask


class AudioModality(Modality):
    """Log-mel frames or waveforms -> a (B, T', D) sequence, T' = T / 2^audio_time_strides.

    Args:
        config: model config (``hidden_size``, ``audio_mels``, ``audio_sample_rate``,
            ``audio_time_strides``, ``image_entry_filters`` for the conv widths).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f1, f2 = config.image_entry_filters
        self.n_mels = config.audio_mels
        self.front_end = LogMelFrontEnd(config.audio_sample_rate, config.audio_mels)
        self.entry = ConvStep2d(1, f1, (3, 3), separable=False, first_relu=False)
        self.blocks = nn.ModuleList(
            DownsampleBlock2d(f1 if i == 0 else f2, f2, stride=(2, 1), residual_relu=(i > 0))
            for i in range(config.audio_time_strides)
        )
        channels = f2 if config.audio_time_strides else f1
        self.project = nn.Linear(channels * config.audio_mels, config.hidden_size)

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
        check_mask(mask, inputs.shape[0], inputs.shape[1], "audio")
        if inputs.dim() == 2:
            inputs, mask = self.front_end(inputs, mask)
        elif inputs.shape[2] != self.n_mels:
            raise ModalityError(
                f"audio features must have {self.n_mels} mel bands (B, T, {self.n_mels}), got {tuple(inputs.shape)}"
            )
        B, T, F = inputs.shape
        x = inputs.unsqueeze(1)  # (B, 1, T, F): time is the image height
        x = self.entry(x, mask)  # (B, f1, T, F)
        for block in self.blocks:
            x, mask = block(x, mask)  # (B, f2, ceil(T/2), F)
        B, C, T, F = x.shape
        x = x.permute(0, 2, 1, 3).reshape(B, T, C * F)  # (B, T', C·F): frequency folded into channels
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        return self.project(x), mask

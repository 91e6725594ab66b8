"""Log-mel spectrogram: the audio features the corpora store and the model's waveform input.

One definition for both sides: the corpora turn every recording into these features
(corpora/audio_features.py) and the audio modality turns a raw waveform into the same ones
(modalities/audio.py), so a model trained on stored features can also read waveforms.

* 25 ms Hann windows every 10 ms; FFT size the next power of two of the window.
* Frame t is centred on sample t · hop, with zero padding at both ends: T = 1 + N // hop.
* Power spectrum, triangular filters on the Slaney mel scale (linear below 1 kHz, logarithmic
  above) with Slaney area normalisation (librosa's default), 0 Hz to Nyquist.
* Natural log, floored at 1e-6 so silent frames stay finite.

Dimensions: B batch, N samples, T frames, F mel bands, n_freqs = n_fft // 2 + 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_FLOOR = 1e-6
"""Keeps log() finite on silent frames: a silent frame's features are log(1e-6)."""

_SLANEY_LINEAR_HZ_PER_MEL = 200.0 / 3  # Slaney scale: linear below 1 kHz ...
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # ... logarithmic above (mel 15 = 1 kHz)


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    log_part = 15.0 + torch.log(hz.clamp_min(1e-10) / 1000.0) / _SLANEY_LOG_STEP
    return torch.where(hz < 1000.0, hz / _SLANEY_LINEAR_HZ_PER_MEL, log_part)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    log_part = 1000.0 * torch.exp((mel - 15.0) * _SLANEY_LOG_STEP)
    return torch.where(mel < 15.0, mel * _SLANEY_LINEAR_HZ_PER_MEL, log_part)


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """(F, n_freqs) float32 area-normalised triangular filters, Slaney mel scale, 0 Hz to Nyquist."""
    nyquist = torch.tensor([sample_rate / 2], dtype=torch.float64)
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (n_freqs,)
    mel_edges = torch.linspace(0.0, 1.0, n_mels + 2, dtype=torch.float64) * _hz_to_mel(nyquist)
    hz_edges = _mel_to_hz(mel_edges)  # (F + 2,) left, centre, right of each filter
    left, centre, right = hz_edges[:-2, None], hz_edges[1:-1, None], hz_edges[2:, None]  # each (F, 1)
    rising = (bin_hz - left) / (centre - left)  # (F, n_freqs)
    falling = (right - bin_hz) / (right - centre)  # (F, n_freqs)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (triangles * (2.0 / (right - left))).float()  # equal area: white noise -> flat spectrum


class LogMelFrontEnd(nn.Module):
    """Waveform (B, N) -> log-mel frames (B, T, F) with T = 1 + N // hop, and the frame mask.

    Padded samples are zeroed first; since frames are centred with zero padding, a real frame
    then sees the same samples whether or not the batch is padded.

    Args:
        sample_rate: samples per second.
        n_mels: F, mel bands.
        win_ms: window length in milliseconds.
        hop_ms: hop between frames in milliseconds.
    """

    def __init__(self, sample_rate: int, n_mels: int, win_ms: float = 25.0, hop_ms: float = 10.0) -> None:
        super().__init__()
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        # Derived from the config, so not saved with the weights.
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(self.n_fft, sample_rate, n_mels).t().contiguous(), persistent=False
        )  # (n_freqs, F)

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """wave (B, N), mask (B, N) or None -> (features (B, T, F), frame mask (B, T) or None)."""
        if mask is not None:
            wave = wave * mask.to(wave.dtype)
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(wave.float(), (half, half))  # frame t centred on sample t·hop
        spec = torch.stft(
            padded, self.n_fft, self.hop_length, self.win_length, self.window, center=False, return_complex=True
        )  # (B, n_freqs, T)
        power = (spec.real.square() + spec.imag.square()).transpose(1, 2)  # (B, T, n_freqs)
        features = torch.log((power @ self.filterbank).clamp_min(LOG_FLOOR))  # (B, T, F)
        if mask is None:
            return features, None
        frames = 1 + mask.sum(dim=1) // self.hop_length  # real frames per example (right padding)
        frame_mask = torch.arange(features.shape[1], device=wave.device)[None, :] < frames[:, None]  # (B, T)
        return features, frame_mask

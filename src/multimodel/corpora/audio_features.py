"""Audio front end of the corpora: band-limited resampling and log-mel spectrograms.

The paper's audio modality reads spectrograms (frequency × time); the corpora hand it
(T_frames, n_mels) float32 log-mel features, 25 ms Hann windows every 10 ms, as is usual for
speech recognition. Audio is first resampled to 16 kHz so synthetic speech (espeak-ng writes
22,050 Hz) and real corpora (LibriSpeech, WSJ: 16 kHz) give features on the same scale.

* :func:`resample`: polyphase windowed-sinc interpolation (Kaiser window, 32 taps each side,
  cut-off at 95 % of the lower Nyquist frequency), exact for rational rate ratios.
* :func:`log_mel_spectrogram`: the audio modality's log-mel front end
  (:mod:`multimodel.layers.log_mel`, one definition for the corpora and the model) on one
  waveform: (T_frames, n_mels) with T_frames = 1 + n_samples // hop.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from multimodel.layers.log_mel import LOG_FLOOR, LogMelFrontEnd
from multimodel.layers.log_mel import mel_filterbank as _filterbank

__all__ = ["LOG_FLOOR", "TARGET_SAMPLE_RATE", "log_mel_spectrogram", "mel_filterbank", "resample"]

TARGET_SAMPLE_RATE = 16000


@functools.lru_cache(maxsize=8)
def _polyphase_taps(up: int, down: int, half_width: int, rolloff: float, beta: float) -> np.ndarray:
    """(up, 2·half_width) filter taps; row p interpolates at fractional offset p / up."""
    cutoff = rolloff * min(1.0, up / down)  # in cycles per input sample × 2 (1.0 = input Nyquist)
    offsets = np.arange(-half_width + 1, half_width + 1)[None, :] - (np.arange(up)[:, None] / up)  # (up, 2W)
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (offsets / half_width) ** 2, 0.0, None))) / np.i0(beta)
    return (cutoff * np.sinc(cutoff * offsets) * window).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _block_matrix(up: int, down: int, half_width: int, rolloff: float, beta: float) -> np.ndarray:
    """(down + 2W - 1, up) float32 matrix mapping one input window to one block of outputs.

    Output n = k·up + p sits at input position k·down + (p·down)/up, so every block of ``up``
    outputs reads the same pattern of a ``down + 2W - 1`` input window starting at k·down.
    """
    taps = _polyphase_taps(up, down, half_width, rolloff, beta)
    matrix = np.zeros((up, down + 2 * half_width - 1))
    for p in range(up):
        start = (p * down) // up  # window index of the first tap (offset -W+1, shifted by W-1)
        matrix[p, start : start + 2 * half_width] = taps[(p * down) % up]
    return matrix.T.astype(np.float32)


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int, half_width: int = 32,
             rolloff: float = 0.95, beta: float = 8.6) -> np.ndarray:
    """Resample a 1-d waveform from ``orig_rate`` to ``new_rate`` Hz (band-limited).

    Output sample n sits at input time n·orig/new and is the windowed-sinc interpolation of the
    2·half_width nearest input samples; the low-pass cut-off is ``rolloff`` × the lower of the
    two Nyquist frequencies, so nothing above the new Nyquist folds back. Returns float32 of
    length ceil(len · new / orig).
    """
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-d waveform, got shape {x.shape}")
    if orig_rate == new_rate:
        return x.copy()
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    n_out = -(-len(x) * up // down)
    if up * (down + 2 * half_width) <= 4_000_000:  # usual rates (22050 → 16000: 320 × 505)
        matrix = _block_matrix(up, down, half_width, rolloff, beta)
        blocks = -(-n_out // up)
        span = matrix.shape[0]
        padded = np.zeros(blocks * down + span, np.float32)
        padded[half_width - 1 : half_width - 1 + len(x)] = x
        windows = np.lib.stride_tricks.as_strided(
            padded, shape=(blocks, span), strides=(down * padded.strides[0], padded.strides[0]), writeable=False
        )  # (blocks, span): block k starts at input sample k·down - (W - 1)
        # torch's matmul honours torch.set_num_threads (numpy's BLAS pool would oversubscribe
        # the cores when the speech corpus runs several of these in threads).
        out = torch.from_numpy(windows.copy()) @ torch.from_numpy(matrix)  # (blocks, up)
        return out.reshape(-1)[:n_out].numpy().copy()
    taps = _polyphase_taps(up, down, half_width, rolloff, beta)  # unusual rates: gather per output
    n = np.arange(n_out, dtype=np.int64)
    base, phase = (n * down) // up, (n * down) % up
    padded64 = np.concatenate([np.zeros(half_width), x.astype(np.float64), np.zeros(half_width + 1)])
    index = base[:, None] + np.arange(-half_width + 1, half_width + 1)[None, :] + half_width  # (n_out, 2W)
    out = np.empty(n_out, np.float64)
    for start in range(0, n_out, 65536):  # chunks bound the (chunk, 2W) gather's memory
        sl = slice(start, start + 65536)
        out[sl] = np.einsum("ij,ij->i", padded64[index[sl]], taps[phase[sl]])
    return out.astype(np.float32)


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32: the model's filterbank (layers/log_mel.py) as an array."""
    return _filterbank(n_fft, sample_rate, n_mels).numpy()


@functools.lru_cache(maxsize=8)
def _front_end(sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> LogMelFrontEnd:
    return LogMelFrontEnd(sample_rate, n_mels, win_ms, hop_ms)


def log_mel_spectrogram(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0
) -> np.ndarray:
    """(T_frames, n_mels) float32 log-mel features of a 1-d waveform in [-1, 1].

    The audio modality's own front end (:class:`~multimodel.layers.log_mel.LogMelFrontEnd`)
    on one waveform, so stored features and waveforms given to the model agree. Any sample
    rate works (window and hop are set in milliseconds); the corpora resample to 16 kHz first
    so that every source shares one filterbank.
    """
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if x.ndim != 1:
        raise ValueError(f"log_mel_spectrogram expects a 1-d waveform, got shape {tuple(x.shape)}")
    with torch.no_grad():
        features, _ = _front_end(sample_rate, n_mels, win_ms, hop_ms)(x[None], None)  # (1, T, F)
    return features[0].contiguous().numpy()

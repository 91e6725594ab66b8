"""Audio front end of the corpora: band-limited resampling and log-mel spectrograms.

The paper's audio modality reads spectrograms (frequency × time); the corpora hand it
(T_frames, n_mels) float32 log-mel features, 25 ms Hann windows every 10 ms, as is usual for
speech recognition. Audio is first resampled to 16 kHz so synthetic speech (espeak-ng writes
22,050 Hz) and real corpora (LibriSpeech, WSJ: 16 kHz) give features on the same scale.

* :func:`resample`: polyphase windowed-sinc interpolation (Kaiser window, 32 taps each side,
  cut-off at 95 % of the lower Nyquist frequency), exact for rational rate ratios.
* :func:`mel_filterbank`: triangular filters on the Slaney mel scale (linear below 1 kHz,
  logarithmic above) with Slaney area normalisation, as librosa's default.
* :func:`log_mel_spectrogram`: power STFT (``torch.stft``, FFT size the next power of two of
  the window), mel filterbank, natural log with a floor of 1e-6. Frame ``t`` is centred on
  sample ``t × hop`` (zero padding at the ends), so T_frames = 1 + n_samples // hop.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

TARGET_SAMPLE_RATE = 16000
LOG_FLOOR = 1e-6


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


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, linear, log)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * (200.0 / 3), 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0)))


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    n_fft: int, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, Slaney mel scale and area norm."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))  # (n_mels + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)  # equal area: white noise gives a flat mel spectrum
    return weights.astype(np.float32)


def log_mel_spectrogram(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0
) -> np.ndarray:
    """(T_frames, n_mels) float32 log-mel features of a 1-d waveform in [-1, 1].

    Any sample rate works (window and hop are set in milliseconds); the corpora resample to
    16 kHz first so that every source shares one filterbank.
    """
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if x.ndim != 1:
        raise ValueError(f"log_mel_spectrogram expects a 1-d waveform, got shape {tuple(x.shape)}")
    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    n_fft = 1 << (win - 1).bit_length()
    x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))  # frame t centred on sample t·hop
    spec = torch.stft(
        x, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=False, return_complex=True
    )  # (n_fft // 2 + 1, T)
    power = spec.real.square() + spec.imag.square()
    fb = torch.from_numpy(mel_filterbank(n_fft, sample_rate, n_mels))
    mel = fb @ power  # (n_mels, T)
    return torch.log(mel.clamp_min(LOG_FLOOR)).T.contiguous().numpy()

"""Audio features of the corpora: resampling accuracy, mel filterbank, log-mel frames."""

from __future__ import annotations

import numpy as np
import pytest

from multimodel.corpora.audio_features import LOG_FLOOR, log_mel_spectrogram, mel_filterbank, resample


def _tone(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("orig, new", [(22050, 16000), (16000, 22050), (22050, 16001), (48000, 16000)])
@pytest.mark.parametrize("freq", [300.0, 2500.0])
def test_resample_matches_the_ideal_signal(orig, new, freq):
    y = resample(_tone(freq, orig), orig, new)
    assert y.dtype == np.float32 and len(y) == -(-int(orig * 0.5) * new // orig)
    ideal = _tone(freq, new, len(y) / new)[: len(y)]
    assert np.abs(y - ideal)[100:-100].max() < 1e-3  # edges see the zero padding


def test_resample_removes_what_the_new_rate_cannot_hold():
    y = resample(_tone(10000.0, 22050), 22050, 16000)  # above the new Nyquist (8 kHz)
    assert np.abs(y[100:-100]).max() < 1e-3


def test_resample_short_and_identity():
    assert len(resample(np.ones(1), 22050, 16000)) == 1
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert np.array_equal(resample(x, 16000, 16000), x)


def test_mel_filterbank_has_no_empty_filters_and_increasing_centres():
    fb = mel_filterbank(512, 16000, 80)
    assert fb.shape == (80, 257)
    assert (fb.max(axis=1) > 0).all()
    assert (np.diff(fb.argmax(axis=1)) >= 0).all()


def test_log_mel_frames_and_peak():
    rate = 16000
    x = _tone(1000.0, rate, 1.0)
    feats = log_mel_spectrogram(x, rate, 80)
    assert feats.shape == (1 + len(x) // 160, 80) and feats.dtype == np.float32
    fb = mel_filterbank(512, rate, 80)
    assert abs(int(feats[5:-5].mean(0).argmax()) - int(fb[:, 1000 * 512 // rate].argmax())) <= 1
    silence = log_mel_spectrogram(np.zeros(1600), rate, 80)
    assert np.allclose(silence, np.log(LOG_FLOOR))

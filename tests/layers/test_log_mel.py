"""The log-mel front end shared by the corpora and the audio modality (layers/log_mel.py)."""

import math

import torch

from multimodel.layers.log_mel import LOG_FLOOR, LogMelFrontEnd, mel_filterbank


def test_mel_filterbank_triangles():
    bank = mel_filterbank(512, 16000, 40)
    assert bank.shape == (40, 257) and (bank >= 0).all()
    assert ((bank > 0).sum(dim=1) > 0).all()  # every band covers some bins
    assert torch.equal(bank.argmax(dim=1), bank.argmax(dim=1).sort().values)  # centres ascend


def test_front_end_frames_silence_and_padding():
    front_end = LogMelFrontEnd(16000, 80)
    assert (front_end.win_length, front_end.hop_length, front_end.n_fft) == (400, 160, 512)
    wave = torch.randn(2, 3200)
    mask = torch.arange(3200)[None, :] < torch.tensor([[3200], [1000]])
    features, frames = front_end(wave, mask)
    assert features.shape == (2, 1 + 3200 // 160, 80)
    assert frames[1].sum() == 1 + 1000 // 160
    silence, _ = front_end(torch.zeros(1, 800), None)
    torch.testing.assert_close(silence, torch.full_like(silence, math.log(LOG_FLOOR)))
    # A padded example's real frames do not depend on what lies in its padding.
    noisy = torch.where(mask, wave, torch.randn_like(wave))
    again, _ = front_end(noisy, mask)
    torch.testing.assert_close(again[frames], features[frames])

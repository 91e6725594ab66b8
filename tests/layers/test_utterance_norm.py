"""Per-utterance mean and variance normalisation: each real band at mean 0 and variance 1, padding
0 and out of the statistics, an utterance-wide offset and scale per band removed, and the audio
nets (MultiModel's and the speech baseline's) normalise only when configured to."""

from __future__ import annotations

import dataclasses

import torch

from multimodel.baselines.base import BaselineConfig
from multimodel.baselines.seq2seq import AudioSource
from multimodel.config import ModelConfig
from multimodel.layers.utterance_norm import normalize_utterances
from multimodel.modalities.audio import AudioModality


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(4, 30, 8, generator=g) * 2.0 + 5.0  # (B, T, F)
    lengths = torch.tensor([30, 21, 9, 2])
    mask = torch.arange(30)[None, :] < lengths[:, None]  # (B, T)
    return features, mask, lengths


def test_each_band_of_each_utterance_is_standardised_over_its_real_frames_only():
    features, mask, lengths = _batch()
    out = normalize_utterances(features, mask, eps=0.0)
    for b, n in enumerate(lengths.tolist()):
        real = features[b, :n]  # naive reference: the textbook formula on the unpadded slice
        expected = (real - real.mean(0)) / real.std(0, unbiased=False)
        torch.testing.assert_close(out[b, :n], expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))


def test_padding_does_not_change_an_utterance():
    features, mask, lengths = _batch(1)
    batched = normalize_utterances(features, mask)
    for b, n in enumerate(lengths.tolist()):
        alone = normalize_utterances(features[b:b + 1, :n], None)
        torch.testing.assert_close(batched[b:b + 1, :n], alone, rtol=1e-5, atol=1e-5)


def test_an_offset_and_scale_per_band_are_removed():
    features, mask, _ = _batch(2)
    offset = torch.linspace(-4, 4, 8)  # (F,): a speaker's or channel's spectral envelope
    scale = torch.linspace(0.5, 3, 8)
    out = normalize_utterances(features, mask)
    shifted = normalize_utterances(features * scale + offset, mask)
    torch.testing.assert_close(out, shifted, rtol=1e-4, atol=1e-4)


def test_a_constant_band_becomes_zero_not_nan():
    features = torch.full((1, 10, 3), -11.5)  # silence: log of the floor in every frame
    out = normalize_utterances(features, torch.ones(1, 10, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))


def test_the_audio_nets_normalise_only_when_configured():
    features, mask, _ = _batch(3)
    features = features.repeat(1, 1, 10)  # (B, T, 80): the default mel bands
    offset = torch.linspace(-3, 3, 80)
    for normalize in (False, True):
        torch.manual_seed(0)
        audio = AudioModality(dataclasses.replace(ModelConfig(hidden_size=32), audio_normalize=normalize)).eval()
        torch.manual_seed(0)
        source = AudioSource(BaselineConfig(hidden_size=32, audio_normalize=normalize)).eval()
        for net in (audio.bottom, source):
            plain, out_mask = net(features, mask)
            moved, _ = net(features + offset, mask)
            real = out_mask[..., None].expand_as(plain)
            same = torch.allclose(plain[real], moved[real], atol=1e-4)
            assert same == normalize, (net, normalize)

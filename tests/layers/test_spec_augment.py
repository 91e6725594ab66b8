"""SpecAugment masks: whole bands and whole spans of real frames, set to the utterance's mean;
padding untouched; only in training."""

from __future__ import annotations

import pytest
import torch

from multimodel.config import ConfigError, ModelConfig
from multimodel.layers.spec_augment import spec_augment
from multimodel.modalities.audio import AudioModality


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 50, 20, generator=g) + 3.0  # (B, T, F), far from 0 so a mask shows
    lengths = torch.tensor([50, 40, 31, 20, 10, 3])
    mask = torch.arange(50)[None, :] < lengths[:, None]  # (B, T)
    return features, mask, lengths


def test_masks_cover_whole_bands_and_whole_spans_of_real_frames_with_the_mean():
    features, mask, lengths = _batch()
    torch.manual_seed(1)
    out = spec_augment(features, mask, frequency_masks=2, frequency_width=5, time_masks=2, time_fraction=0.2)
    assert out.shape == features.shape
    assert torch.equal(out[~mask], features[~mask])  # padding untouched
    changed = out != features
    for b, n in enumerate(lengths.tolist()):
        real = features[b, :n]
        mean = real.mean()
        c = changed[b, :n]  # (n, F)
        assert torch.allclose(out[b, :n][c], mean.expand(int(c.sum())))
        bands = c.all(0)  # masked bands: every real frame
        frames = c.all(1)  # masked frames: every band
        assert torch.equal(c, bands[None, :] | frames[:, None])  # nothing else changed
        assert int(frames.sum()) <= 2 * int(0.2 * n)
        assert int(bands.sum()) <= 10


def test_mask_widths_are_drawn_up_to_their_limits_and_no_masks_change_nothing():
    features, mask, _ = _batch()
    torch.manual_seed(2)
    widths = []
    for _ in range(200):
        out = spec_augment(features[:1], mask[:1], frequency_masks=1, frequency_width=6, time_masks=0,
                           time_fraction=0.0)
        widths.append(int((out != features[:1])[0].all(0).sum()))
    assert set(widths) == set(range(7))  # 0 .. 6 bands, each drawn
    same = spec_augment(features, mask, frequency_masks=0, frequency_width=6, time_masks=0, time_fraction=0.5)
    assert torch.equal(same, features)


def test_the_audio_net_masks_in_training_only():
    cfg = ModelConfig(hidden_size=32, num_heads=4, audio_frequency_masks=2, audio_time_masks=2,
                      audio_time_mask_fraction=0.3)
    torch.manual_seed(0)
    net = AudioModality(cfg)
    features, mask = torch.randn(3, 40, 80), torch.ones(3, 40, dtype=torch.bool)
    net.eval()
    first, _ = net.bottom(features, mask)
    assert torch.equal(first, net.bottom(features, mask)[0])
    net.train()
    torch.manual_seed(3)
    trained = net.bottom(features, mask)[0]
    assert not torch.allclose(trained, first)
    plain = AudioModality(ModelConfig(hidden_size=32, num_heads=4))
    plain.load_state_dict(net.state_dict())
    plain.train()
    assert torch.allclose(plain.bottom(features, mask)[0], first, atol=1e-6)  # no dropout: train = eval


@pytest.mark.parametrize("field", ["audio_frequency_masks", "audio_time_masks"])
def test_negative_mask_counts_are_refused(field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: -1})

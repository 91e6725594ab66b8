"""SpecAugment's masking (Park et al. 2019): blank random bands and spans of a spectrogram.

In training only, each utterance's log-mel features get ``frequency_masks`` bands of ``f``
adjacent mel bands, ``f`` uniform in [0, ``frequency_width``], and ``time_masks`` spans of ``t``
frames, ``t`` uniform in [0, ``time_fraction`` × the utterance's real length], each at a uniform
position; the masked values become the utterance's mean feature (over its real frames and all
bands), so a mask carries no energy of its own. Time warping, the paper's third part, is left
out (its authors report it as the least influential of the three). Padding stays as it was.

Hand-written because torchaudio, which has the two masks, is not built for the PyTorch this
project pins. Draws from the global torch generator, like dropout, so a resumed run replays it.

Dimensions: B batch, T frames, F mel bands.
"""

from __future__ import annotations

import torch


def _spans(lengths: torch.Tensor, widths: torch.Tensor, size: int, count: int) -> torch.Tensor:
    """(B, size) True inside ``count`` random spans per row: row b's spans start uniformly in
    [0, lengths[b] - width] with a width uniform in [0, widths[b]]."""
    B = lengths.shape[0]
    device = lengths.device
    positions = torch.arange(size, device=device)
    hit = torch.zeros(B, size, dtype=torch.bool, device=device)
    for _ in range(count):
        width = (torch.rand(B, device=device) * (widths + 1).float()).floor().long()  # (B,) in [0, widths]
        start = (torch.rand(B, device=device) * (lengths - width + 1).clamp(min=1).float()).floor().long()  # (B,)
        hit |= (positions >= start[:, None]) & (positions < (start + width)[:, None])  # (B, size)
    return hit


def spec_augment(features: torch.Tensor, mask: torch.Tensor | None, *, frequency_masks: int,
                 frequency_width: int, time_masks: int, time_fraction: float) -> torch.Tensor:
    """features (B, T, F), mask (B, T) True on real frames or None -> masked features (B, T, F)."""
    B, T, F = features.shape
    device = features.device
    real = torch.ones(B, T, dtype=torch.bool, device=device) if mask is None else mask
    lengths = real.sum(1)  # (B,)
    weights = real[..., None].to(features.dtype)  # (B, T, 1)
    mean = (features * weights).sum((1, 2)) / (lengths.clamp(min=1) * F).to(features.dtype)  # (B,)
    bands = _spans(torch.full((B,), F, device=device), torch.full((B,), frequency_width, device=device), F,
                   frequency_masks)  # (B, F)
    frames = _spans(lengths, (lengths.float() * time_fraction).floor().long(), T, time_masks)  # (B, T)
    hidden = (bands[:, None, :] | frames[:, :, None]) & real[..., None]  # (B, T, F), padding untouched
    return torch.where(hidden, mean[:, None, None], features)

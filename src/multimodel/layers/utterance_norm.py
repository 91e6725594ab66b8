"""Per-utterance mean and variance normalisation of spectrogram features (CMVN).

Each mel band of each utterance is shifted to mean 0 and scaled to variance 1 over that
utterance's real frames. What a speaker or a recording channel adds to every frame alike (the
long-term spectral envelope, the loudness) is removed, and what changes from frame to frame
(the words) is kept: the classic normalisation of speech recognisers for voices unseen in
training. Not in the paper's release; the later tensor2tensor speech modality computes such
per-band statistics over time in its bottom, in place of CMVN estimated on the whole corpus.
Padded frames become 0 and stay out of the statistics.

A band that does not change over the utterance (silence, the blind control's input) has
variance 0 and becomes 0: ``eps`` keeps the division finite.

Dimensions: B batch, T frames, F mel bands.
"""

from __future__ import annotations

import torch

EPS = 1e-5


def normalize_utterances(features: torch.Tensor, mask: torch.Tensor | None, eps: float = EPS) -> torch.Tensor:
    """features (B, T, F), mask (B, T) True on real frames or None -> normalised features (B, T, F)."""
    B, T, F = features.shape
    if mask is None:
        mean = features.mean(1, keepdim=True)  # (B, 1, F)
        variance = features.var(1, unbiased=False, keepdim=True)  # (B, 1, F)
        return (features - mean) * torch.rsqrt(variance + eps)
    weights = mask[..., None].to(features.dtype)  # (B, T, 1)
    count = weights.sum(1, keepdim=True).clamp(min=1)  # (B, 1, 1)
    mean = (features * weights).sum(1, keepdim=True) / count  # (B, 1, F)
    centred = (features - mean) * weights  # (B, T, F), padding 0
    variance = centred.square().sum(1, keepdim=True) / count  # (B, 1, F)
    return centred * torch.rsqrt(variance + eps)

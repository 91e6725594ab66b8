"""Text modality net (MultiModel §2.5, "language modality nets").

Input: subword ids (B, T), int64, padded with ``config.PAD_ID``. They are embedded by a learned table and scaled by
sqrt(D) (so the embedding's scale matches the unit-variance timing signal and conv outputs).
Output: a linear map from the body's (B, T, D) to logits over the vocabulary (B, T, V),
optionally tied to the input table. The same instance embeds decoder targets.

Dimensions: B batch, T length, D hidden size, V vocabulary size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multimodel.config import EOS_ID, PAD_ID, UNK_ID, ModelConfig
from multimodel.modalities.base import (
    LossOutput,
    Modality,
    ModalityError,
    check_mask,
    checks_values,
    label_smoothed_loss,
    random_lengths_mask,
)

FIRST_PIECE_ID = max(PAD_ID, EOS_ID, UNK_ID) + 1
"""The first id after the special ones (config.py): the smallest vocabulary has one piece more."""


class TextModality(Modality):
    """Embedding in, linear softmax out.

    Args:
        config: model config (``hidden_size``, ``tie_text_embeddings``, ``label_smoothing``).
        vocab_size: V, size of the shared subword vocabulary.
    """

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < FIRST_PIECE_ID:
            raise ModalityError(
                f"text vocabulary must hold at least PAD, EOS, UNK ({FIRST_PIECE_ID} ids), got {vocab_size}"
            )
        D = config.hidden_size
        self.vocab_size = vocab_size
        self.scale = math.sqrt(D)
        self.label_smoothing = config.label_smoothing
        self.embedding = nn.Embedding(vocab_size, D)
        # Scaled by sqrt(D) on the way in, so start at std D^-1/2: unit-scale inputs.
        nn.init.normal_(self.embedding.weight, std=D**-0.5)
        self.output = nn.Linear(D, vocab_size, bias=False)
        if config.tie_text_embeddings:
            self.output.weight = self.embedding.weight

    def _check_ids(self, ids: torch.Tensor, what: str) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ModalityError(f"text {what} must be token ids of shape (B, T), got {shape}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise ModalityError(f"text {what} must be integer token ids, got dtype {ids.dtype}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ModalityError(f"text {what} is empty: shape {tuple(ids.shape)}")
        if not checks_values(self):
            return
        low, high = torch.aminmax(ids)  # one pass (runs once per decoded token)
        low, high = int(low), int(high)
        if low < 0 or high >= self.vocab_size:
            raise ModalityError(f"text {what} ids must lie in [0, {self.vocab_size}), got range [{low}, {high}]")

    def bottom(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> (x (B, T, D), mask (B, T)); no mask means "ids != PAD"."""
        self._check_ids(inputs, "inputs")
        B, T = inputs.shape
        if mask is None:
            mask = inputs != PAD_ID
        check_mask(mask, B, T, "text inputs", values=checks_values(self))
        return self.embedding(inputs) * self.scale, mask

    def targets_bottom(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> (B, T, D), the decoder's view of previous target tokens."""
        self._check_ids(ids, "targets")
        return self.embedding(ids) * self.scale

    def top(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> logits (B, T, V)."""
        return self.output(h)

    def example_inputs(self, batch, length, generator=None):
        mask = random_lengths_mask(batch, length, generator)
        ids = torch.randint(FIRST_PIECE_ID, self.vocab_size, (batch, length), generator=generator)
        return ids.masked_fill(~mask, PAD_ID), mask

    def example_targets(self, batch, length, generator=None):
        return self.example_inputs(batch, length, generator)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> LossOutput:
        """Label-smoothed cross-entropy over real target positions."""
        if mask is None:
            mask = targets != PAD_ID
        return label_smoothed_loss(logits, targets, mask, self.label_smoothing)

    def blind(self, inputs, mask, generator=None):
        """Every real token replaced by UNK: the words are gone, the length (and padding) stays.

        (Shuffling the tokens would keep the words: "twenty-one" shuffled still translates.)
        ``generator`` is unused; the control is deterministic."""
        real = inputs != PAD_ID if mask is None else mask
        return inputs.masked_fill(real, UNK_ID), mask

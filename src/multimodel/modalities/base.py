"""The interface between modality nets and the shared body (MultiModel section 2.1).

A modality net is the only part of the model that knows what its data looks like. The body
sees nothing but (B, T, D) tensors and boolean masks (True = a real position, False = padding).

Dimensions: B batch, T sequence length, D hidden size, V vocabulary size, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ModalityError(ValueError):
    """Input a modality net cannot take (wrong rank, size, dtype); the message says why."""


@dataclass
class LossOutput:
    """Sums over real target positions, so callers can average over any number of batches."""

    loss: torch.Tensor
    """Label-smoothed cross-entropy averaged over real positions (what is optimised)."""
    nll_sum: torch.Tensor
    """Sum of the unsmoothed negative log-likelihood (for log-perplexity)."""
    correct: torch.Tensor
    """Number of real positions whose argmax equals the target (per-token accuracy)."""
    count: torch.Tensor
    """Number of real target positions."""


class Modality(nn.Module):
    """Base class of modality nets.

    Subclasses implement the parts that apply to them:

    * ``bottom(inputs, mask)`` turns raw inputs into ``(x (B, T, D), mask (B, T))``.
    * ``targets_bottom(ids)`` embeds target ids (B, T) into (B, T, D) for the decoder.
    * ``top(h, mask)`` turns the body's output into logits: (B, T, V) for sequences, or
      (B, C) for class labels (which pool the encoder memory and skip the decoder).
    * ``loss(logits, targets, mask)`` returns a :class:`LossOutput`.
    """

    #: True for output modalities that pool the encoder memory instead of decoding.
    skips_decoder: bool = False

    def bottom(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise ModalityError(f"{type(self).__name__} cannot be used as an input modality")

    def targets_bottom(self, ids: torch.Tensor) -> torch.Tensor:
        raise ModalityError(f"{type(self).__name__} cannot be used as a decoder target modality")

    def top(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise ModalityError(f"{type(self).__name__} cannot be used as an output modality")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> LossOutput:
        raise ModalityError(f"{type(self).__name__} cannot be used as an output modality")

    # Small random batches of valid data, so that tests and smoke checks parametrised over
    # the catalogue cover a new modality without knowing its data format.

    def example_inputs(
        self, batch: int, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Random valid ``(inputs, mask)`` of about ``length`` positions, with right padding."""
        raise ModalityError(f"{type(self).__name__} cannot be used as an input modality")

    def example_targets(
        self, batch: int, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Random valid ``(targets, mask)`` for ``loss`` (mask None for per-example targets)."""
        raise ModalityError(f"{type(self).__name__} cannot be used as an output modality")

    @property
    def is_input(self) -> bool:
        """Whether this modality can encode inputs (implements ``bottom``)."""
        return type(self).bottom is not Modality.bottom

    @property
    def is_output(self) -> bool:
        """Whether this modality can produce outputs (implements ``top``)."""
        return type(self).top is not Modality.top

    def blind(
        self, inputs: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The same batch with its content removed: ``(inputs, mask)`` of the same shapes.

        The blind control of evaluation: a model scored on blinded inputs shows what a task's
        metric gives for outputs that do not depend on the input (class priors, a memorised
        favourite sentence). Each input modality says what "no content" means for its data
        (a blank image, silence, the words in a random order); padding stays where it is.
        ``generator`` makes random blinding deterministic.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no blind control: implement blind(inputs, mask, generator) to return"
            " its inputs with the content removed (same shapes, same padding)"
        )


# ----------------------------------------------------------------------------------------
# Helpers shared by the modality nets.


def label_smoothed_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None, smoothing: float
) -> LossOutput:
    """Label-smoothed cross-entropy over real positions (paper code: smoothing 0.1).

    ``logits`` (..., V) and ``targets`` (...) of matching leading shape; ``mask`` (...) bool or
    None (all real). Padded positions add nothing to any of the sums.
    """
    V = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ModalityError(
            f"targets must have shape {tuple(logits.shape[:-1])} to match logits {tuple(logits.shape)},"
            f" got {tuple(targets.shape)}"
        )
    flat_logits = logits.reshape(-1, V).float()  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    real = torch.ones_like(flat_targets, dtype=torch.bool) if mask is None else mask.reshape(-1)
    # One log-softmax for both: F.cross_entropy's label smoothing is (1 - ε)·nll + ε·mean(-log p).
    logp = F.log_softmax(flat_logits, dim=-1)  # (N, V)
    nll = -logp.gather(1, flat_targets[:, None]).squeeze(1)  # (N,)
    smoothed = (1.0 - smoothing) * nll - smoothing * logp.mean(-1)  # (N,)
    weight = real.to(smoothed.dtype)
    count = weight.sum()
    correct = ((flat_logits.argmax(-1) == flat_targets) & real).sum()
    return LossOutput(
        loss=(smoothed * weight).sum() / count.clamp(min=1.0),
        nll_sum=(nll * weight).sum(),
        correct=correct,
        count=count,
    )


def random_lengths_mask(batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T) right-padding mask with random lengths in [1, T]; the first example is full."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return torch.arange(length)[None, :] < lengths[:, None]


def check_mask(
    mask: torch.Tensor | None, batch: int, length: int, what: str, *, values: bool = True
) -> torch.Tensor | None:
    """Validate a (B, T) boolean padding mask; every example needs at least one real position.

    ``values=False`` checks the shape and dtype only: that every example has a real position
    is a read of the mask on the host, which training skips (the collator validates its
    batches; see :func:`checks_values`).
    """
    if mask is None:
        return None
    if mask.dim() != 2 or tuple(mask.shape) != (batch, length):
        raise ModalityError(f"{what} mask must have shape ({batch}, {length}), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ModalityError(f"{what} mask must be torch.bool (True = real), got {mask.dtype}")
    if values and not bool(mask.any(dim=1).all()):
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ModalityError(f"{what}: examples {empty} are empty (no real position in the mask)")
    return mask


def checks_values(module: nn.Module) -> bool:
    """Whether ``module`` checks its inputs' values (ids in range, no empty example): only
    outside training. Such a check reads tensors on the host, which on an accelerator waits
    for all queued work; in training the collator validates each batch on the host instead,
    and shapes and dtypes are still checked here.
    """
    return not module.training

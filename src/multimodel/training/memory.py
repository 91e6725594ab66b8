"""Two ways to spend less memory per step: bfloat16 autocast and activation checkpointing.

* ``train.precision="bf16"``: the forward pass runs under ``torch.autocast`` with bfloat16
  (matrix products and convolutions in bf16, so their saved activations take half the
  memory). Weights, gradients and Adam's moments stay float32; the MoE gate's maths and the
  balancing loss stay float32 (the layer turns autocast off there); the experts run in bf16;
  the task loss is computed in float32 (``label_smoothed_loss``).
* ``train.activation_checkpointing=true``: each block of the body (the encoder's conv blocks,
  the I/O mixer's attention block and conv blocks, the decoder's blocks) keeps only its
  inputs for the backward and runs its forward again there (``torch.utils.checkpoint``,
  non-reentrant, with the RNG state of the first run, so dropout draws the same masks and the
  gradients are bit-identical). The MoE sublayers are not checkpointed: recomputing them would
  repeat the expert-parallel all-to-all.

docs/benchmarks.md ("Memory savers") has the measured savings (benchmarks/memory.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast context for ``train.precision`` (a no-op for float32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def body_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a MultiModel's body, in order (attention blocks ablated away are absent)."""
    blocks = [*model.encoder.blocks, model.mixer.attention, *model.mixer.blocks, *model.decoder.blocks]
    return [b for b in blocks if b is not None]


def checkpoint_body_blocks(model: nn.Module) -> None:
    """Make every body block recompute its forward in the backward (module names, and so
    checkpoints, are unchanged: the block's ``forward`` is wrapped in place)."""
    for block in body_blocks(model):
        block.forward = _checkpointed(block.forward)


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation: nothing to save, nothing to recompute
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.checkpointed = True  # type: ignore[attr-defined]  # for benchmarks/scaling_memory.py
    return run


__all__ = ["autocast", "body_blocks", "checkpoint_body_blocks"]

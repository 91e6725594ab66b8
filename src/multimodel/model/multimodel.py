"""MultiModel: modality nets + task tokens + the shared body (Kaiser et al. 2017, §2).

    inputs --(input modality bottom)--> (B, S, D) --encoder--> memory
    targets --(target modality targets_bottom)--> (B, T, D), shifted right behind the task
        token's embedding --I/O mixer--> --decoder--> (B, T, D) --(target modality top)--> logits

Classification targets (``skips_decoder``) pool the encoder memory instead of decoding. The
body never looks at task names or modality types: it only sees (B, T, D) tensors and masks.
One modality instance per spec is shared by every task that names it.

Dimensions: B batch, S input length, T target length, D hidden size, V vocabulary, C classes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from multimodel.config import PAD_ID, ModelConfig, from_dict, to_dict, upgrade_model_dict
from multimodel.layers.moe import RoutingStats
from multimodel.layers.padding import padding_or_none
from multimodel.modalities import build_modality, parse_spec
from multimodel.modalities.base import LossOutput, Modality, ModalityError, check_mask
from multimodel.model.decoder import Decoder
from multimodel.model.encoder import Encoder
from multimodel.model.incremental import IncrementalState
from multimodel.model.mixer import IOMixer

FORMAT_VERSION = 2  # 2: the paper's self-attention, encoder timing and class-label net
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass
class EncoderOutput:
    """The encoded inputs, ready to be attended to or pooled."""

    memory: torch.Tensor
    """(B, S, D) encoder output."""
    mask: torch.Tensor
    """(B, S) bool, True = real position."""
    aux_loss: torch.Tensor
    """Scalar MoE auxiliary loss of the encoder."""
    routing: dict[str, RoutingStats]
    """Routing statistics of the encoder's MoE layer(s)."""

    def repeat_interleave(self, times: int) -> EncoderOutput:
        """Each example repeated ``times`` times in a row (beam search)."""
        return replace(
            self,
            memory=self.memory.repeat_interleave(times, dim=0),  # (B·times, S, D)
            mask=self.mask.repeat_interleave(times, dim=0),  # (B·times, S)
        )


@dataclass
class DecoderOutput:
    """Teacher-forced decoder outputs."""

    logits: torch.Tensor
    """(B, T, V) logits; position t predicts target t from targets < t."""
    aux_loss: torch.Tensor
    """Scalar MoE auxiliary loss of the decoder."""
    routing: dict[str, RoutingStats]
    """Routing statistics of the decoder's MoE layer(s)."""


@dataclass
class ModelOutput:
    """What :meth:`MultiModel.forward` returns."""

    logits: torch.Tensor
    """(B, T, V) for sequence targets, (B, C) for class labels."""
    loss: LossOutput
    """Label-smoothed cross-entropy (``loss.loss``) and sums for perplexity and accuracy."""
    aux_loss: torch.Tensor
    """Sum of the auxiliary losses of all MoE layers (already scaled by their coefficient)."""
    routing: dict[str, RoutingStats]
    """Routing statistics keyed by MoE layer name ("encoder.moe", "decoder.moe")."""


def modality_key(spec: str) -> str:
    """A ModuleDict-safe name for a modality spec: ``"class_label:10"`` -> ``"class_label_10"``."""
    return re.sub(r"[^0-9A-Za-z_]", "_", spec)


class MultiModel(nn.Module):
    """The whole network: one shared body, one modality net per spec, task-token embeddings.

    Args:
        config: the model configuration.
        vocab_size: V, size of the shared subword vocabulary (text modalities).
        modality_specs: modalities this model serves, e.g. ``["text", "image", "class_label:10"]``.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, modality_specs: list[str]) -> None:
        super().__init__()
        specs = list(dict.fromkeys(modality_specs))  # drop duplicates, keep the order
        if not specs:
            raise ModalityError("a MultiModel needs at least one modality spec, e.g. ['text']")
        keys = [modality_key(s) for s in specs]
        if len(set(keys)) != len(keys):
            raise ModalityError(f"modality specs {specs} collide after sanitising to {keys}")
        for spec in specs:
            parse_spec(spec)  # unknown names raise here, listing the valid ones
        self.config = config
        self.vocab_size = vocab_size
        self.modality_specs = specs
        self.modalities = nn.ModuleDict({modality_key(s): build_modality(s, config, vocab_size) for s in specs})
        self.task_tokens = tuple(config.task_tokens)
        self.task_embedding = nn.Embedding(len(self.task_tokens), config.hidden_size)
        # Same scale as the sqrt(D)-scaled text embeddings that follow it in the decoder input.
        nn.init.normal_(self.task_embedding.weight, std=1.0)
        self.encoder = Encoder(config)
        self.mixer = IOMixer(config)
        self.decoder = Decoder(config)

    # ------------------------------------------------------------------------------------
    # Look-ups with clear errors.

    def modality(self, spec: str) -> Modality:
        """The shared modality net for ``spec``."""
        if spec not in self.modality_specs:
            raise ModalityError(f"this model has no modality {spec!r}; it has: {', '.join(self.modality_specs)}")
        return self.modalities[modality_key(spec)]

    def task_index(self, task_token: str | None) -> int:
        """Row of ``task_token`` in the task embedding table."""
        if task_token not in self.task_tokens:
            raise ValueError(
                f"unknown task token {task_token!r}; this model knows: {', '.join(self.task_tokens)}"
            )
        return self.task_tokens.index(task_token)

    def _task_vector(self, task_token: str | None, batch: int) -> torch.Tensor:
        """The task token's embedding for a batch: (B, 1, D)."""
        index = torch.tensor([self.task_index(task_token)], device=self.task_embedding.weight.device)
        return self.task_embedding(index)[None].expand(batch, 1, -1)  # (B, 1, D)

    def _check_targets(self, targets: torch.Tensor, target_mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        if not isinstance(targets, torch.Tensor) or targets.dim() != 2:
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ModalityError(f"sequence targets must be ids of shape (B, T), got {shape}")
        B, T = targets.shape
        if B != batch:
            raise ModalityError(f"inputs have batch size {batch} but targets have {B}")
        if T == 0:
            raise ModalityError(f"targets are empty: shape {tuple(targets.shape)}")
        if T > self.config.max_target_length:
            raise ModalityError(
                f"targets have length {T}, longer than max_target_length {self.config.max_target_length}"
            )
        if target_mask is None:
            target_mask = targets != PAD_ID
        check_mask(target_mask, B, T, "targets")
        return target_mask

    # ------------------------------------------------------------------------------------
    # The three stages.

    def encode(self, inputs: torch.Tensor, input_mask: torch.Tensor | None, *, input_modality: str) -> EncoderOutput:
        """Raw inputs -> encoder memory (B, S, D) with its mask."""
        x, mask = self.modality(input_modality).bottom(inputs, input_mask)
        memory, aux_loss, routing = self.encoder(x, padding_or_none(mask))
        return EncoderOutput(memory, mask, aux_loss, routing)

    def decode(
        self,
        encoded: EncoderOutput,
        targets: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        *,
        target_modality: str,
        task_token: str | None,
    ) -> DecoderOutput:
        """Teacher-forced decoding of all target positions at once."""
        modality = self.modality(target_modality)
        if modality.skips_decoder:
            raise ModalityError(f"{target_modality!r} pools the encoder memory; use classify(), not decode()")
        B = encoded.memory.shape[0]
        target_mask = self._check_targets(targets, target_mask, B)
        embedded = modality.targets_bottom(targets)  # (B, T, D)
        # Shift right: the task token at position 0, target t-1 at position t.
        x = torch.cat([self._task_vector(task_token, B).to(embedded.dtype), embedded[:, :-1]], dim=1)  # (B, T, D)
        body_mask, memory_mask = padding_or_none(target_mask), padding_or_none(encoded.mask)
        x = self.mixer(x, body_mask, encoded.memory, memory_mask)
        h, aux_loss, routing = self.decoder(x, body_mask, encoded.memory, memory_mask)
        return DecoderOutput(modality.top(h, target_mask), aux_loss, routing)

    def decode_step(
        self,
        encoded: EncoderOutput,
        state: IncrementalState,
        last_ids: torch.Tensor | None,
        *,
        target_modality: str,
        task_token: str | None,
    ) -> torch.Tensor:
        """Logits (N, V) for position ``state.length``, given the token at the previous one.

        ``last_ids`` (N,) is None at the first step (the task token is the input there).
        Equals ``decode(...).logits[:, state.length]`` without recomputing earlier positions.
        """
        modality = self.modality(target_modality)
        N = encoded.memory.shape[0]
        if state.length == 0:
            x = self._task_vector(task_token, N)  # (N, 1, D)
        else:
            if last_ids is None or last_ids.shape != (N,):
                raise ValueError(f"decode_step needs the previous token ids of shape ({N},) after step 0")
            x = modality.targets_bottom(last_ids[:, None])  # (N, 1, D)
        x = self.mixer(x, None, encoded.memory, encoded.mask, state.cache, state.length)
        h, _, _ = self.decoder(x, None, encoded.memory, encoded.mask, state.cache, state.length)
        state.length += 1
        return modality.top(h, None)[:, 0]  # (N, V)

    def forward(
        self,
        inputs: torch.Tensor,
        input_mask: torch.Tensor | None,
        targets: torch.Tensor,
        target_mask: torch.Tensor | None,
        *,
        input_modality: str,
        target_modality: str,
        task_token: str | None = None,
    ) -> ModelOutput:
        """Logits, loss, auxiliary loss and routing statistics of one single-task batch."""
        out_modality = self.modality(target_modality)  # fail before any work on a bad name
        encoded = self.encode(inputs, input_mask, input_modality=input_modality)
        if out_modality.skips_decoder:
            logits = out_modality.top(encoded.memory, encoded.mask)  # (B, C)
            loss = out_modality.loss(logits, targets, None)
            return ModelOutput(logits, loss, encoded.aux_loss, dict(encoded.routing))
        decoded = self.decode(
            encoded, targets, target_mask, target_modality=target_modality, task_token=task_token
        )
        target_mask = targets != PAD_ID if target_mask is None else target_mask
        loss = out_modality.loss(decoded.logits, targets, target_mask)
        return ModelOutput(
            decoded.logits, loss, encoded.aux_loss + decoded.aux_loss, {**encoded.routing, **decoded.routing}
        )

    # ------------------------------------------------------------------------------------
    # Inference.

    @torch.no_grad()
    def classify(
        self, inputs: torch.Tensor, input_mask: torch.Tensor | None, *, input_modality: str, target_modality: str
    ) -> torch.Tensor:
        """Class logits (B, C) for a target modality that pools the memory (``class_label:N``)."""
        modality = self.modality(target_modality)
        if not modality.skips_decoder:
            raise ModalityError(f"{target_modality!r} is decoded, not pooled; use generate()")
        encoded = self.encode(inputs, input_mask, input_modality=input_modality)
        return modality.top(encoded.memory, encoded.mask)

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor,
        input_mask: torch.Tensor | None,
        *,
        input_modality: str,
        target_modality: str,
        task_token: str | None,
        max_length: int,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        incremental: bool = True,
    ) -> list[list[int]]:
        """Decode token ids (without EOS) for each example; greedy when ``beam_size == 1``.

        ``incremental=False`` recomputes the decoder over the whole prefix at every step
        (same result, much slower; kept for tests and benchmarks). Call ``model.eval()``
        first: dropout in training mode makes decoding random.
        """
        from multimodel.model.decoding import beam_search, greedy_search  # decoding imports this module

        if self.modality(target_modality).skips_decoder:
            raise ModalityError(f"{target_modality!r} pools the encoder memory; use classify()")
        self.task_index(task_token)
        if not 1 <= max_length <= self.config.max_target_length:
            raise ValueError(f"max_length must be in [1, {self.config.max_target_length}], got {max_length}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        encoded = self.encode(inputs, input_mask, input_modality=input_modality)
        kwargs = dict(
            target_modality=target_modality, task_token=task_token, max_length=max_length, incremental=incremental
        )
        if beam_size == 1:
            return greedy_search(self, encoded, **kwargs)
        return beam_search(self, encoded, beam_size=beam_size, length_penalty=length_penalty, **kwargs)

    # ------------------------------------------------------------------------------------
    # Weights + JSON sidecar (the trainer writes full checkpoints separately).

    def save(self, path: str | Path) -> None:
        """Write ``path/model.safetensors`` and ``path/model.json`` (config, vocab, modalities)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": to_dict(self.config),
            "vocab_size": self.vocab_size,
            "modality_specs": self.modality_specs,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        save_model(self, str(path / WEIGHTS_FILE))  # handles tied text embeddings

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> MultiModel:
        """Rebuild a model written by :meth:`save`."""
        from safetensors.torch import load_model

        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"{path}: format_version {version!r} is not supported (this code reads {READABLE_VERSIONS})"
            )
        config = from_dict(ModelConfig, upgrade_model_dict(meta["config"], version))
        model = cls(config, meta["vocab_size"], meta["modality_specs"])
        load_model(model, str(path / WEIGHTS_FILE), strict=True, device=str(device))
        return model.to(device)

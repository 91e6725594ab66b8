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
from typing import Any

import torch
from torch import nn

from multimodel.config import PAD_ID, ConfigError, ModelConfig, from_dict, to_dict, upgrade_model_dict
from multimodel.errors import CheckpointError
from multimodel.layers.moe import RoutingStats
from multimodel.layers.padding import padding_or_none
from multimodel.modalities import build_modality, parse_spec
from multimodel.modalities.base import LossOutput, Modality, ModalityError, check_mask
from multimodel.model.decoder import Decoder
from multimodel.model.encoder import Encoder
from multimodel.model.incremental import IncrementalState
from multimodel.model.mixer import IOMixer

FORMAT_VERSION = 3
"""Version of the saved-model format. 3: ``config.json`` beside ``model.safetensors``
(:meth:`MultiModel.save_pretrained`). 1 and 2 were training checkpoints whose ``meta.json``
held the model's config; they still load, format 1 (before the paper's self-attention, encoder
timing signal and class-label net) as the model it was (``config.upgrade_model_dict``)."""
READABLE_VERSIONS = (1, 2, 3)
MODEL_TYPE = "multimodel"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_META_FILE = "meta.json"


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
    padded: bool = True
    """False: ``mask`` is known to mark no padding (the ``padded`` hint of :meth:`MultiModel.encode`)."""

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
        i = self.task_index(task_token)
        # A slice of the table, not a lookup by an index tensor: no host-to-device copy.
        return self.task_embedding.weight[i : i + 1][None].expand(batch, 1, -1)  # (B, 1, D)

    def _body_mask(self, mask: torch.Tensor | None, padded: bool = True) -> torch.Tensor | None:
        """The padding mask the body gets: None when ``mask`` marks no padding, so the body
        skips its masking work (zeroing padded positions before each ConvStep, sending only
        real tokens to the experts, masking attention).

        Outside training the mask is read on the host to find out
        (:func:`~multimodel.layers.padding.padding_or_none`). In training it is not read:
        ``padded=False``, the caller's promise that it marks no padding (the collator's
        :attr:`~multimodel.data.batching.Batch.input_padded` / ``target_padded``), gives None,
        and otherwise the mask is used as given.
        """
        if not self.training:
            return padding_or_none(mask)
        return mask if padded else None

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
        check_mask(target_mask, B, T, "targets", values=not self.training)
        return target_mask

    # ------------------------------------------------------------------------------------
    # The three stages.

    def encode(
        self, inputs: torch.Tensor, input_mask: torch.Tensor | None, *, input_modality: str, padded: bool = True
    ) -> EncoderOutput:
        """Raw inputs -> encoder memory (B, S, D) with its mask; ``padded=False`` promises that
        ``input_mask`` marks no padding (see :meth:`_body_mask`)."""
        x, mask = self.modality(input_modality).bottom(inputs, input_mask)
        memory, aux_loss, routing = self.encoder(x, self._body_mask(mask, padded))
        return EncoderOutput(memory, mask, aux_loss, routing, padded)

    def decode(
        self,
        encoded: EncoderOutput,
        targets: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        *,
        target_modality: str,
        task_token: str | None,
        padded: bool = True,
    ) -> DecoderOutput:
        """Teacher-forced decoding of all target positions at once; ``padded=False`` promises
        that the target mask marks no padding (see :meth:`_body_mask`)."""
        modality = self.modality(target_modality)
        if modality.skips_decoder:
            raise ModalityError(f"{target_modality!r} pools the encoder memory; use classify(), not decode()")
        B = encoded.memory.shape[0]
        target_mask = self._check_targets(targets, target_mask, B)
        embedded = modality.targets_bottom(targets)  # (B, T, D)
        # Shift right: the task token at position 0, target t-1 at position t.
        x = torch.cat([self._task_vector(task_token, B).to(embedded.dtype), embedded[:, :-1]], dim=1)  # (B, T, D)
        body_mask = self._body_mask(target_mask, padded)
        memory_mask = self._body_mask(encoded.mask, encoded.padded)
        x = self.mixer(x, body_mask, encoded.memory, memory_mask)
        h, aux_loss, routing = self.decoder(x, body_mask, encoded.memory, memory_mask)
        return DecoderOutput(modality.top(h, target_mask), aux_loss, routing)

    def start_decoding(self, encoded: EncoderOutput, max_length: int) -> IncrementalState:
        """An empty :class:`IncrementalState` for decoding up to ``max_length`` positions.

        Every stateful layer of the I/O mixer and the decoder prepares its state once: the
        memory's keys and values, and buffers for the positions to come.
        """
        if not 1 <= max_length <= self.config.max_target_length:
            raise ValueError(f"max_length must be in [1, {self.config.max_target_length}], got {max_length}")
        layers = {
            module: module.decoding_state(encoded.memory, encoded.mask, max_length)
            for part in (self.mixer, self.decoder)
            for module in part.modules()
            if hasattr(module, "decoding_state")
        }
        return IncrementalState(layers, max_length)

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
        Equals ``decode(...).logits[:, state.length]`` (at evaluation) without recomputing
        earlier positions; ``state`` comes from :meth:`start_decoding`.
        """
        modality = self.modality(target_modality)
        N, t = encoded.memory.shape[0], state.length
        if t >= state.max_length:
            raise ValueError(f"the decoding state holds {state.max_length} positions, all decoded")
        if t == 0:
            x = self._task_vector(task_token, N)[:, 0]  # (N, D)
        else:
            if last_ids is None or last_ids.shape != (N,):
                raise ValueError(f"decode_step needs the previous token ids of shape ({N},) after step 0")
            x = modality.targets_bottom(last_ids[:, None])[:, 0]  # (N, D)
        h = self.decoder.step(self.mixer.step(x, state.layers, t), state.layers, t)  # (N, D)
        state.length += 1
        return modality.top(h[:, None], None)[:, 0]  # (N, V)

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
        input_padded: bool = True,
        target_padded: bool = True,
    ) -> ModelOutput:
        """Logits, loss, auxiliary loss and routing statistics of one single-task batch.

        ``input_padded`` / ``target_padded`` are hints, like SDPA's ``is_causal``: False
        promises that that side's mask marks no padding, and in training the body then skips
        its masking work there without reading the mask (the collator sets them in each
        :class:`~multimodel.data.batching.Batch`). Outside training the masks are read
        instead and the hints do not matter. A false promise lets padding reach real positions.
        """
        out_modality = self.modality(target_modality)  # fail before any work on a bad name
        encoded = self.encode(inputs, input_mask, input_modality=input_modality, padded=input_padded)
        if out_modality.skips_decoder:
            logits = out_modality.top(encoded.memory, encoded.mask)  # (B, C)
            loss = out_modality.loss(logits, targets, None)
            return ModelOutput(logits, loss, encoded.aux_loss, dict(encoded.routing))
        decoded = self.decode(
            encoded, targets, target_mask, target_modality=target_modality, task_token=task_token,
            padded=target_padded,
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
    # The saved-model format (Hugging Face's save_pretrained/from_pretrained convention).

    def pretrained_config(self) -> dict[str, Any]:
        """What ``config.json`` holds: everything needed to rebuild this network before its weights."""
        return {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, "model": to_dict(self.config),
                "vocab_size": self.vocab_size, "modality_specs": list(self.modality_specs)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory/config.json`` (format version, model config, vocabulary size,
        modality specs) and ``directory/model.safetensors``; the directory is created if needed.

        The tokenizer and the training config are saved beside them by
        :func:`multimodel.pretrained.save_pretrained`; this writes the network alone.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.pretrained_config(), indent=2, sort_keys=True))
        state: dict[str, torch.Tensor] = {}
        stored: set[tuple] = set()
        for name, tensor in self.state_dict().items():
            where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if where in stored:  # a tied parameter (text embeddings): stored once, under its first name
                continue
            stored.add(where)
            state[name] = tensor.detach().cpu().contiguous()
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> MultiModel:
        """Rebuild the network :meth:`save_pretrained` wrote into ``directory``, in eval mode.

        Also reads the training checkpoints of formats 1 and 2 (their ``meta.json`` held the
        model's config). Raises :class:`~multimodel.errors.CheckpointError` naming the file when
        one is missing, damaged, of an unknown format version or does not fit the config.
        """
        directory = Path(directory)
        saved = read_model_config(directory)
        try:
            config = from_dict(ModelConfig, saved["model"])
        except ConfigError as err:
            raise CheckpointError(f"{saved['path']}: the model config does not fit this multimodel ({err})") from None
        model = cls(config, int(saved["vocab_size"]), list(saved["modality_specs"]))
        load_weights(model, directory / WEIGHTS_FILE)
        return model.to(device).eval()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing or unparsable file is a CheckpointError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; not a saved multimodel (or an incomplete one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt JSON ({err}); use an earlier checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: corrupt JSON (not an object); use an earlier checkpoint")
    return data


def check_format_version(saved: dict[str, Any], path: Path) -> int:
    """The ``format_version`` of ``saved`` (read from ``path``) if this code reads it."""
    version = saved.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: format version {version!r}, this multimodel reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))}; use the multimodel release that wrote it")
    return version


def read_model_config(directory: Path) -> dict[str, Any]:
    """The saved network's description: ``format_version``, ``model`` (a ModelConfig dict,
    upgraded to this format's fields), ``vocab_size``, ``modality_specs``, and ``path`` (the
    file it came from: ``config.json``, or a format 1-2 checkpoint's ``meta.json``)."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file() and (directory / LEGACY_META_FILE).is_file():
        path = directory / LEGACY_META_FILE
    saved = read_json(path)
    version = check_format_version(saved, path)
    if path.name == LEGACY_META_FILE and version >= 3:
        raise CheckpointError(f"{directory / CONFIG_FILE}: missing; the checkpoint is incomplete")
    model = saved.get("model") if version >= 3 else saved.get("config", {}).get("model")
    missing = [k for k, v in (("model", model), ("vocab_size", saved.get("vocab_size")),
                              ("modality_specs", saved.get("modality_specs"))) if v is None]
    if missing or not isinstance(model, dict):
        raise CheckpointError(f"{path}: lacks {', '.join(missing) or 'model'}; not a saved multimodel")
    return {"format_version": version, "model": upgrade_model_dict(model, version), "vocab_size": saved["vocab_size"],
            "modality_specs": saved["modality_specs"], "path": path}


def load_weights(module: nn.Module, path: Path) -> None:
    """Load the safetensors file ``path`` into ``module``.

    Names the file saves once for tied parameters (:meth:`MultiModel.save_pretrained`) fill
    both places. Raises CheckpointError naming the file when it is missing or corrupt, or when
    its names and shapes do not fit ``module``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt weights ({err}); use an earlier checkpoint") from None
    own = module.state_dict()
    shared = own.keys() & state.keys()
    saved_storages = {own[k].untyped_storage().data_ptr() for k in shared}
    missing = sorted(k for k in own.keys() - state.keys() if own[k].untyped_storage().data_ptr() not in saved_storages)
    unexpected = sorted(state.keys() - own.keys())
    bad_shapes = sorted(k for k in shared if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{path}: does not fit the model built from its config (missing {missing[:3]},"
            f" unexpected {unexpected[:3]}, shape mismatch {bad_shapes[:3]}); was the config changed?")
    module.load_state_dict(state, strict=False)

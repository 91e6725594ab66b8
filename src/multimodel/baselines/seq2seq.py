"""Sequence-to-sequence baselines: a standard Transformer (Vaswani et al. 2017) per task.

One decoder for every text-producing task, behind a source front end chosen by the input:

* text → text (translation, parsing): subword embeddings + sinusoidal positions, then
  ``encoder_layers`` Transformer encoder layers;
* audio → text (speech recognition): ``audio_time_strides`` stride-2 convolutions over time
  on log-mel frames (each halves T), sinusoidal positions, then the Transformer encoder;
* image → text (captioning): stride-2 3×3 convolutions, the final grid of features flattened
  in raster order to a sequence with sinusoidal positions (no Transformer encoder).

The decoder is ``decoder_layers`` Transformer decoder layers (pre-norm, causal self-attention,
attention to the source with its padding masked) over the shared subword vocabulary of the
run's tokenizer. Its first input is a learned start symbol (id V, outside the vocabulary);
the targets, which end in EOS, follow shifted right. Decoding is greedy or MultiModel's beam
search (the same search function); the decoder is rerun over the whole prefix at every step,
which at these sizes costs little and keeps one code path.

Masks: ``True`` = a real position, as everywhere in multimodel; PyTorch's
``key_padding_mask`` wants the opposite, so it gets ``~mask``.

Dimensions: B batch, S source length, T target length, D hidden size, V vocabulary size,
F mel bands, C image channels, H × W pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multimodel.baselines.base import BaselineConfig, BaselineOutput
from multimodel.config import EOS_ID, PAD_ID
from multimodel.layers.timing import timing_signal
from multimodel.layers.utterance_norm import normalize_utterances
from multimodel.modalities.audio import LogMelFrontEnd
from multimodel.modalities.base import label_smoothed_loss
from multimodel.model.decoding import search_beams



def _add_positions(x: torch.Tensor) -> torch.Tensor:
    """x (B, S, D) plus the sinusoidal signal of positions 0 … S-1."""
    return x + timing_signal(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)[None]


class TextSource(nn.Module):
    """Subword ids (B, S) → embeddings (B, S, D) with positions; the mask passes through.

    Args:
        config: baseline settings (``hidden_size``, ``dropout``).
        vocab_size: V.
    """

    def __init__(self, config: BaselineConfig, vocab_size: int) -> None:
        super().__init__()
        self.scale = math.sqrt(config.hidden_size)
        self.embedding = nn.Embedding(vocab_size, config.hidden_size)
        nn.init.normal_(self.embedding.weight, std=config.hidden_size**-0.5)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        return self.dropout(_add_positions(self.embedding(ids) * self.scale)), mask


class AudioSource(nn.Module):
    """Log-mel frames (B, T, F) or waveforms (B, N) → (B, T / 2^k, D) and the downsampled mask.

    Each stride-2 convolution (kernel 3, padding 1) maps T frames to ceil(T / 2); output frame
    j is centred on input frame 2j, so it is real exactly when frame 2j is (``mask[:, ::2]``).
    Padded frames are zeroed before every convolution, so a real frame sees the same values
    whether its batch is padded or not.

    Args:
        config: baseline settings (``hidden_size``, ``audio_time_strides``, ``audio_mels``,
            ``audio_sample_rate``, ``audio_normalize``, ``dropout``).
    """

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        if config.audio_time_strides < 1:
            raise ValueError(f"audio_time_strides must be >= 1, got {config.audio_time_strides}")
        D = config.hidden_size
        self.n_mels = config.audio_mels
        self.front_end = LogMelFrontEnd(config.audio_sample_rate, config.audio_mels)
        self.normalize = config.audio_normalize
        widths = [config.audio_mels] + [D] * config.audio_time_strides
        self.convs = nn.ModuleList(nn.Conv1d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if audio.dim() == 2:
            audio, mask = self.front_end(audio, mask)  # (B, T, F)
        if audio.dim() != 3 or audio.shape[2] != self.n_mels:
            raise ValueError(f"speech baseline takes log-mel features (B, T, {self.n_mels}) or waveforms (B, N),"
                             f" got {tuple(audio.shape)}")
        if mask is None:
            mask = torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)
        if self.normalize:
            audio = normalize_utterances(audio.float(), mask)  # (B, T, F)
        x = audio.float().transpose(1, 2)  # (B, F, T): channels first for Conv1d
        for conv in self.convs:
            x = torch.relu(conv(x * mask[:, None, :].to(x.dtype)))  # (B, D, ceil(T / 2))
            mask = mask[:, ::2]  # (B, ceil(T / 2))
        x = self.norm(x.transpose(1, 2))  # (B, T', D)
        return self.dropout(_add_positions(x)), mask


class ImageGridSource(nn.Module):
    """Images (B, C, H, W) → a raster-order sequence of grid features (B, H'·W', D), all real.

    Stride-2 3×3 convolutions of ``image_channels`` filters, then one more to D: a 64×64 image
    becomes 8×8 = 64 positions.

    Args:
        config: baseline settings (``image_channels``, ``hidden_size``, ``dropout``).
        in_channels: C of the task's images.
    """

    def __init__(self, config: BaselineConfig, in_channels: int) -> None:
        super().__init__()
        widths = [in_channels, *config.image_channels, config.hidden_size]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(a, b, 3, stride=2, padding=1))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.convs = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 4:
            raise ValueError(f"caption baseline takes images (B, C, H, W), got {tuple(images.shape)}")
        grid = self.convs(images.float())  # (B, D, H', W')
        B, D, H, W = grid.shape
        x = self.norm(grid.reshape(B, D, H * W).transpose(1, 2))  # (B, H'·W', D)
        mask = torch.ones(B, H * W, dtype=torch.bool, device=x.device)
        return self.dropout(_add_positions(x)), mask


class Seq2SeqTransformer(nn.Module):
    """A source front end, an optional Transformer encoder, and a Transformer decoder over text.

    Args:
        config: baseline settings (sizes, dropout, label smoothing, ``max_target_length``).
        source: turns ``(inputs, mask)`` into ``(x (B, S, D), mask (B, S))``.
        vocab_size: V, the run's shared subword vocabulary.
        encoder_layers: Transformer encoder layers over the source (0 = none).
    """

    def __init__(self, config: BaselineConfig, source: nn.Module, vocab_size: int, encoder_layers: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = V = vocab_size
        D = config.hidden_size
        ff = config.feed_forward_size or 4 * D
        self.source = source
        self.encoder = None
        if encoder_layers > 0:
            layer = nn.TransformerEncoderLayer(D, config.num_heads, ff, config.dropout, batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, encoder_layers, norm=nn.LayerNorm(D),
                                                 enable_nested_tensor=False)
        self.scale = math.sqrt(D)
        self.start_id = V  # the decoder's first input; never an output
        self.target_embedding = nn.Embedding(V + 1, D)
        nn.init.normal_(self.target_embedding.weight, std=D**-0.5)
        self.target_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerDecoderLayer(D, config.num_heads, ff, config.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.decoder_layers, norm=nn.LayerNorm(D))
        self.output = nn.Linear(D, V)

    def encode(self, inputs: torch.Tensor, input_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Source → memory (B, S, D) and its mask (B, S), True = real."""
        x, mask = self.source(inputs, input_mask)
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=~mask)
        return x, mask

    def decode(self, memory: torch.Tensor, memory_mask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the token after each position of ``prefix`` (B, T), which starts
        with the start symbol; position t sees prefix[:, :t+1] only."""
        T = prefix.shape[1]
        y = self.target_dropout(_add_positions(self.target_embedding(prefix) * self.scale))  # (B, T, D)
        future = torch.ones(T, T, dtype=torch.bool, device=prefix.device).triu(1)  # (T, T) True = hidden
        h = self.decoder(y, memory, tgt_mask=future, tgt_is_causal=True, memory_key_padding_mask=~memory_mask)
        return self.output(h)

    def forward(self, inputs: torch.Tensor, input_mask: torch.Tensor | None, targets: torch.Tensor,
                target_mask: torch.Tensor | None, **task: object) -> BaselineOutput:
        """Teacher-forced logits (B, T, V) of ``targets`` (B, T, ending in EOS) and their loss.

        The task's keywords (``input_modality`` ...) are accepted so that evaluation calls every
        model alike; a baseline serves one task.
        """
        if target_mask is None:
            target_mask = targets != PAD_ID
        memory, memory_mask = self.encode(inputs, input_mask)
        start = targets.new_full((targets.shape[0], 1), self.start_id)
        prefix = torch.cat([start, targets[:, :-1]], dim=1)  # (B, T): shifted right behind the start
        logits = self.decode(memory, memory_mask, prefix)
        return BaselineOutput(logits, label_smoothed_loss(logits, targets, target_mask, self.config.label_smoothing))

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor, input_mask: torch.Tensor | None, *, max_length: int,
                 beam_size: int = 1, length_penalty: float = 0.6, **task: object) -> list[list[int]]:
        """Token ids without EOS, per example: greedy when ``beam_size == 1``, else MultiModel's
        beam search (:func:`multimodel.model.decoding.search_beams`, GNMT length penalty
        ``length_penalty``). Call ``eval()`` first. The task's keywords are accepted for
        MultiModel's call shape.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= max_length <= self.config.max_target_length:
            raise ValueError(f"max_length must be in [1, {self.config.max_target_length}], got {max_length}")
        memory, memory_mask = self.encode(inputs, input_mask)
        B = memory.shape[0]
        if beam_size > 1:
            scorer = _PrefixScorer(self, memory.repeat_interleave(beam_size, 0),
                                   memory_mask.repeat_interleave(beam_size, 0))  # rows b·K + k
            return search_beams(scorer, B, beam_size=beam_size, max_length=max_length,
                                length_penalty=length_penalty, device=memory.device)
        prefix = torch.full((B, 1), self.start_id, dtype=torch.long, device=memory.device)
        finished = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for _ in range(max_length):
            next_ids = self.decode(memory, memory_mask, prefix)[:, -1].argmax(-1)  # (B,)
            next_ids = torch.where(finished, torch.full_like(next_ids, PAD_ID), next_ids)
            prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
            finished |= next_ids == EOS_ID
            if bool(finished.all()):
                break
        rows = prefix[:, 1:].tolist()
        return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in rows]


class _PrefixScorer:
    """A :class:`~multimodel.model.decoding.Scorer` for beam search: reruns the decoder over the
    start symbol and each row's prefix. Beams are only re-ranked within their example, so a row's
    memory never changes and there is nothing to reorder."""

    def __init__(self, model: Seq2SeqTransformer, memory: torch.Tensor, memory_mask: torch.Tensor) -> None:
        self.model, self.memory, self.memory_mask = model, memory, memory_mask

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) -> logits (N, V) of position t."""
        start = tokens.new_full((tokens.shape[0], 1), self.model.start_id)
        prefix = torch.cat([start, tokens], dim=1)  # (N, t + 1)
        return self.model.decode(self.memory, self.memory_mask, prefix)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """Nothing to reorder (see the class docstring)."""

"""Autoregressive decoding: greedy and beam search (released code: beam 4, α = 0.6;
GNMT length penalty, Wu et al. 2016).

Both searches ask a *scorer* (:class:`Scorer`) for the next-token logits of every row given the
tokens so far:

* :class:`IncrementalScorer` keeps an :class:`IncrementalState` (causal-conv windows, the
  self-attention's keys and values so far and the memory's, in buffers allocated once) and
  runs the decoder's ``step`` on the one new position, so each token costs the same small
  amount of work however long the prefix is (plus attention over the prefix).
* :class:`RecomputeScorer` re-runs the teacher-forced decoder over the whole prefix at every
  step. Same logits (to float rounding), quadratic cost; it is the reference for tests and
  benchmarks.

Beam search ranks finished hypotheses by ``log p / lp(len)`` with the GNMT length penalty
``lp(len) = ((5 + len) / 6) ** alpha`` (len counts the EOS) and re-ranks beams every step by
reordering the scorer's state with ``index_select``.

Dimensions: B batch, K beam size, N = B·K rows, t tokens so far, V vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from multimodel.config import EOS_ID, PAD_ID
from multimodel.model.incremental import IncrementalState

if TYPE_CHECKING:
    from multimodel.model.multimodel import EncoderOutput, MultiModel


class Scorer(Protocol):
    """What the searches need of a model: next-token logits for the rows' prefixes, and a way to
    follow the rows when beam search reorders them."""

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) generated so far -> logits (N, V) for position t."""
        ...

    def reorder(self, index: torch.Tensor) -> None:
        """Row n now continues the hypothesis that was row ``index[n]``."""
        ...


class _Scorer:
    """What both scorers hold: the model, the encoded input, and what to decode it into.

    Args:
        model, encoded, target_modality, task_token: what to decode.
        max_length: the most tokens it will be asked for; default ``model.config.max_target_length``.
    """

    def __init__(
        self,
        model: MultiModel,
        encoded: EncoderOutput,
        target_modality: str,
        task_token: str | None,
        max_length: int | None = None,
    ):
        self.model, self.encoded = model, encoded
        self.target_modality, self.task_token = target_modality, task_token
        self.max_length = max_length or model.config.max_target_length


class IncrementalScorer(_Scorer):
    """Next-token logits from the incremental state: O(1) decoder work per token. The state's
    buffers hold ``max_length`` positions (see :class:`_Scorer` for the arguments)."""

    def __init__(self, model: MultiModel, encoded: EncoderOutput, target_modality: str, task_token: str | None,
                 max_length: int | None = None):
        super().__init__(model, encoded, target_modality, task_token, max_length)
        with torch.inference_mode():
            self.state = self.model.start_decoding(self.encoded, self.max_length)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) generated so far -> logits (N, V) for position t."""
        if tokens.shape[1] != self.state.length:
            raise ValueError(f"the state holds {self.state.length} positions but {tokens.shape[1]} tokens were given")
        last = tokens[:, -1] if tokens.shape[1] else None
        with torch.inference_mode():  # no autograd bookkeeping: a token costs ~200 small ops
            return self.model.decode_step(
                self.encoded, self.state, last, target_modality=self.target_modality, task_token=self.task_token
            )

    def reorder(self, index: torch.Tensor) -> None:
        with torch.inference_mode():
            self.state.reorder(index)


class RecomputeScorer(_Scorer):
    """Next-token logits by re-running the full decoder over the prefix (the slow reference;
    the arguments of :class:`_Scorer`)."""

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) -> logits (N, V) for position t."""
        N = tokens.shape[0]
        # One placeholder target after the prefix: the decoder is causal, so its value never
        # reaches the logits of its own position, which are the ones we want.
        targets = torch.cat([tokens, tokens.new_full((N, 1), EOS_ID)], dim=1)  # (N, t + 1)
        mask = torch.ones_like(targets, dtype=torch.bool)
        with torch.inference_mode():
            out = self.model.decode(
                self.encoded, targets, mask, target_modality=self.target_modality, task_token=self.task_token
            )
        return out.logits[:, -1]  # (N, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Nothing to reorder: beams are only re-ranked within an example, so rows keep their memory."""


def _make_scorer(model, encoded, target_modality, task_token, incremental: bool, max_length: int):
    cls = IncrementalScorer if incremental else RecomputeScorer
    return cls(model, encoded, target_modality, task_token, max_length)


def _strip_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS_ID)] if EOS_ID in row else row


def greedy_search(
    model: MultiModel,
    encoded: EncoderOutput,
    *,
    target_modality: str,
    task_token: str | None,
    max_length: int,
    incremental: bool = True,
) -> list[list[int]]:
    """Most likely token at every step, until EOS or ``max_length``; ids without EOS."""
    scorer = _make_scorer(model, encoded, target_modality, task_token, incremental, max_length)
    B = encoded.memory.shape[0]
    tokens = torch.zeros(B, 0, dtype=torch.long, device=encoded.memory.device)  # (B, 0)
    finished = torch.zeros(B, dtype=torch.bool, device=tokens.device)
    for _ in range(max_length):
        next_ids = scorer(tokens).argmax(dim=-1)  # (B,)
        next_ids = torch.where(finished, torch.full_like(next_ids, PAD_ID), next_ids)
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)  # (B, t + 1)
        finished |= next_ids == EOS_ID
        if bool(finished.all()):
            break
    return [_strip_eos(row) for row in tokens.tolist()]


def length_penalty_factor(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + len) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    model: MultiModel,
    encoded: EncoderOutput,
    *,
    target_modality: str,
    task_token: str | None,
    max_length: int,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    incremental: bool = True,
) -> list[list[int]]:
    """Best hypothesis per example under ``log p / lp(len)``; ids without EOS."""
    K = beam_size
    scorer = _make_scorer(model, encoded.repeat_interleave(K), target_modality, task_token, incremental, max_length)
    return search_beams(scorer, encoded.memory.shape[0], beam_size=K, max_length=max_length,
                        length_penalty=length_penalty, device=encoded.memory.device)


def search_beams(scorer: Scorer, batch_size: int, *, beam_size: int, max_length: int, length_penalty: float,
                 device: torch.device) -> list[list[int]]:
    """Beam search over any :class:`Scorer` whose rows are ``batch_size`` examples × ``beam_size``
    beams, example-major (row b·K + k is beam k of example b). Best hypothesis per example under
    ``log p / lp(len)``; ids without EOS. The single-task baselines decode with it too."""
    B, K = batch_size, beam_size
    tokens = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # (N, 0)
    # Only the first beam is alive at the start, so the K beams do not all pick the same token.
    alive = torch.full((B, K), float("-inf"), device=device)
    alive[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    best_possible_lp = length_penalty_factor(max_length, length_penalty)
    for t in range(max_length):
        logp = F.log_softmax(scorer(tokens).float(), dim=-1)  # (N, V)
        V = logp.shape[-1]
        candidates = (alive.view(B * K, 1) + logp).view(B, K * V)  # (B, K·V)
        # 2K candidates: even if K of them end in EOS, K remain to continue.
        top_logp, top_index = candidates.topk(min(2 * K, K * V), dim=-1)  # (B, 2K)
        top_beam, top_token = top_index // V, top_index % V
        is_eos = top_token == EOS_ID
        lp = length_penalty_factor(t + 1, length_penalty)
        # The finished lists live on the host: copy the step's candidates there together, not per example.
        host_eos, host_logp, host_beam = is_eos.tolist(), top_logp.tolist(), top_beam.tolist()
        host_tokens = tokens.tolist() if any(map(any, host_eos)) else None
        for b in range(B):
            for j, ended in enumerate(host_eos[b]):
                score = host_logp[b][j] / lp
                if ended and score > float("-inf"):
                    finished[b].append((score, host_tokens[b * K + host_beam[b][j]]))
            finished[b] = sorted(finished[b], key=lambda item: -item[0])[:K]
        # Continue with the K best candidates that did not end.
        cont_logp, cont_slot = top_logp.masked_fill(is_eos, float("-inf")).topk(K, dim=-1)  # (B, K)
        rows = (torch.arange(B, device=device)[:, None] * K + top_beam.gather(1, cont_slot)).flatten()  # (N,)
        tokens = torch.cat([tokens.index_select(0, rows), top_token.gather(1, cont_slot).view(B * K, 1)], dim=1)
        scorer.reorder(rows)
        alive = cont_logp
        # An alive beam's score can only fall; stop when none can beat the best finished one.
        best_alive = (alive.max(dim=1).values / best_possible_lp).tolist()
        if all(finished[b] and finished[b][0][0] >= best_alive[b] for b in range(B)):
            break
    results = []
    for b in range(B):
        if finished[b]:
            results.append(finished[b][0][1])
        else:
            best = int(alive[b].argmax())
            results.append(_strip_eos(tokens[b * K + best].tolist()))
    return results

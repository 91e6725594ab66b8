"""Sparsely-gated mixture of experts (Shazeer et al. 2017 §2.1 and §4; MultiModel §2.3).

Each real token is sent to the ``K`` experts with the largest noisy gate logits and the
layer returns the gate-weighted sum of their outputs:

    H(x) = x W_g + ε · (softplus(x W_noise) + 0.01),  ε ~ N(0, 1) in training only
    G(x) = softmax over the top-K entries of H(x), 0 elsewhere
    y    = Σ_i G(x)_i · E_i(x),  E_i(x) = ReLU(x W1_i + b1_i) W2_i + b2_i

The auxiliary loss is ``aux_loss_coef · (CV²(importance) + CV²(load))`` (Shazeer §4,
appendix A): importance is the sum of gates per expert; load is the expected number of
tokens per expert under fresh noise, which is differentiable through the normal CDF.

Dispatch is "dropless" by default: the N·K token-slots are sorted by expert (padding slots
last, never run), every expert runs on its contiguous slice of the sorted slots (one fused
autograd function), and the results are gathered back and mixed with the gates. Empty experts
cost nothing, so the arithmetic grows with N·K, not with E; what does grow with E is the
(N, E) gate and the memory traffic of the expert weights and their gradients
(benchmarks/moe.py measures it against the compute floor). The only host read is the number
of slots per expert, which sizes the experts' matrix products. A GShard-style
``capacity_factor`` can bound the slots per expert instead.

The reference and the fast paths, held equal by tests/layers/test_moe.py:

* :func:`mixture_reference` is the maths above written plainly: for each expert, gather the
  tokens that chose it, run it, add the gated outputs back.
* :meth:`MixtureOfExperts._dispatch` sorts once and runs the experts in one autograd node:
  one matrix product per expert (:class:`_ExpertFFN`, the default), or batched products over
  all experts padded to a common row count (:class:`_PaddedExpertFFN`, an option:
  ``experts_kernel``); on a multi-core CPU, different experts run on different cores
  (:mod:`multimodel.layers.expert_threads`). :func:`mix` sums each token's K outputs
  elementwise (:func:`mix_reference`) or as small batched products.
* With expert parallelism (:meth:`MixtureOfExperts.shard_experts`), each rank holds E/P of
  the experts, and the sorted slots travel to their experts' ranks and back between the sort
  and the un-sort (:mod:`multimodel.layers.expert_parallel`).
* :meth:`MixtureOfExperts._few_tokens` serves a decoding step (a few tokens, no autograd):
  each chosen expert runs once on the tokens that chose it, without the sort and gathers.

Differences from the original (tensor2tensor ``expert_utils.py``): the gate noise is off at
evaluation (a tuple-instead-of-bool bug left it on there), gate math always runs in at least
float32, and padding never reaches an expert nor counts in the balancing loss.

Dimensions: B batch, T time, D hidden size (model width), E experts, K experts per token
(top-k), H expert hidden size, N tokens (B·T, padding included), S = N·K token-slots, R rows
of an expert's slice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from multimodel.config import MoEConfig
from multimodel.layers.expert_parallel import ExpertShard, gather_counts, remote_experts
from multimodel.layers.expert_threads import balanced_groups, expert_threads

NOISE_EPSILON = 1e-2
"""Added to softplus(x W_noise) so the noise scale (a divisor in the load) is never 0."""

CV_EPSILON = 1e-10
"""Added to mean² in CV² so an all-zero vector gives 0, not NaN."""


@dataclass
class RoutingStats:
    """Where the tokens of one or more forward passes went (detached tensors).

    All fields are tensors on the layer's device, so a trainer can sum them over steps and
    ``all_reduce`` them across processes without any conversion.

    Args:
        tokens_per_expert: (E,) float, token-slots the gate routed to each expert
            (real tokens only; includes slots later dropped by a capacity limit).
        gate_sum_per_expert: (E,) float, sum of gate values per expert ("importance").
        num_tokens: () float, real (non-padding) tokens seen.
        dropped_slots: () float, token-slots dropped by the capacity limit (0 when dropless).
    """

    tokens_per_expert: Tensor
    gate_sum_per_expert: Tensor
    num_tokens: Tensor
    dropped_slots: Tensor = field(default_factory=lambda: torch.zeros(()))

    @classmethod
    def zeros(cls, num_experts: int, device: torch.device | str | None = None) -> RoutingStats:
        """Empty statistics, a start value for summing."""
        return cls(
            tokens_per_expert=torch.zeros(num_experts, device=device),
            gate_sum_per_expert=torch.zeros(num_experts, device=device),
            num_tokens=torch.zeros((), device=device),
            dropped_slots=torch.zeros((), device=device),
        )

    def merge(self, other: RoutingStats) -> RoutingStats:
        """Field-wise sum: the statistics of both sets of batches together."""
        return RoutingStats(
            tokens_per_expert=self.tokens_per_expert + other.tokens_per_expert,
            gate_sum_per_expert=self.gate_sum_per_expert + other.gate_sum_per_expert,
            num_tokens=self.num_tokens + other.num_tokens,
            dropped_slots=self.dropped_slots + other.dropped_slots,
        )

    def __add__(self, other: RoutingStats) -> RoutingStats:
        return self.merge(other)

    def __radd__(self, other: object) -> RoutingStats:
        # Lets the builtin sum() start from 0.
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def detach(self) -> RoutingStats:
        """The same statistics cut from any autograd graph."""
        return RoutingStats(
            tokens_per_expert=self.tokens_per_expert.detach(),
            gate_sum_per_expert=self.gate_sum_per_expert.detach(),
            num_tokens=self.num_tokens.detach(),
            dropped_slots=self.dropped_slots.detach(),
        )

    def to(self, device: torch.device | str) -> RoutingStats:
        """The same statistics on another device."""
        return RoutingStats(
            tokens_per_expert=self.tokens_per_expert.to(device),
            gate_sum_per_expert=self.gate_sum_per_expert.to(device),
            num_tokens=self.num_tokens.to(device),
            dropped_slots=self.dropped_slots.to(device),
        )


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation, var(x) / (mean(x)² + ε).

    Uses the population variance (divide by the number of experts, as Shazeer et al.'s
    code does), so perfectly uniform values give 0 and all mass on one of E experts gives
    E - 1. Never divides by zero: an all-zero or one-element ``x`` gives 0.
    """
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    var, mean = torch.var_mean(x, correction=0)
    return var / (mean**2 + CV_EPSILON)


def smooth_load(
    clean: Tensor, noise_std: Tensor, top_logits: Tensor, experts: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Expected tokens per expert under fresh gate noise (Shazeer et al. 2017, appendix A).

    For token n and expert i, P(n, i) is the probability that i is still among the top K
    when only its own noise is drawn again, the other experts' noisy logits held fixed:
    Φ((clean_i − threshold) / noise_std_i), where the threshold is the K-th largest noisy
    logit among the *other* experts — the (K+1)-th overall if i is in the top K, the K-th
    overall if it is not. Differentiable in the clean logits and the noise scale.

    Args:
        clean: (N, E) logits x W_g without noise.
        noise_std: (N, E) softplus(x W_noise) + ε.
        top_logits: (N, K+1) the K+1 largest noisy logits, descending.
        experts: (N, K) indices of the top K experts.
        mask: (N,) bool, True = a real token, or None; padding tokens count nothing.

    Returns:
        (E,) the load, Σ_n P(n, i).
    """
    K = experts.shape[1]
    in_top = torch.zeros_like(clean, dtype=torch.bool).scatter_(1, experts, True)  # (N, E)
    threshold = torch.where(in_top, top_logits[:, K : K + 1], top_logits[:, K - 1 : K])
    p = torch.special.ndtr((clean - threshold) / noise_std)  # (N, E)
    if mask is not None:
        p = p.masked_fill(~mask.unsqueeze(1), 0.0)
    return p.sum(0)


def slots_per_expert(experts: Tensor, mask: Tensor | None, num_experts: int) -> Tensor:
    """(E,) int64: the real token-slots routed to each expert.

    ``experts`` (N, K), ``mask`` (N,) or None. An ``index_add`` rather than ``bincount``,
    which reads its input's maximum on the host on an accelerator.
    """
    weight = torch.ones_like(experts) if mask is None else mask.unsqueeze(1).expand_as(experts).long()
    counts = torch.zeros(num_experts, dtype=torch.long, device=experts.device)
    return counts.index_add_(0, experts.reshape(-1), weight.reshape(-1))


def _global_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks in value, with the gradient of the local ``x``."""
    total = x.detach().clone()
    dist.all_reduce(total)
    return x + (total - x.detach())


PARALLEL_ROWS_PER_EXPERT = 512
"""Below this many token-slots per expert (on average), CPU experts run side by side, one
per core (:mod:`multimodel.layers.expert_threads`); above it one expert's matmuls are big
enough to split across the cores themselves."""

ELEMENTWISE_MIX_MAX = 1 << 20
"""Up to this many (N, K, D) values, each token's K gated expert outputs are summed
elementwise (:func:`mix_reference`); above it as N small (1, K) @ (K, D) products
(:func:`mix_batched`), whose temporaries stay smaller and which run faster there
(docs/benchmarks.md, "Mixture of experts")."""

FEW_SLOTS = 16
"""Without autograd, up to this many token-slots (N·K) skip the sort-and-gather dispatch
(:meth:`MixtureOfExperts._few_tokens`): a decoding step of a small batch or beam."""


# ----------------------------------------------------------------------------------------
# The reference: the paper's y = Σ_k G_k(x) · E_k(x), written plainly.


def expert_mlp(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """One expert, ReLU(x W1 + b1) W2 + b2: (R, D) -> (R, D)."""
    return F.relu(x @ w1 + b1) @ w2 + b2


def mixture_reference(
    tokens: Tensor, gates: Tensor, experts: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
) -> Tensor:
    """The gate-weighted sum of each token's experts, expert by expert (dropless).

    For each expert: gather the tokens that chose it, run it on them, add the gated outputs
    back into their rows. This is the paper's maths with nothing else in it: a Python loop
    over all E experts with a host read per expert. :meth:`MixtureOfExperts._dispatch` computes
    the same (tests hold them equal to rounding, with gradients).

    Args:
        tokens: (N, D).
        gates: (N, K) gate values (0 for a padding token).
        experts: (N, K) int64 chosen experts.
        w1, b1, w2, b2: the experts' stacked weights, (E, D, H), (E, H), (E, H, D), (E, D).

    Returns:
        (N, D) in the dtype of ``tokens``.
    """
    out = torch.zeros_like(tokens, dtype=torch.promote_types(tokens.dtype, torch.float32))
    for e in range(w1.shape[0]):
        token, k = (experts == e).nonzero(as_tuple=True)  # (R,), (R,): the slots routed to e
        if token.numel():
            y = expert_mlp(tokens[token], w1[e], b1[e], w2[e], b2[e])  # (R, D)
            out.index_add_(0, token, gates[token, k].unsqueeze(1) * y)
    return out.to(tokens.dtype)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast turned off on ``device_type`` (nothing to turn off where autocast does not exist,
    e.g. on the meta device, where benchmarks/scaling_memory.py runs the model on shapes alone)."""
    available = getattr(torch.amp, "is_autocast_available", lambda _device: True)(device_type)
    return torch.autocast(device_type, enabled=False) if available else contextlib.nullcontext()


def mix_reference(per_slot: Tensor, gates: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Σ_k G_nk · y_nk: (N, K, D) expert outputs and (N, K) gates -> (N, D).

    Products and sum in at least float32 (bf16 products would each be rounded before the
    sum); the result has ``dtype``, by default the experts' dtype.
    """
    acc = torch.promote_types(per_slot.dtype, torch.float32)
    return (per_slot.to(acc) * gates.to(acc).unsqueeze(2)).sum(1).to(dtype or per_slot.dtype)


def mix_batched(per_slot: Tensor, gates: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """:func:`mix_reference` as N (1, K) @ (K, D) products, in at least float32.

    Not autocast: the result has ``dtype``, by default the experts' dtype.
    """
    acc = torch.promote_types(per_slot.dtype, torch.float32)
    with autocast_off(per_slot.device.type):
        mixed = torch.bmm(gates.to(acc).unsqueeze(1), per_slot.to(acc)).squeeze(1)
    return mixed.to(dtype or per_slot.dtype)


def mix(per_slot: Tensor, gates: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """:func:`mix_reference` or, for more than :data:`ELEMENTWISE_MIX_MAX` values, :func:`mix_batched`."""
    if per_slot.numel() <= ELEMENTWISE_MIX_MAX:
        return mix_reference(per_slot, gates, dtype)
    return mix_batched(per_slot, gates, dtype)


# ----------------------------------------------------------------------------------------
# The experts over token-slots sorted by expert: two fused autograd functions.


class _ExpertFFN(torch.autograd.Function):
    """All experts' ReLU feed-forward nets over token-slots already sorted by expert, each
    expert as its own matrix products.

    Expert ``e`` owns rows ``[offset_e, offset_e + counts[e])`` of ``xs``. Forward and
    backward write each expert's results straight into preallocated (S, ·) and (E, ·, ·)
    buffers, so there is one autograd node instead of ~5 per expert, no concatenation, and no
    E-sized zero gradient per expert (the backward of ``w1[e]`` indexing, which makes a naive
    loop quadratic in E). Each expert's whole forward (and whole backward, ReLU' and bias
    gradients included) runs while its rows are in cache. Empty experts are skipped. On a
    multi-core CPU with few rows per expert, the experts run side by side (``parallel``),
    each on one core; results agree with the serial loop to rounding.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        xs: Tensor,  # (S, D) sorted by expert
        w1: Tensor,  # (E, D, H)
        b1: Tensor,  # (E, H)
        w2: Tensor,  # (E, H, D)
        b2: Tensor,  # (E, D)
        counts: list[int],  # E row counts, summing to S
        parallel: bool,
    ) -> Tensor:
        xs = xs.contiguous()
        hidden = xs.new_empty(xs.shape[0], w1.shape[2])  # (S, H), post-ReLU, kept for backward
        out = xs.new_empty(xs.shape[0], w2.shape[2])  # (S, D)
        rows = _expert_rows(counts)

        def run(experts: Sequence[int]) -> None:
            for e in experts:
                h = hidden[rows[e]]
                torch.addmm(b1[e], xs[rows[e]], w1[e], out=h).relu_()
                torch.addmm(b2[e], h, w2[e], out=out[rows[e]])

        _run_experts(run, counts, parallel)
        ctx.save_for_backward(xs, w1, w2, hidden)
        ctx.counts, ctx.parallel = counts, parallel
        return out

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        xs, w1, w2, hidden = ctx.saved_tensors
        counts: list[int] = ctx.counts
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        grad_out = grad_out.contiguous()  # (S, D)
        rows = _expert_rows(counts)
        # torch.empty, not zeros: every non-empty expert's slice is overwritten below, and
        # writing E·D·H zeros first would add memory traffic that grows with E.
        grad_x = torch.empty_like(xs) if need_x else None
        grad_w1 = torch.empty_like(w1) if need_w1 else None
        grad_b1 = hidden.new_empty(w1.shape[0], w1.shape[2]) if need_b1 else None
        grad_w2 = torch.empty_like(w2) if need_w2 else None
        grad_b2 = grad_out.new_empty(w2.shape[0], w2.shape[2]) if need_b2 else None
        for e in (e for e, count in enumerate(counts) if count == 0):
            for grad in (grad_w1, grad_b1, grad_w2, grad_b2):
                if grad is not None:
                    grad[e].zero_()

        def run(experts: Sequence[int]) -> None:
            for e in experts:
                r = rows[e]
                g, h = grad_out[r], hidden[r]  # (C, D), (C, H), C = counts[e]
                grad_h = torch.mm(g, w2[e].t())  # (C, H)
                if grad_w2 is not None:
                    torch.mm(h.t(), g, out=grad_w2[e])
                if grad_b2 is not None:
                    torch.sum(g, 0, out=grad_b2[e])
                # ReLU': hidden is post-ReLU, so hidden > 0 exactly where it passed.
                torch.ops.aten.threshold_backward.grad_input(grad_h, h, 0, grad_input=grad_h)
                if grad_b1 is not None:
                    torch.sum(grad_h, 0, out=grad_b1[e])
                if grad_w1 is not None:
                    torch.mm(xs[r].t(), grad_h, out=grad_w1[e])
                if grad_x is not None:
                    torch.mm(grad_h, w1[e].t(), out=grad_x[r])

        _run_experts(run, counts, ctx.parallel)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, None


class _PaddedExpertFFN(torch.autograd.Function):
    """:class:`_ExpertFFN` as batched products over experts padded to a common row count.

    The sorted slots are copied into a zero (E, R, D) block, expert ``e``'s rows first in its
    slice, R = the busiest expert's count; each layer of every expert is then one
    ``baddbmm``/``bmm`` over the block (per worker thread: a contiguous range of experts).
    Padding rows are zero going in and get zero gradient coming back, so they add exactly
    nothing to any gradient. Same inputs, outputs and gradients as :class:`_ExpertFFN`, to
    rounding. Not the default: each batched product streams every expert's weights through
    memory once, where the per-expert kernel runs an expert's whole forward (or backward)
    while its weights are in cache, and on the CPUs measured that wins (benchmarks/moe.py).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        xs: Tensor,  # (S, D) sorted by expert
        w1: Tensor,  # (E, D, H)
        b1: Tensor,  # (E, H)
        w2: Tensor,  # (E, H, D)
        b2: Tensor,  # (E, D)
        counts: list[int],  # E row counts, summing to S
        parallel: bool,
    ) -> Tensor:
        E, R, D = w1.shape[0], max(counts), xs.shape[1]
        place = _padded_rows(counts, R, xs.device)  # (S,) row of each slot in the (E·R) block
        block = xs.new_zeros(E * R, D).index_copy_(0, place, xs).view(E, R, D)
        hidden = xs.new_empty(E, R, w1.shape[2])  # (E, R, H), post-ReLU, kept for backward
        out = xs.new_empty(E, R, w2.shape[2])  # (E, R, D)

        def run(experts: slice) -> None:
            torch.baddbmm(b1[experts].unsqueeze(1), block[experts], w1[experts], out=hidden[experts]).relu_()
            torch.baddbmm(b2[experts].unsqueeze(1), hidden[experts], w2[experts], out=out[experts])

        _run_expert_ranges(run, E, parallel)
        ctx.save_for_backward(block, w1, w2, hidden, place)
        ctx.parallel = parallel
        return out.view(E * R, -1).index_select(0, place)  # (S, D)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        block, w1, w2, hidden, place = ctx.saved_tensors
        E, R, D = block.shape
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        g = grad_out.new_zeros(E * R, grad_out.shape[1]).index_copy_(0, place, grad_out).view(E, R, -1)
        grad_block = torch.empty_like(block) if need_x else None
        grad_w1 = torch.empty_like(w1) if need_w1 else None
        grad_b1 = hidden.new_empty(E, w1.shape[2]) if need_b1 else None
        grad_w2 = torch.empty_like(w2) if need_w2 else None
        grad_b2 = g.new_empty(E, w2.shape[2]) if need_b2 else None

        def run(e: slice) -> None:
            grad_h = torch.bmm(g[e], w2[e].transpose(1, 2))  # (E', R, H)
            if grad_w2 is not None:
                torch.bmm(hidden[e].transpose(1, 2), g[e], out=grad_w2[e])
            if grad_b2 is not None:
                torch.sum(g[e], 1, out=grad_b2[e])
            torch.ops.aten.threshold_backward.grad_input(grad_h, hidden[e], 0, grad_input=grad_h)
            if grad_b1 is not None:
                torch.sum(grad_h, 1, out=grad_b1[e])
            if grad_w1 is not None:
                torch.bmm(block[e].transpose(1, 2), grad_h, out=grad_w1[e])
            if grad_block is not None:
                torch.bmm(grad_h, w1[e].transpose(1, 2), out=grad_block[e])

        _run_expert_ranges(run, E, ctx.parallel)
        grad_x = grad_block.view(E * R, D).index_select(0, place) if grad_block is not None else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, None


def _expert_rows(counts: list[int]) -> list[slice]:
    """Each expert's rows of the expert-sorted slots."""
    rows, start = [], 0
    for count in counts:
        rows.append(slice(start, start + count))
        start += count
    return rows


def _padded_rows(counts: list[int], rows: int, device: torch.device) -> Tensor:
    """(S,) int64: the i-th sorted slot of expert e goes to row e·rows + i of a padded block."""
    counts_t = torch.tensor(counts, device=device)  # (E,)
    starts = torch.cumsum(counts_t, 0) - counts_t  # (E,) first sorted slot of each expert
    shift = torch.arange(len(counts), device=device) * rows - starts  # (E,)
    S = sum(counts)
    return torch.arange(S, device=device) + shift.repeat_interleave(counts_t, output_size=S)


def _run_experts(run: Callable[[Sequence[int]], None], counts: list[int], parallel: bool) -> None:
    """``run`` over every non-empty expert: side by side on the CPU's cores if ``parallel``."""
    pool = expert_threads() if parallel else None
    if pool is None:
        run([e for e, count in enumerate(counts) if count])
    else:
        pool.run(run, balanced_groups(range(len(counts)), counts, pool.num_threads))


def _run_expert_ranges(run: Callable[[slice], None], num_experts: int, parallel: bool) -> None:
    """``run`` over all experts as contiguous ranges, one per core if ``parallel``."""
    pool = expert_threads() if parallel else None
    if pool is None or num_experts < 2:
        run(slice(0, num_experts))
        return
    size = -(-num_experts // pool.num_threads)
    ranges = [range(start, min(start + size, num_experts)) for start in range(0, num_experts, size)]
    pool.run(lambda r: run(slice(r[0], r[-1] + 1)), ranges)


class MixtureOfExperts(nn.Module):
    """Noisy top-k gated mixture of feed-forward experts, applied per token.

    Args:
        hidden_size: width D of the tokens going in and out.
        config: number of experts E, top-k K, expert hidden size H, noise, loss weight and
            optional capacity factor (see :class:`multimodel.config.MoEConfig`).

    ``forward(x (B, T, D), mask (B, T) bool | None)`` returns ``(out (B, T, D), aux_loss,
    stats)``: ``out`` is zero at padding (``mask`` False); ``aux_loss`` is the scalar
    balancing loss, already multiplied by ``aux_loss_coef``; ``stats`` is a detached
    :class:`RoutingStats` of this call, on the layer's device. The gate runs in float32
    (float64 for float64 input); the experts run in the dtype of ``x``. The gate noise is
    drawn only when ``self.training`` and ``config.noisy_gating``; evaluation is
    deterministic.

    The load term of the loss is the smooth estimator of Shazeer et al. when noise is on and
    K < E; otherwise (evaluation, ``noisy_gating=False``, or K = E) it is the count of slots
    per expert, which carries no gradient — the importance term still does. Both terms are
    over this call's real tokens.

    With ``capacity_factor`` c, each expert takes at most ceil(c·N·K/E) slots, first choices
    (k = 0) of all tokens before second choices, each in token order; a dropped slot adds
    nothing to its token's output (gates are not renormalised; the model's residual carries
    the token) and is counted in ``stats.dropped_slots``.

    Host reads: one per call in the sort-and-gather dispatch, the slots routed to each expert
    (``tolist()`` in :meth:`_dispatch`), which size the experts' matrix products; with
    expert parallelism (:meth:`shard_experts`) the same read takes every rank's counts,
    gathered just before it, which size the exchanges too. The
    mask is never read on the host; a mask without padding costs the same as ``None`` but
    for a few elementwise operations.

    The experts run in the dtype of ``x``, or under autocast in autocast's dtype (the gate
    never is), and support first-order gradients only (no double backward).
    """

    def __init__(self, hidden_size: int, config: MoEConfig) -> None:
        super().__init__()
        if config.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {config.num_experts}")
        if not 1 <= config.top_k <= config.num_experts:
            raise ValueError(
                f"top_k must be in [1, num_experts={config.num_experts}], got {config.top_k}"
            )
        if config.capacity_factor is not None and config.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {config.capacity_factor}")
        self.config = config
        self.hidden_size = hidden_size
        self.num_experts = E = config.num_experts
        self.top_k = config.top_k
        D, H = hidden_size, config.expert_hidden_size
        self.w_gate = nn.Parameter(torch.empty(D, E))
        self.w_noise = nn.Parameter(torch.empty(D, E))
        self.w1 = nn.Parameter(torch.empty(E, D, H))
        self.b1 = nn.Parameter(torch.empty(E, H))
        self.w2 = nn.Parameter(torch.empty(E, H, D))
        self.b2 = nn.Parameter(torch.empty(E, D))
        self.sync_statistics = False
        """Sum importance and load over the ranks of a data-parallel run (the trainer sets it)."""
        self.experts_kernel = "per_expert"
        """How the sorted slots meet the experts: ``"per_expert"``, one matrix product per
        expert (:class:`_ExpertFFN`), or ``"padded"``, batched products over all experts
        padded to a common row count (:class:`_PaddedExpertFFN`). The same results to
        rounding; on the CPUs measured so far the per-expert products are faster at every
        number of experts (docs/benchmarks.md, "Mixture of experts"), so they are the default."""
        self.expert_shard: ExpertShard | None = None
        """With expert parallelism, this rank's share of the experts (:meth:`shard_experts`)."""
        self.reset_parameters()

    def shard_experts(self, shard: ExpertShard) -> None:
        """Keep only this rank's experts, ``shard.experts`` of all E (expert parallelism,
        :mod:`multimodel.layers.expert_parallel`): ``w1``, ``b1``, ``w2``, ``b2`` become their
        (L, ...) slices. The gate stays whole. Every forward call is then a collective of
        ``shard.group``."""
        if shard.num_experts != self.num_experts or self.num_experts % shard.size:
            raise ValueError(f"cannot split {self.num_experts} experts over {shard.size} ranks")
        for name in ("w1", "b1", "w2", "b2"):
            setattr(self, name, nn.Parameter(getattr(self, name).detach()[shard.experts].clone()))
        self.expert_shard = shard

    def reset_parameters(self) -> None:
        """Gate weights zero (paper); each expert like two ``nn.Linear`` layers."""
        nn.init.zeros_(self.w_gate)
        nn.init.zeros_(self.w_noise)
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(weight.shape[1])  # fan-in: D for w1, H for w2
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def extra_repr(self) -> str:
        c = self.config
        here = "" if self.expert_shard is None else f", experts_here={self.expert_shard.experts}"
        return (
            f"hidden_size={self.hidden_size}, num_experts={c.num_experts}, top_k={c.top_k}, "
            f"expert_hidden_size={c.expert_hidden_size}, noisy_gating={c.noisy_gating}, "
            f"capacity_factor={c.capacity_factor}{here}"
        )

    # ------------------------------------------------------------------------------------
    # Gating (Shazeer et al. §2.1) and balancing loss (§4).

    def gate(
        self, x: Tensor, mask: Tensor | None = None, *, balancing_loss: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Route tokens ``x`` (N, D); ``mask`` (N,) bool, True = a real token, or None (all real).

        Returns ``(gates (N, K), experts (N, K) int64, aux_loss ())``; gates are the
        softmax of the kept logits, in descending order, in float32 (float64 for float64),
        and 0 for padding tokens, which count in neither term of the loss. With
        ``balancing_loss=False`` the loss is not computed and ``aux_loss`` is 0.
        """
        with autocast_off(x.device.type):
            return self._gate(x, mask, balancing_loss)

    def _gate(self, x: Tensor, mask: Tensor | None, balancing_loss: bool) -> tuple[Tensor, Tensor, Tensor]:
        E, K = self.num_experts, self.top_k
        dtype = torch.promote_types(x.dtype, torch.float32)
        x = x.to(dtype)
        noisy = self.training and self.config.noisy_gating
        if noisy:
            # One (D, 2E) matmul instead of two (D, E) ones.
            both = x @ torch.cat((self.w_gate, self.w_noise), dim=1).to(dtype)  # (N, 2E)
            clean, noise_logits = both.split(E, dim=1)  # (N, E) each
            noise_std = F.softplus(noise_logits) + NOISE_EPSILON  # (N, E)
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            clean = x @ self.w_gate.to(dtype)  # (N, E)
            logits = clean
        # Keep the (K+1)-th largest too: it is a threshold of the load estimator.
        top_logits, top_experts = logits.topk(min(K + 1, E), dim=-1)  # (N, K or K+1)
        experts = top_experts[:, :K]  # (N, K)
        gates = torch.softmax(top_logits[:, :K], dim=-1)  # (N, K)
        if mask is not None:
            gates = gates.masked_fill(~mask.unsqueeze(1), 0.0)  # padding: no weight, no loss
        if not balancing_loss:
            return gates, experts, clean.new_zeros(())

        importance = clean.new_zeros(E).index_add(0, experts.reshape(-1), gates.reshape(-1))
        if noisy and K < E:
            load = smooth_load(clean, noise_std, top_logits, experts, mask)
        else:
            load = slots_per_expert(experts, mask, E).to(dtype)
        scale = 1.0
        if self.sync_statistics and self.training and dist.is_available() and dist.is_initialized():
            # Data-parallel training: balance the experts over the global batch, not each
            # rank's shard. The forward value is the global sum; the gradient flows through this
            # rank's own share (the other shares are constants here and get their gradient on
            # their own rank). DDP averages gradients over ranks, hence the world-size scale.
            # No collective runs in backward, so it cannot interleave with DDP's own.
            importance = _global_sum(importance)
            load = _global_sum(load)
            scale = float(dist.get_world_size())
        aux_loss = scale * self.config.aux_loss_coef * (cv_squared(importance) + cv_squared(load))
        return gates, experts, aux_loss

    # ------------------------------------------------------------------------------------
    # Dispatch: sort the token-slots by expert, run the experts, un-sort and mix.

    def _experts(self, xs: Tensor, counts: list[int]) -> Tensor:
        """Expert e's FFN on its rows of ``xs`` (S, D), sorted by expert; returns (S, D).

        The kernel is ``self.experts_kernel``'s. On a multi-core CPU, experts run side by
        side on the cores when they get few rows each.
        """
        weights = (p.to(xs.dtype) for p in (self.w1, self.b1, self.w2, self.b2))
        used = max(1, sum(1 for count in counts if count))
        parallel = (
            self.config.parallel_experts
            and xs.device.type == "cpu"
            and xs.shape[0] < PARALLEL_ROWS_PER_EXPERT * used
        )
        function = _PaddedExpertFFN if self.experts_kernel == "padded" else _ExpertFFN
        return function.apply(xs, *weights, counts, parallel)

    def _dispatch(
        self, tokens: Tensor, mask: Tensor | None, gates: Tensor, experts: Tensor
    ) -> tuple[Tensor, int]:
        """The experts' gated outputs for every token: (N, D), 0 at padding.

        ``tokens`` (N, D) all positions, ``mask`` (N,) or None, ``gates`` and ``experts``
        (N, K) from :meth:`gate`. Also returns the number of slots dropped by the capacity.
        With :attr:`expert_shard` set, the experts run on their ranks
        (:func:`~multimodel.layers.expert_parallel.remote_experts`).
        """
        (N, D), E, K = tokens.shape, self.num_experts, self.top_k
        S = N * K
        # Slot s = k·N + n is token n's k-th choice: k-major order, so that a stable sort
        # by expert puts every token's first choice ahead of its second choices, which is
        # the priority a capacity limit keeps (GShard). Padding slots go to a bucket E after
        # all experts, so the sort puts them last.
        slot_expert = experts.t().reshape(-1)  # (S,)
        if mask is not None:
            slot_expert = slot_expert.masked_fill(~mask.repeat(K), E)
        counts_t = torch.zeros(E + 1, dtype=torch.long, device=tokens.device)
        counts_t.index_add_(0, slot_expert, torch.ones_like(slot_expert))  # (E + 1,)
        shard = self.expert_shard
        # The layer's one host read: the experts' row counts size their matrix products (with
        # expert parallelism, every rank's counts: they size the exchanges too).
        table = (counts_t[None] if shard is None else gather_counts(counts_t, shard)).tolist()  # (P, E + 1)
        own = table[0 if shard is None else shard.rank]
        S_real = S - own[E]
        order = torch.argsort(slot_expert, stable=True)  # (S,) sorted position -> slot
        capacities = [self._capacity(sum(row[:E])) for row in table]
        sent = [[min(c, cap) for c in row[:E]] for row, cap in zip(table, capacities)]  # (P, E)
        counts = sent[0 if shard is None else shard.rank]
        dropped = sum(own[:E]) - sum(counts)
        if self.config.capacity_factor is None:
            kept = order[:S_real]  # (S_real,) the real slots, grouped by expert
        else:
            sorted_expert = slot_expert.index_select(0, order)  # (S,)
            starts = torch.cumsum(counts_t, 0) - counts_t  # (E + 1,)
            rank = torch.arange(S, device=tokens.device) - starts.index_select(0, sorted_expert)  # within its expert
            dropped_or_padding = (rank >= capacities[0 if shard is None else shard.rank]) | (sorted_expert == E)
            keep = torch.argsort(dropped_or_padding.to(torch.uint8), stable=True)[: sum(counts)]
            kept = order.index_select(0, keep)  # (S_kept,) still grouped by expert
        if shard is None and sum(counts) == 0:  # only padding
            return tokens.new_zeros(N, D), dropped

        # Gather → experts → un-sort → mix. The un-sort is a gather (no index_add over
        # tokens), so each token's K outputs are summed in a fixed order: results are
        # deterministic on every device and do not depend on the other tokens.
        xs = tokens.index_select(0, kept % N).to(self._expert_dtype(tokens))  # (S_kept, D), sorted by expert
        if shard is None:
            ys = self._experts(xs, counts)  # (S_kept, D)
        else:
            ys = remote_experts(xs, sent, shard, self._experts)  # (S_kept, D)
            if sum(counts) == 0:  # only padding here; the exchanges' backward must still run on every rank
                return tokens.new_zeros(N, D) + 0 * ys.sum(), dropped
        if self.config.capacity_factor is None:
            # Invert the sort: the row of ys that holds each slot, then token-major. Padding
            # slots point at the last row; their gate is 0, so they add nothing.
            rows = torch.arange(S, device=tokens.device)
            row_of_slot = torch.empty_like(order).scatter_(0, order, rows)  # (S,) k-major
            row_of_slot = row_of_slot.view(K, N).t().reshape(S).clamp_(max=S_real - 1)  # (S,) token-major
            per_slot = ys.index_select(0, row_of_slot).view(N, K, D)
        else:
            per_slot = ys.new_zeros(S, D).index_copy(0, kept, ys)  # dropped and padding rows: 0
            per_slot = per_slot.view(K, N, D).transpose(0, 1)  # (N, K, D)
        return mix(per_slot, gates, tokens.dtype), dropped

    def _capacity(self, real_slots: int) -> int:
        """Most slots an expert takes from a call with ``real_slots`` real slots (all of them
        when dropless)."""
        if self.config.capacity_factor is None:
            return real_slots
        return max(1, math.ceil(self.config.capacity_factor * real_slots / self.num_experts))

    @staticmethod
    def _expert_dtype(tokens: Tensor) -> torch.dtype:
        """The experts' dtype: autocast's (bf16 training) when it is on, else the tokens'."""
        device = tokens.device.type
        if device not in ("cpu", "cuda"):
            return tokens.dtype
        if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
            on, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
        elif device == "cpu":
            on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            on, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        return dtype if on else tokens.dtype

    def _few_tokens(self, tokens: Tensor, gates: Tensor, experts: Tensor) -> Tensor:
        """:meth:`_dispatch` for a few token-slots without autograd (decoding): (N, D).

        Each chosen expert runs once, straight from its weights, on the tokens that chose it;
        no sort and no gathers, which cost more than the experts themselves for a handful of
        tokens. Reads the chosen experts on the host (decoding reads every step's tokens
        anyway). No capacity limit applies (the caller takes this path only without one, or
        for a single token, whose K experts are distinct).
        """
        (N, D), K = tokens.shape, self.top_k
        w1, b1, w2, b2 = (p.to(tokens.dtype) for p in (self.w1, self.b1, self.w2, self.b2))
        slots_of: dict[int, list[int]] = {}  # expert -> its slots s = n·K + k
        for slot, e in enumerate(experts.reshape(-1).tolist()):
            slots_of.setdefault(e, []).append(slot)
        per_slot = tokens.new_empty(N * K, D)  # (N·K, D) each slot's expert output
        for e, slots in slots_of.items():
            rows = [slot // K for slot in slots]
            x = tokens[rows[0] : rows[0] + 1] if len(rows) == 1 else tokens[rows]  # (R, D)
            y = torch.addmm(b2[e], torch.addmm(b1[e], x, w1[e]).relu_(), w2[e])  # (R, D)
            if len(slots) == 1:
                per_slot[slots[0]] = y[0]
            else:
                per_slot[slots] = y
        return mix_reference(per_slot.view(N, K, D), gates)

    def step(self, x: Tensor) -> Tensor:
        """The experts' mixed outputs for a decoding step's tokens: (N, D) -> (N, D).

        No balancing loss, no statistics; a few token-slots take :meth:`_few_tokens`, more
        the general dispatch.
        """
        gates, experts, _ = self.gate(x, balancing_loss=False)  # (N, K), (N, K)
        if self._few(x.shape[0]):
            return self._few_tokens(x, gates, experts)
        return self._dispatch(x, None, gates, experts)[0]

    def _few(self, N: int) -> bool:
        """Whether ``N`` tokens take :meth:`_few_tokens` when there is no autograd: a few token-slots
        without a capacity limit, or one token; never with sharded experts (whose dispatch is a
        collective)."""
        few = N == 1 or (N * self.top_k <= FEW_SLOTS and self.config.capacity_factor is None)
        return few and self.expert_shard is None

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, statistics: bool = True
    ) -> tuple[Tensor, Tensor, RoutingStats | None]:
        """Route, run and mix the experts; see the class docstring.

        ``statistics=False`` skips the balancing loss (returned as 0) and the routing
        statistics (None): incremental decoding reads neither.
        """
        B, T, D = x.shape
        E, N = self.num_experts, B * T
        tokens = x.reshape(N, D)  # (N, D)
        real = None if mask is None else mask.reshape(N)  # (N,)

        gates, experts, aux_loss = self.gate(tokens, real, balancing_loss=statistics)  # (N, K), (N, K), ()
        if self._few(N) and not torch.is_grad_enabled():
            mixed, dropped = self._few_tokens(tokens, gates, experts), 0  # (N, D)
        else:
            mixed, dropped = self._dispatch(tokens, real, gates, experts)  # (N, D)
        out = mixed.view(B, T, D)

        if not statistics:
            return out, aux_loss, None
        with torch.no_grad():
            stats = RoutingStats(
                tokens_per_expert=slots_per_expert(experts, real, E).float(),
                gate_sum_per_expert=x.new_zeros(E, dtype=torch.float32).index_add_(
                    0, experts.reshape(-1), gates.reshape(-1).float()
                ),
                num_tokens=x.new_full((), N, dtype=torch.float32) if real is None else real.sum().float(),
                dropped_slots=x.new_full((), dropped, dtype=torch.float32),
            )
        return out, aux_loss, stats

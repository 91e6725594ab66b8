"""Sparsely-gated mixture of experts (Shazeer et al. 2017 §2.1 and §4; MultiModel §2.3).

Each real token is sent to the ``K`` experts with the largest noisy gate logits and the
layer returns the gate-weighted sum of their outputs:

    H(x) = x W_g + ε · (softplus(x W_noise) + 0.01),  ε ~ N(0, 1) in training only
    G(x) = softmax over the top-K entries of H(x), 0 elsewhere
    y    = Σ_i G(x)_i · E_i(x),  E_i(x) = ReLU(x W1_i + b1_i) W2_i + b2_i

The auxiliary loss is ``aux_loss_coef · (CV²(importance) + CV²(load))`` (Shazeer §4,
appendix A): importance is the sum of gates per expert; load is the expected number of
tokens per expert under fresh noise, which is differentiable through the normal CDF.

Dispatch is "dropless" by default: padding is removed first, the remaining N·K token-slots
are sorted by expert, every expert runs once on its contiguous slice of the sorted slots (one
fused autograd function, :class:`_ExpertFFN`) and the results are gathered back and mixed
with the gates. Empty experts cost nothing, so the arithmetic grows with N·K, not with E; what
does grow with E is the (N, E) gate and the memory traffic of the expert weights and their
gradients (benchmarks/moe.py measures it against the compute floor). On a multi-core CPU,
when the experts get few rows each, different experts run on different cores
(:mod:`multimodel.layers.expert_threads`). A GShard-style ``capacity_factor`` can bound the
slots per expert instead.

Differences from the original (tensor2tensor ``expert_utils.py``): the gate noise is off at
evaluation (a tuple-instead-of-bool bug left it on there), gate math always runs in at least
float32, and padding never reaches an expert nor counts in the balancing loss.

Dimensions: B batch, T time, D hidden size (model width), E experts, K experts per token
(top-k), H expert hidden size, N real (non-padding) tokens, S = N·K token-slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from multimodel.config import MoEConfig
from multimodel.layers.expert_threads import balanced_groups, expert_threads
from multimodel.layers.padding import padding_or_none

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


def smooth_load(clean: Tensor, noise_std: Tensor, top_logits: Tensor, experts: Tensor) -> Tensor:
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

    Returns:
        (E,) the load, Σ_n P(n, i).
    """
    K = experts.shape[1]
    in_top = torch.zeros_like(clean, dtype=torch.bool).scatter_(1, experts, True)  # (N, E)
    threshold = torch.where(in_top, top_logits[:, K : K + 1], top_logits[:, K - 1 : K])
    return torch.special.ndtr((clean - threshold) / noise_std).sum(0)


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
"""Up to this many (N, K, D) values, the gate-weighted sum of each token's K expert outputs is
an elementwise multiply and a sum over K; above it, N small (1, K) @ (K, D) matrix products,
whose temporaries stay smaller. Forward + backward, 2 threads, median of 15 (a throw-away
timing script; docs/benchmarks.md): 1.1 vs 2.1 ms at N, K, D = 1024, 2, 128 and 7.0 vs
9.3 ms at 4096, 2, 128, but 7.5 vs 4.4 ms at 1024, 4, 512 and 76 vs 34 ms at 4096, 4, 512.
Both sum each token's K outputs in a fixed order, in at least float32, and return the experts'
dtype; which one runs depends on the batch's size, and they agree to rounding (bitwise in
float32 on this CPU, in a review's check)."""

FEW_SLOTS = 16
"""Without autograd, up to this many token-slots (N·K) skip the sort-and-gather dispatch
(:meth:`MixtureOfExperts._few_tokens`): a decoding step of a small batch or beam."""


class _ExpertFFN(torch.autograd.Function):
    """All experts' ReLU feed-forward nets over token-slots already sorted by expert.

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


def _expert_rows(counts: list[int]) -> list[slice]:
    """Each expert's rows of the expert-sorted slots."""
    rows, start = [], 0
    for count in counts:
        rows.append(slice(start, start + count))
        start += count
    return rows


def _run_experts(run: Callable[[Sequence[int]], None], counts: list[int], parallel: bool) -> None:
    """``run`` over every non-empty expert: side by side on the CPU's cores if ``parallel``."""
    pool = expert_threads() if parallel else None
    if pool is None:
        run([e for e, count in enumerate(counts) if count])
    else:
        pool.run(run, balanced_groups(range(len(counts)), counts, pool.num_threads))


class MixtureOfExperts(nn.Module):
    """Noisy top-k gated mixture of feed-forward experts, applied per token.

    Args:
        hidden_size: width D of the tokens going in and out.
        config: number of experts E, top-k K, expert hidden size H, noise, loss weight and
            optional capacity factor (see :class:`multimodel.config.MoEConfig`).

    ``forward(x (B, T, D), mask (B, T) bool | None)`` returns ``(out (B, T, D), aux_loss,
    stats)``: ``out`` is zero at padding (``mask`` False); ``aux_loss`` is the scalar
    balancing loss, already multiplied by ``aux_loss_coef``; ``stats`` is a detached
    :class:`RoutingStats` of this call. The gate runs in float32 (float64 for float64 input);
    the experts run in the dtype of ``x``. The gate noise is drawn only when
    ``self.training`` and ``config.noisy_gating``; evaluation is deterministic.

    The load term of the loss is the smooth estimator of Shazeer et al. when noise is on and
    K < E; otherwise (evaluation, ``noisy_gating=False``, or K = E) it is the count of slots
    per expert, which carries no gradient — the importance term still does. Both terms are
    over this call's real tokens.

    With ``capacity_factor`` c, each expert takes at most ceil(c·N·K/E) slots, first choices
    (k = 0) of all tokens before second choices, each in token order; a dropped slot adds
    nothing to its token's output (gates are not renormalised; the model's residual carries
    the token) and is counted in ``stats.dropped_slots``.

    The experts are not autocast (they run in the dtype of ``x``) and support first-order
    gradients only (no double backward).
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
        self.reset_parameters()

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
        return (
            f"hidden_size={self.hidden_size}, num_experts={c.num_experts}, top_k={c.top_k}, "
            f"expert_hidden_size={c.expert_hidden_size}, noisy_gating={c.noisy_gating}, "
            f"capacity_factor={c.capacity_factor}"
        )

    # ------------------------------------------------------------------------------------
    # Gating (Shazeer et al. §2.1) and balancing loss (§4).

    def gate(self, x: Tensor, *, balancing_loss: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Route real tokens ``x`` (N, D).

        Returns ``(gates (N, K), experts (N, K) int64, aux_loss ())``; gates are the
        softmax of the kept logits, in descending order, in float32 (float64 for float64).
        With ``balancing_loss=False`` the loss is not computed and ``aux_loss`` is 0.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._gate(x, balancing_loss)

    def _gate(self, x: Tensor, balancing_loss: bool) -> tuple[Tensor, Tensor, Tensor]:
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
        if not balancing_loss:
            return gates, experts, clean.new_zeros(())

        importance = clean.new_zeros(E).index_add(0, experts.reshape(-1), gates.reshape(-1))
        if noisy and K < E:
            load = smooth_load(clean, noise_std, top_logits, experts)
        else:
            load = torch.bincount(experts.reshape(-1), minlength=E).to(dtype)
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

    def _experts(self, xs: Tensor, counts: list[int]) -> Tensor:
        """Expert e's FFN on its rows of ``xs`` (S, D), sorted by expert; returns (S, D)."""
        weights = (p.to(xs.dtype) for p in (self.w1, self.b1, self.w2, self.b2))
        used = sum(1 for count in counts if count)
        parallel = (
            self.config.parallel_experts
            and xs.device.type == "cpu"
            and xs.shape[0] < PARALLEL_ROWS_PER_EXPERT * max(used, 1)
        )
        return _ExpertFFN.apply(xs, *weights, counts, parallel)

    def _dispatch(self, tokens: Tensor, gates: Tensor, experts: Tensor) -> tuple[Tensor, int]:
        """Sort the N·K slots by expert, run the experts, un-sort and mix.

        Returns the mixed outputs (N, D) and the number of slots dropped by the capacity.
        """
        (N, D), E, K = tokens.shape, self.num_experts, self.top_k
        # Slot s = k·N + n is token n's k-th choice: k-major order, so that a stable sort
        # by expert puts every token's first choice ahead of its second choices, which is
        # the priority a capacity limit keeps (GShard).
        slot_expert = experts.t().reshape(-1)  # (S,)
        order = torch.argsort(slot_expert, stable=True)  # (S,) sorted position -> slot
        counts_t = torch.bincount(slot_expert, minlength=E)  # (E,)
        counts = counts_t.tolist()
        dropped = 0
        if self.config.capacity_factor is None:
            kept_slots = order
        else:
            capacity = max(1, math.ceil(self.config.capacity_factor * N * K / E))
            starts = torch.cumsum(counts_t, 0) - counts_t  # (E,)
            rank = torch.arange(order.numel(), device=tokens.device) - starts.repeat_interleave(
                counts_t, output_size=order.numel()
            )  # (S,) position of each sorted slot within its expert
            kept_slots = order[rank < capacity]
            dropped = sum(max(0, c - capacity) for c in counts)
            counts = [min(c, capacity) for c in counts]

        # Gather → experts → un-sort → mix. The un-sort is a gather (no index_add over
        # tokens), so each token's K outputs are summed in a fixed order (see
        # ELEMENTWISE_MIX_MAX): results are deterministic on every device, and do not depend on
        # the other tokens beyond the batch's size choosing the way of mixing.
        xs = tokens.index_select(0, kept_slots % max(N, 1))  # (S_kept, D), sorted by expert
        ys = self._experts(xs, counts)  # (S_kept, D)
        if self.config.capacity_factor is None:
            # Invert the sort: the row of ys that holds each slot, then token-major.
            rows = torch.arange(N * K, device=tokens.device)
            row_of_slot = torch.empty_like(order).scatter_(0, order, rows)  # (S,) k-major
            row_of_slot = row_of_slot.view(K, N).t().reshape(N * K)  # (S,) token-major
            per_slot = ys.index_select(0, row_of_slot).view(N, K, D)
        else:
            per_slot = ys.new_zeros(N * K, D).index_copy(0, kept_slots, ys)  # dropped rows → 0
            per_slot = per_slot.view(K, N, D).transpose(0, 1)  # (N, K, D)
        if per_slot.numel() <= ELEMENTWISE_MIX_MAX:
            # Products and sum in float32 at least, as bmm accumulates: bf16 products would
            # each be rounded before the sum.
            acc = torch.promote_types(per_slot.dtype, torch.float32)
            mixed = (per_slot.to(acc) * gates.to(acc).unsqueeze(2)).sum(1).to(tokens.dtype)  # (N, D)
        else:  # N tiny (1, K) @ (K, D) products, not autocast: the output keeps the experts' dtype
            with torch.autocast(tokens.device.type, enabled=False):
                mixed = torch.bmm(gates.to(tokens.dtype).unsqueeze(1), per_slot).squeeze(1)  # (N, D)
        return mixed, dropped

    def _few_tokens(self, tokens: Tensor, gates: Tensor, experts: Tensor) -> Tensor:
        """Shortcut for a few tokens without autograd (decoding): each chosen expert runs
        once, straight from its weights, on the tokens that chose it.

        Skips the sort, gathers and bookkeeping of :meth:`_dispatch`, which cost more than
        the experts themselves for a handful of tokens. No capacity limit applies (the
        caller takes this path only without one, or for a single token, whose K experts are
        distinct). Agrees with the general path to rounding (~1e-7).
        """
        w1, b1, w2, b2 = (p.to(tokens.dtype) for p in (self.w1, self.b1, self.w2, self.b2))
        users: dict[int, list[tuple[int, float]]] = {}  # expert -> [(token, gate)]
        for n, (row_gates, row_experts) in enumerate(zip(gates.tolist(), experts.tolist())):
            for gate, e in zip(row_gates, row_experts):
                users.setdefault(e, []).append((n, gate))
        out = torch.zeros_like(tokens)  # (N, D)
        for e, chosen_by in users.items():
            rows = [n for n, _ in chosen_by]
            x = tokens[rows[0] : rows[0] + 1] if len(rows) == 1 else tokens[rows]  # (R, D)
            y = torch.addmm(b2[e], torch.addmm(b1[e], x, w1[e]).relu_(), w2[e])  # (R, D)
            for i, (n, gate) in enumerate(chosen_by):
                out[n].add_(y[i], alpha=gate)
        return out

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, statistics: bool = True
    ) -> tuple[Tensor, Tensor, RoutingStats | None]:
        """Route, run and mix the experts; see the class docstring.

        ``statistics=False`` skips the balancing loss (returned as 0) and the routing
        statistics (None): incremental decoding reads neither.
        """
        B, T, D = x.shape
        E = self.num_experts
        flat = x.reshape(B * T, D)  # (B·T, D)
        mask = padding_or_none(mask)
        if mask is None:  # no padding: skip the gather and scatter
            real_positions = None
            tokens = flat  # (N, D), N = B·T
        else:
            real_positions = mask.reshape(B * T).nonzero().squeeze(1)  # (N,)
            tokens = flat.index_select(0, real_positions)  # (N, D)
        N = tokens.shape[0]

        gates, experts, aux_loss = self.gate(tokens, balancing_loss=statistics)  # (N, K), (N, K), ()
        few = N == 1 or (N * self.top_k <= FEW_SLOTS and self.config.capacity_factor is None)
        if few and not torch.is_grad_enabled():
            mixed, dropped = self._few_tokens(tokens, gates, experts), 0  # (N, D)
        else:
            mixed, dropped = self._dispatch(tokens, gates, experts)  # (N, D)

        if real_positions is None:
            out = mixed.view(B, T, D)
        else:
            out = x.new_zeros(B * T, D).index_copy(0, real_positions, mixed).view(B, T, D)

        if not statistics:
            return out, aux_loss, None
        with torch.no_grad():
            stats = RoutingStats(
                tokens_per_expert=torch.bincount(experts.reshape(-1), minlength=E).float(),
                gate_sum_per_expert=x.new_zeros(E, dtype=torch.float32).index_add_(
                    0, experts.reshape(-1), gates.reshape(-1).float()
                ),
                num_tokens=torch.tensor(float(N), device=x.device),
                dropped_slots=torch.tensor(float(dropped), device=x.device),
            )
        return out, aux_loss, stats

"""Expert parallelism: a MoE layer's experts spread over the ranks of a group, each token-slot
sent to its expert's rank and back with an all-to-all (GShard §3; DeepSpeed-MoE, Tutel).

Each of the P ranks of an expert-parallel group holds L = E / P consecutive experts: rank r
holds experts [r·L, (r+1)·L). A MoE layer routes its own tokens with the (replicated) gate and
sorts its token-slots by expert (:meth:`~multimodel.layers.moe.MixtureOfExperts._dispatch`);
the slots for rank r's experts are then one contiguous block, so one ``all_to_all_single``
with variable split sizes moves every block to its rank (dropless: no slot is dropped or
padded). Each rank runs its L experts on what it received, regrouped by expert, and a second
all-to-all with the split sizes reversed brings every result back to the rank its token lives
on. Both exchanges are autograd functions whose backward is the reverse exchange, so
gradients reach the tokens' ranks and the experts' weights get the gradient of every rank's
tokens. The split sizes come from every rank's per-expert slot counts, gathered once per layer
call (:func:`gather_counts`) and read on the host with the layer's own counts, in the layer's
one host read.

Every rank of the group must call the layer the same number of times in the same order (the
exchanges are collectives), including ranks with no real token: they send and receive empty
blocks.

Dimensions: P ranks in the group, E experts in all, L = E / P experts per rank, S token-slots
sorted by expert on this rank, R slots received, D hidden size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable


@dataclass(frozen=True)
class ExpertShard:
    """This rank's share of the experts of every MoE layer.

    Args:
        group: the P ranks that together hold one copy of all experts.
        rank: this rank's index in ``group`` (it holds experts [rank·L, (rank+1)·L)).
        size: P, the number of ranks in ``group``.
        num_experts: E, the experts of a layer in all (a multiple of ``size``).
    """

    group: dist.ProcessGroup
    rank: int
    size: int
    num_experts: int

    @property
    def local(self) -> int:
        """L, the experts this rank holds."""
        return self.num_experts // self.size

    @property
    def experts(self) -> slice:
        """The indices of this rank's experts among all E."""
        return slice(self.rank * self.local, (self.rank + 1) * self.local)


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with variable split sizes; its backward is the reverse exchange."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, send: list[int], receive: list[int],
        group: dist.ProcessGroup,
    ) -> Tensor:
        out = x.new_empty((sum(receive), *x.shape[1:]))  # (R, D)
        dist.all_to_all_single(out, x.contiguous(), output_split_sizes=receive, input_split_sizes=send, group=group)
        ctx.send, ctx.receive, ctx.group = send, receive, group
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        out = grad.new_empty((sum(ctx.send), *grad.shape[1:]))
        dist.all_to_all_single(out, grad.contiguous(), output_split_sizes=ctx.send, input_split_sizes=ctx.receive,
                               group=ctx.group)
        return out, None, None, None


def exchange(x: Tensor, send: list[int], receive: list[int], group: dist.ProcessGroup) -> Tensor:
    """Send ``x``'s consecutive blocks of ``send[r]`` rows to rank r of ``group``; return the
    blocks received, ``receive[r]`` rows from rank r, in rank order. Differentiable."""
    return _AllToAll.apply(x, send, receive, group)


def gather_counts(counts: Tensor, shard: ExpertShard) -> Tensor:
    """(P, E + 1): every rank's slots per expert (``counts`` (E + 1,) on this rank; the last
    column counts padding slots). A collective; no host read."""
    everyone = counts.new_empty(shard.size * counts.numel())  # flat: gloo gathers along dim 0 in input-shaped chunks
    all_gather(everyone, counts, shard.group)
    return everyone.view(shard.size, -1)


def all_gather(out: Tensor, x: Tensor, group: dist.ProcessGroup) -> None:
    """``out`` = every rank's ``x`` concatenated along dim 0, in rank order."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the new name since torch 2.13
    gather(out, x.contiguous(), group=group)


def _expert_major(incoming: list[list[int]], device: torch.device) -> Tensor:
    """(R,) for each row of the received slots in expert-major order (expert, then source
    rank), its row in the order they arrive (source rank, then expert). ``incoming[r][l]``:
    the slots rank r sends to this rank's expert l."""
    c = torch.tensor(incoming, dtype=torch.long, device=device)  # (P, L)
    R = int(sum(map(sum, incoming)))
    arrival_start = (c.flatten().cumsum(0) - c.flatten()).view_as(c)  # (P, L) first arriving row of each block
    lengths = c.t().flatten()  # (L·P,) blocks in expert-major order
    start = lengths.cumsum(0) - lengths  # (L·P,) where each block begins in expert-major order
    shift = arrival_start.t().flatten() - start  # (L·P,)
    return torch.arange(R, device=device) + shift.repeat_interleave(lengths, output_size=R)


def remote_experts(xs: Tensor, slots: list[list[int]], shard: ExpertShard,
                   run: Callable[[Tensor, list[int]], Tensor]) -> Tensor:
    """The experts' outputs for this rank's slots ``xs`` (S, D), sorted by expert, wherever
    the experts live.

    Args:
        xs: (S, D) this rank's token-slots, grouped by expert in expert order.
        slots: ``slots[r][e]``, the slots rank r of the group sends to expert e (E each; row
            ``shard.rank`` describes ``xs``).
        shard: this rank's experts and its group.
        run: this rank's L experts on slots grouped by expert: ``run(rows (R, D), counts (L,))``
            -> (R, D), e.g. :meth:`~multimodel.layers.moe.MixtureOfExperts._experts`.

    Returns:
        (S, D) in the order of ``xs``.
    """
    L, mine = shard.local, shard.experts
    send = [sum(slots[shard.rank][r * L:(r + 1) * L]) for r in range(shard.size)]
    incoming = [row[mine] for row in slots]  # (P, L)
    receive = [sum(row) for row in incoming]
    received = exchange(xs, send, receive, shard.group)  # (R, D) by source rank, then expert
    order = _expert_major(incoming, xs.device)  # (R,)
    ys = run(received.index_select(0, order), [sum(col) for col in zip(*incoming)])  # (R, D) by expert
    back = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return exchange(ys.index_select(0, back), receive, send, shard.group)  # (S, D)


__all__ = ["ExpertShard", "all_gather", "exchange", "gather_counts", "remote_experts"]

"""Mixture-of-experts layer speed: sparse dispatch vs. a dense reference vs. the compute floor.

Times one forward + backward pass (training mode, gate noise on, gradients for the input and
every parameter) of:

* ``ours``  — :class:`multimodel.layers.moe.MixtureOfExperts` (sort by expert, one fused
  autograd function over the non-empty experts, gather back);
* ``serial`` — our layer with ``parallel_experts=False``: the experts one after another, each
  expert's matmuls split across the threads by MKL (only differs from ``ours`` on a multi-core
  CPU with under 512 token-slots per expert);
* ``loop``  — the same layer (routing, sort, gather, mix) with the experts run by a plain
  autograd Python loop over the non-empty experts (``split`` of the sorted slots, ``unbind``
  of the stacked weights): the obvious baseline;
* ``dense`` — every expert on every token, mixed with the (mostly zero) gate matrix;
* ``floor`` — the compute floor: one expert-sized MLP (two ``nn.Linear``) run once over all
  N·K token-slots, i.e. the same arithmetic as the experts with no routing at all;
* ``experts`` — our layer's expert function alone (:class:`_ExpertFFN`, side by side on the
  cores as in ``ours``) on token-slots already sorted by expert, with the slot counts of one
  real routing: the matrix products, ReLU and biases of ``ours`` without the gate, the sort,
  the gathers or the mixing. ``experts/floor`` is what running each expert as its own matrix
  product costs on this machine (small-M GEMM efficiency, reading every expert's weights);
  ``ours/experts`` is the cost of the routing around them.

Reports the median over repetitions with the min–max spread, and the ratios ours/floor,
experts/floor, loop/floor and dense/ours, both of the medians and of the minimums (on a
shared machine the minimum is the repetition least disturbed by other work). The repetitions of the variants are
interleaved, so a change in background load hits all of them alike. Before timing, the script
checks that ours, loop and dense give the same outputs (eval mode).

    python benchmarks/moe.py                    # d=512, H=1024, 4096 tokens, k=4, E=16,64,256
    python benchmarks/moe.py --skip-dense-above 256   # dense at E=256 too (slow, ~6 GB)
    python benchmarks/moe.py --quick            # a few seconds: smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodel.config import MoEConfig
from multimodel.layers.moe import MixtureOfExperts


class LoopMoE(MixtureOfExperts):
    """Baseline: the same layer, but a plain autograd Python loop over the non-empty experts."""

    def _experts(self, xs: Tensor, counts: list[int]) -> Tensor:
        chunks = xs.split(counts)  # E chunks of (count_e, D)
        w1, b1, w2, b2 = (p.unbind(0) for p in (self.w1, self.b1, self.w2, self.b2))
        ys = [
            torch.addmm(b2[e], F.relu(torch.addmm(b1[e], chunks[e], w1[e])), w2[e])
            for e in range(self.num_experts)
            if counts[e] > 0
        ]
        return torch.cat(ys) if ys else xs.new_zeros(0, xs.shape[1])


def dense_experts(moe: MixtureOfExperts, x: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: every expert on every token, weighted by the dense (N, E) gate matrix."""
    gates, experts, aux_loss = moe.gate(x)  # (N, K), (N, K), ()
    dense_gates = torch.zeros(x.shape[0], moe.num_experts).scatter(1, experts, gates)  # (N, E)
    out = torch.zeros_like(x)
    w1, b1, w2, b2 = (p.unbind(0) for p in (moe.w1, moe.b1, moe.w2, moe.b2))
    for e in range(moe.num_experts):
        y = torch.addmm(b2[e], F.relu(torch.addmm(b1[e], x, w1[e])), w2[e])  # (N, D)
        out = out + dense_gates[:, e : e + 1] * y
    return out, aux_loss


@torch.no_grad()
def check_agreement(moe: MixtureOfExperts, loop: LoopMoE, x: Tensor, dense: bool) -> float:
    """Max |difference| of ours vs. loop (and dense) at eval; raises if they disagree."""
    moe.eval(), loop.eval()
    try:
        ours = moe(x.unsqueeze(0))[0].squeeze(0)
        others = [loop(x.unsqueeze(0))[0].squeeze(0)]
        if dense:
            others.append(dense_experts(moe, x)[0])
    finally:
        moe.train(), loop.train()
    diff = max((ours - other).abs().max().item() for other in others)
    if diff > 1e-4 * max(1.0, ours.abs().max().item()):
        raise AssertionError(f"MoE variants disagree: max |diff| = {diff:.3g}")
    return diff


def median_spread(times: list[float]) -> str:
    med, low, high = (1e3 * v for v in (statistics.median(times), min(times), max(times)))
    digits = 0 if low >= 100 else 1
    return f"{med:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--experts", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--expert-hidden", type=int, default=1024)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per variant")
    parser.add_argument("--threads", type=int, default=None, help="default 2 (--quick: 1)")
    parser.add_argument(
        "--skip-dense-above",
        type=int,
        default=64,
        help="skip the dense reference for more experts than this (it costs E/k× the floor)",
    )
    parser.add_argument("--no-loop", action="store_true", help="skip the plain-loop baseline")
    parser.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="'thread' = CPU time of this thread, steadier on a shared machine (needs --threads 1)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.experts, args.tokens, args.d_model, args.expert_hidden = [4, 8], 64, 32, 64
        args.top_k, args.reps = 2, 1
    if args.threads is None:
        # Tiny ops on two OpenMP threads can stall for ms when the machine is busy.
        args.threads = 1 if args.quick or args.clock == "thread" else 2
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: use it with --threads 1")

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(threads_before)  # --quick runs inside the test process
    return 0


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    N, D, H, K = args.tokens, args.d_model, args.expert_hidden, args.top_k
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    print(
        f"MoE fwd+bwd, float32, {torch.get_num_threads()} threads, torch {torch.__version__}: "
        f"{N} tokens, d={D}, expert hidden={H}, k={K}; {args.clock}-clock time in ms, "
        f"median [min–max] of {args.reps} reps"
    )
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0") == "1"
    print(
        "allocator: "
        + (
            "THP_MEM_ALLOC_ENABLE=1 (huge pages for large tensors)"
            if thp
            else "default (fresh E·D·H gradient buffers are page-faulted in every step; "
            "THP_MEM_ALLOC_ENABLE=1 avoids most of that cost)"
        )
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = (
        f"{'E':>4} | {'floor':>20} | {'ours':>20} | {'experts':>20} | {'serial':>20} | "
        f"{'loop':>20} | {'dense':>24} | {'ours/floor':>11} | {'experts/floor':>13} | "
        f"{'serial/floor':>12} | {'loop/floor':>11} | {'dense/ours':>11}"
    )
    print("ratios: of the medians (of the minimums, the least disturbed repetitions)")
    print(header)
    print("-" * len(header))

    x = torch.randn(N, D, requires_grad=True)
    grad_out = torch.randn(N, D)
    floor = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, D))
    x_slots = torch.randn(N * K, D, requires_grad=True)
    grad_slots = torch.randn(N * K, D)

    for E in args.experts:
        moe = MixtureOfExperts(D, MoEConfig(num_experts=E, top_k=K, expert_hidden_size=H))
        # A random gate (logits of std ~1) plus the training noise: balanced, non-trivial routing.
        nn.init.normal_(moe.w_gate, std=D**-0.5)
        moe.train()
        loop = LoopMoE(D, moe.config).train()
        loop.load_state_dict(moe.state_dict())
        serial = MixtureOfExperts(D, replace(moe.config, parallel_experts=False)).train()
        serial.load_state_dict(moe.state_dict())

        def step(module: nn.Module, fn: Callable[[], tuple[Tensor, Tensor]]) -> float:
            x.grad = x_slots.grad = None
            module.zero_grad(set_to_none=True)
            start = clock()
            out, aux = fn()
            grad = grad_out if out.shape[0] == N else grad_slots
            torch.autograd.backward([out, aux], [grad, torch.ones_like(aux)])
            return clock() - start

        def run_ours() -> tuple[Tensor, Tensor]:
            out, aux, _ = moe(x.unsqueeze(0))  # (1, N, D)
            return out.squeeze(0), aux

        def run_serial() -> tuple[Tensor, Tensor]:
            out, aux, _ = serial(x.unsqueeze(0))  # (1, N, D)
            return out.squeeze(0), aux

        def run_loop() -> tuple[Tensor, Tensor]:
            out, aux, _ = loop(x.unsqueeze(0))  # (1, N, D)
            return out.squeeze(0), aux

        def run_floor() -> tuple[Tensor, Tensor]:
            return floor(x_slots), x_slots.new_zeros((), requires_grad=True)

        with torch.no_grad():
            _, routed, _ = moe.gate(x)  # (N, K): one routing of the training gate, noise included
        counts = torch.bincount(routed.reshape(-1), minlength=E).tolist()

        def run_experts() -> tuple[Tensor, Tensor]:
            return moe._experts(x_slots, counts), x_slots.new_zeros((), requires_grad=True)

        variants: dict[str, Callable[[], float]] = {
            "floor": lambda: step(floor, run_floor),
            "ours": lambda: step(moe, run_ours),
            "experts": lambda: step(moe, run_experts),
            "serial": lambda: step(serial, run_serial),
        }
        if not args.no_loop:
            variants["loop"] = lambda: step(loop, run_loop)
        dense_on = E <= args.skip_dense_above
        dense_reps = max(1, round(args.reps * 16 / E)) if dense_on else 0
        if dense_on:
            variants["dense"] = lambda: step(moe, lambda: dense_experts(moe, x))

        max_diff = check_agreement(moe, loop, x.detach(), dense_on)

        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, run in variants.items():  # warm-up (allocator, MKL packing buffers)
            if name != "dense" or E <= 16:
                run()
        for rep in range(args.reps):
            names = list(variants)
            names = names[rep % len(names) :] + names[: rep % len(names)]  # rotate the order
            for name in names:
                if name == "dense" and rep >= dense_reps:
                    continue
                times[name].append(variants[name]())

        med = {name: statistics.median(t) for name, t in times.items()}
        low = {name: min(t) for name, t in times.items()}

        def ratio(a: str, b: str, digits: int = 2) -> str:
            if a not in med or b not in med:
                return "—"
            return f"{med[a] / med[b]:.{digits}f} ({low[a] / low[b]:.{digits}f})"

        cell = {name: median_spread(t) for name, t in times.items()}
        dense_cell = f"{cell['dense']} ({dense_reps}×)" if dense_on else "skipped"
        print(
            f"{E:>4} | {cell['floor']:>20} | {cell['ours']:>20} | {cell['experts']:>20} | "
            f"{cell['serial']:>20} | {cell.get('loop', '—'):>20} | {dense_cell:>24} | "
            f"{ratio('ours', 'floor'):>11} | {ratio('experts', 'floor'):>13} | "
            f"{ratio('serial', 'floor'):>12} | {ratio('loop', 'floor'):>11} | "
            f"{ratio('dense', 'ours', 1):>11}   (outputs agree to {max_diff:.1e})",
            flush=True,
        )
        del moe, serial, loop
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())

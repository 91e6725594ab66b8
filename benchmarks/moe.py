"""Mixture-of-experts layer speed: ours vs. the public ports' dispatch vs. the compute floor.

Times one forward + backward pass (training mode, gate noise on, gradients for the input and
every parameter) of:

* ``floor`` — the compute floor: one expert-sized MLP (two ``nn.Linear``) run once over all
  N·K token-slots, i.e. the experts' arithmetic with no routing and one weight matrix;
* ``ours`` — :class:`multimodel.layers.moe.MixtureOfExperts` as the model runs it (sort the
  slots by expert once, one fused autograd node for all experts with one matrix product per
  expert, gather back);
* ``padded`` — ours with the other expert kernel (``experts_kernel="padded"``): batched
  products over all experts padded to the busiest one's rows;
* ``peer`` — the original's dispatch scheme as users of the public ports run it, written
  here from its description: for each expert, gather the tokens routed to it, run that
  expert (an ``nn.Linear`` → ReLU → ``nn.Linear`` module of its own), scatter-add the gated
  outputs back. Routing and balancing loss are our layer's gate (same weights), so the
  comparison is of the dispatch and the experts;
* ``dense`` — every expert on every token, mixed with the (mostly zero) gate matrix.

Prints, per number of experts E, the median over repetitions with the min–max spread of each
variant, and the ratios ours/floor, ours/peer, padded/floor and dense/ours,
of the medians and (in parentheses) of the minimums (on a shared machine the minimum is the
repetition least disturbed by other work). The repetitions of the variants are interleaved
and their order rotates, so a change in background load hits all of them alike. Before
timing, the script checks that every variant gives the same outputs (eval mode).

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodel.config import MoEConfig
from multimodel.layers.moe import MixtureOfExperts


class PeerMoE(nn.Module):
    """The public ports' dispatch: a loop over experts, each gathering its tokens, running its
    own ``nn.Sequential`` MLP and scatter-adding its gated outputs into the result.

    Args:
        moe: the layer whose gate and expert weights this one copies.
    """

    def __init__(self, moe: MixtureOfExperts) -> None:
        super().__init__()
        D, E, H = moe.hidden_size, moe.num_experts, moe.config.expert_hidden_size
        # A gate of our layer's (same routing and loss) without a second copy of the experts.
        self.router = MixtureOfExperts(D, MoEConfig(num_experts=E, top_k=moe.top_k, expert_hidden_size=1))
        self.router.load_state_dict({**self.router.state_dict(), "w_gate": moe.w_gate, "w_noise": moe.w_noise})
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, D)) for _ in range(E))
        with torch.no_grad():
            for e, expert in enumerate(self.experts):
                expert[0].weight.copy_(moe.w1[e].t())
                expert[0].bias.copy_(moe.b1[e])
                expert[2].weight.copy_(moe.w2[e].t())
                expert[2].bias.copy_(moe.b2[e])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, D) -> (out (N, D), aux loss)."""
        gates, experts, aux_loss = self.router.gate(x)  # (N, K), (N, K), ()
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, k = (experts == e).nonzero(as_tuple=True)  # the slots routed to expert e
            if token.numel():
                out.index_add_(0, token, gates[token, k].unsqueeze(1) * expert(x[token]))
        return out, aux_loss


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
def check_agreement(moe: MixtureOfExperts, peer: PeerMoE, x: Tensor, dense: bool) -> float:
    """Max |difference| between the variants' outputs at eval; raises if they disagree."""
    moe.eval(), peer.eval()
    try:
        outputs = []
        for kernel in ("per_expert", "padded"):
            moe.experts_kernel = kernel
            outputs.append(moe(x.unsqueeze(0))[0].squeeze(0))
        moe.experts_kernel = "per_expert"
        outputs.append(peer(x)[0])
        if dense:
            outputs.append(dense_experts(moe, x)[0])
    finally:
        moe.train(), peer.train()
    ours = outputs[0]
    diff = max((ours - other).abs().max().item() for other in outputs[1:])
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
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=["floor", "ours", "peer", "padded", "dense"],
        help="time only these variants (the floor is always timed)",
    )
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
    columns = ["floor", "ours", "peer", "padded", "dense"]
    ratios = [("ours", "floor"), ("ours", "peer"), ("padded", "floor"), ("dense", "ours")]
    header = (
        f"{'E':>4} | "
        + " | ".join(f"{name:>22}" for name in columns)
        + " | "
        + " | ".join(f"{a + '/' + b:>17}" for a, b in ratios)
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
        peer = PeerMoE(moe).train()

        def step(module: nn.Module, fn: Callable[[], tuple[Tensor, Tensor]]) -> float:
            x.grad = x_slots.grad = None
            module.zero_grad(set_to_none=True)
            start = clock()
            out, aux = fn()
            grad = grad_out if out.shape[0] == N else grad_slots
            torch.autograd.backward([out, aux], [grad, torch.ones_like(aux)])
            return clock() - start

        def run_ours(kernel: str) -> tuple[Tensor, Tensor]:
            moe.experts_kernel = kernel
            out, aux, _ = moe(x.unsqueeze(0))  # (1, N, D)
            return out.squeeze(0), aux

        def run_floor() -> tuple[Tensor, Tensor]:
            return floor(x_slots), x_slots.new_zeros((), requires_grad=True)

        variants: dict[str, Callable[[], float]] = {
            "floor": lambda: step(floor, run_floor),
            "ours": lambda: step(moe, lambda: run_ours("per_expert")),
            "peer": lambda: step(peer, lambda: peer(x)),
            "padded": lambda: step(moe, lambda: run_ours("padded")),
        }
        dense_on = E <= args.skip_dense_above
        dense_reps = max(1, round(args.reps * 16 / E)) if dense_on else 0
        if dense_on:
            variants["dense"] = lambda: step(moe, lambda: dense_experts(moe, x))
        if args.only:
            variants = {name: run for name, run in variants.items() if name in args.only or name == "floor"}

        max_diff = check_agreement(moe, peer, x.detach(), dense_on)

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

        def ratio(a: str, b: str) -> str:
            if a not in med or b not in med:
                return "—"
            digits = 1 if a == "dense" else 2
            return f"{med[a] / med[b]:.{digits}f} ({low[a] / low[b]:.{digits}f})"

        cell = {name: median_spread(t) for name, t in times.items()}
        if "dense" in cell:
            cell["dense"] = f"{cell['dense']} ({dense_reps}×)"
        elif not dense_on:
            cell["dense"] = "skipped"
        print(
            f"{E:>4} | "
            + " | ".join(f"{cell.get(name, '—'):>22}" for name in columns)
            + " | "
            + " | ".join(f"{ratio(a, b):>17}" for a, b in ratios)
            + f"   (outputs agree to {max_diff:.1e})",
            flush=True,
        )
        del moe, peer
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())

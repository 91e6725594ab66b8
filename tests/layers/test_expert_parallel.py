"""Expert parallelism (layers/expert_parallel.py): two CPU ranks (gloo) that each hold half of
the experts compute what one process holding all of them computes for the same rows.

The reference runs the whole layer once per rank's rows (as data parallelism would: a capacity
limit applies to each call's own slots). Each rank must then get its rows' outputs and input
gradients, the full gradient of the experts it holds (its tokens' and the other rank's, brought
back through the reverse all-to-all) and its rows' share of the gate's gradient. Tolerance:
float32 rounding (1e-6); the same sums in a different order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from torchrun import torchrun

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the cases, shared with the worker

from expert_parallel_cases import CASES, case_inputs, make_layer  # noqa: E402

# Two gloo processes per module (like the DDP test): `make test-slow`, which CI runs too.
pytestmark = pytest.mark.slow

WORKER = Path(__file__).resolve().parent / "expert_parallel_worker.py"
WORLD = 2
EXPERTS = ("w1", "b1", "w2", "b2")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("expert_parallel")
    done = torchrun([str(WORKER), str(out)], ranks=WORLD)
    assert done.returncode == 0, done.stdout + done.stderr
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def reference(case: str):
    """Per rank: output and input gradient of the whole layer on that rank's rows; the layer's
    gradients summed over the ranks' calls."""
    moe = make_layer(case)
    x, mask, weight = case_inputs(case, WORLD)
    outs, grads_x, tokens = [], [], []
    for r in range(WORLD):
        mine = x[r::WORLD].clone().requires_grad_()
        y, _, stats = moe(mine, mask[r::WORLD])
        if y.requires_grad:  # not for rows that are all padding: nothing reaches an expert
            (y * weight[r::WORLD]).sum().backward()
        outs.append(y.detach())
        grads_x.append(torch.zeros_like(mine) if mine.grad is None else mine.grad)
        tokens.append(stats.tokens_per_expert)
    return outs, grads_x, {n: p.grad for n, p in moe.named_parameters()}, tokens


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_with_half_the_experts_each_match_one_process(ranks, case):
    outs, grads_x, grads, tokens = reference(case)
    local = 4 // WORLD
    for r, result in enumerate(ranks):
        got = result[case]
        torch.testing.assert_close(got["out"], outs[r], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got["grad_x"], grads_x[r], atol=1e-6, rtol=1e-6)
        assert torch.equal(got["tokens_per_expert"], tokens[r])  # routing statistics count every expert
        for name in EXPERTS:  # this rank's experts: the gradient of every rank's tokens
            torch.testing.assert_close(got["grads"][name], grads[name][r * local:(r + 1) * local], atol=1e-6,
                                       rtol=1e-6, msg=f"rank {r} {name}")
    for name in ("w_gate",):  # replicated: each rank holds its rows' share (no noise: w_noise gets none)
        total = sum(result[case]["grads"][name] for result in ranks if result[case]["grads"][name] is not None)
        torch.testing.assert_close(total, grads[name], atol=1e-6, rtol=1e-6, msg=name)


def test_the_exchange_reads_only_the_gathered_expert_counts_on_the_host(ranks):
    """One host read per call, in the dispatch: every rank's per-expert counts, which size the
    experts' products and the all-to-all's splits (tests/training/test_step.py allows it)."""
    for result in ranks:
        for case in CASES:
            assert result[case]["reads"] == ["layers/moe.py:_dispatch"], (case, result[case]["reads"])

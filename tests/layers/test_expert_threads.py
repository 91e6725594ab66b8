"""The CPU pool that runs experts side by side (layers/expert_threads.py)."""

from __future__ import annotations

import pytest
import torch

from multimodel.layers.expert_threads import balanced_groups, expert_threads


def test_balanced_groups_split_the_work_evenly_and_keep_every_item():
    weights = [64, 0, 90, 37, 55, 70, 41, 0, 88, 60]
    groups = balanced_groups(range(len(weights)), weights, 3)
    flat = sorted(i for group in groups for i in group)
    assert flat == [i for i, w in enumerate(weights) if w > 0]  # each non-empty item once
    totals = [sum(weights[i] for i in group) for group in groups]
    assert max(totals) - min(totals) <= max(weights)  # greedy LPT bound
    assert balanced_groups(range(3), [5, 0, 0], 4) == [[0]]  # empty groups dropped


def test_expert_threads_off_with_one_intra_op_thread(one_thread):
    assert expert_threads() is None


def test_pool_runs_every_group_and_reraises_worker_errors(two_threads):
    pool = expert_threads()
    if pool is None:
        pytest.skip("this torch build has no per-thread MKL/OpenMP control")
    seen: list[int] = []
    pool.run(seen.extend, [[0, 1], [2], [3, 4]])
    assert sorted(seen) == [0, 1, 2, 3, 4]

    def fail(group):
        raise ValueError(f"expert group {group}")

    with pytest.raises(ValueError, match="expert group"):
        pool.run(fail, [[0], [1]])


def test_no_pool_under_a_dispatch_mode_so_flops_are_counted(two_threads):
    """Modes are per thread: under FlopCounterMode the experts must stay on this thread."""
    from torch.utils.flop_counter import FlopCounterMode

    from multimodel.config import MoEConfig
    from multimodel.layers.moe import MixtureOfExperts

    if expert_threads() is None:
        pytest.skip("this torch build has no per-thread MKL/OpenMP control")
    E, D, H, N, K = 8, 16, 32, 64, 2
    moe = MixtureOfExperts(D, MoEConfig(num_experts=E, top_k=K, expert_hidden_size=H)).eval()
    x = torch.randn(1, N, D)
    with FlopCounterMode(display=False) as counter:
        assert expert_threads() is None
        moe(x)
    # The experts alone: two matmuls per token-slot, 2·D·H multiply-adds each.
    assert counter.get_total_flops() >= N * K * 2 * (2 * D * H)

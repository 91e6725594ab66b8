"""One rank of tests/layers/test_expert_parallel.py (started by torchrun; not a test itself).

Every rank builds the same MoE layer and the same global batch from one seed, keeps its share
of the experts, runs its rows of the batch forward and backward, and saves what it got (output,
input gradient, its expert and gate gradients, the host reads of the call) to
``<out>/rank<r>.pt``.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: host_reads

from host_reads import count_host_reads  # noqa: E402
from multimodel.layers.expert_parallel import ExpertShard  # noqa: E402
from multimodel.layers.moe import MixtureOfExperts  # noqa: E402

from expert_parallel_cases import CASES, case_inputs, make_layer  # noqa: E402


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    group, _ = dist.new_subgroups_by_enumeration([list(range(world))])
    results = {}
    for name in CASES:
        moe: MixtureOfExperts = make_layer(name)
        x, mask, weight = case_inputs(name, world)
        moe.shard_experts(ExpertShard(group, rank, world, moe.num_experts))
        mine = x[rank::world].clone().requires_grad_()
        with count_host_reads() as reads:
            y, _, stats = moe(mine, mask[rank::world])
            (y * weight[rank::world]).sum().backward()
        results[name] = {
            "out": y.detach(), "grad_x": mine.grad,
            "grads": {n: p.grad for n, p in moe.named_parameters()},
            "tokens_per_expert": stats.tokens_per_expert,
            "reads": [r.where for r in reads.in_package()],
        }
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

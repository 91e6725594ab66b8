"""torchrun + DDP on CPU (gloo): two ranks stay in sync and match one process with the same
global batch.

Tolerance: float32 sums of gradients are taken in a different order (two half-batch means
averaged vs. one full-batch mean), so weights agree to ~1e-6 relative, not bit for bit; we
check 1e-4 absolute after 12 Adam steps. Dropout and MoE noise are off in this comparison
because their random draws depend on the per-rank batch shape. The MoE balancing loss is on:
its importance and load are summed over ranks, so it equals the single-process loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multimodel.training import checkpoint as ckpt
from torchrun import run, torchrun  # tests/ is on sys.path (conftest.py)

COMMON = ["data.tasks=digits,numbers_en_de", "data.train_size=64", "train.steps=12", "train.checkpoint_every=6",
          "model.dropout=0.0", "model.moe.noisy_gating=false", "train.warmup_steps=4"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.resolve_checkpoint(run_dir) / "model.safetensors"))


@pytest.mark.slow
def test_two_cpu_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    data = f"data.data_dir={str(tmp_path / 'data')!r}"
    single = run([sys.executable, "-m", "multimodel", "train", "--config", "tiny", "--run-dir", str(tmp_path / "one"),
                  "--no-eval", "--no-progress", data, "data.batch_size=8", *COMMON])
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = torchrun(["-m", "multimodel", "train", "--config", "tiny", "--run-dir", str(tmp_path / "two"), "--no-eval",
                    "--no-progress", data, "data.batch_size=4", *COMMON], ranks=2)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert "world size 2" in ddp.stdout
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=0, msg=k)
    # Rank 0 wrote the routing statistics reduced over both ranks: as many tokens as one process.
    r1 = json.loads((tmp_path / "one" / "routing.json").read_text())
    r2 = json.loads((tmp_path / "two" / "routing.json").read_text())
    for task in r1:
        for layer in r1[task]:
            assert r2[task][layer]["token_slots"] == pytest.approx(r1[task][layer]["token_slots"])

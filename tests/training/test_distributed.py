"""torchrun + DDP on CPU (gloo): two ranks stay in sync and match one process with the same
global batch.

Tolerance: float32 sums of gradients are taken in a different order (two half-batch means
averaged vs. one full-batch mean), so weights agree to ~1e-6 relative, not bit for bit; we
check 1e-4 absolute after 12 Adam steps. Dropout and MoE noise are off in this comparison
because their random draws depend on the per-rank batch shape. The MoE balancing loss is on:
its importance and load are summed over ranks, so it equals the single-process loss.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multimodel.training import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
COMMON = ["data.tasks=digits,numbers_en_de", "data.train_size=64", "train.steps=12", "train.checkpoint_every=6",
          "model.dropout=0.0", "model.moe.noisy_gating=false", "train.warmup_steps=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; past ``timeout``, kill the whole group and fail.

    ``subprocess.run(timeout=...)`` kills only the process it started: torchrun's rank processes
    would live on. Killing the group takes them too.
    """
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, signal.SIGKILL)  # a new session's group id is its leader's pid

    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group()
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} ran past {timeout} s; killed its process group\n{stdout}{stderr}")
    except BaseException:  # e.g. Ctrl-C on pytest: leave no ranks behind either
        kill_group()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.resolve_checkpoint(run) / "model.safetensors"))


@pytest.mark.slow
def test_two_cpu_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    data = f"data.data_dir={str(tmp_path / 'data')!r}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = _run(
        [sys.executable, "-m", "multimodel", "train", "--config", "configs/tiny.py", "--run-dir",
         str(tmp_path / "one"), "--no-eval", "--no-progress", data, "data.batch_size=8", *COMMON], env)
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "multimodel", "train", "--config", "configs/tiny.py",
         "--run-dir", str(tmp_path / "two"), "--no-eval", "--no-progress", data, "data.batch_size=4", *COMMON],
        env)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert "world size 2" in ddp.stdout
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=0, msg=k)
    # Rank 0 wrote the routing statistics reduced over both ranks: as many tokens as one process.
    import json

    r1 = json.loads((tmp_path / "one" / "routing.json").read_text())
    r2 = json.loads((tmp_path / "two" / "routing.json").read_text())
    for task in r1:
        for layer in r1[task]:
            assert r2[task][layer]["token_slots"] == pytest.approx(r1[task][layer]["token_slots"])

"""The parallel layouts under torchrun on CPU (gloo), against one process with the same global
batch: expert parallelism (2 ranks; 2 expert-parallel × 2 data-parallel ranks), FSDP2 with
expert parallelism, and checkpoints that do not depend on the layout (saved on 2 ranks,
resumed on 1; saved by one process, resumed on 2 ranks).

Tolerance: 1e-4 absolute on every weight after 10 Adam steps, as for plain DDP
(tests/training/test_distributed.py): the ranks sum the same float32 terms in another order
(two half-batch losses, the experts' gradients from two ranks, the gradient norm from pieces),
so the weights agree to ~1e-6, not bit for bit. Dropout and gate noise are off because their
draws depend on each rank's batch shape; the MoE balancing loss is on (summed over ranks).

Resuming is exact where the arithmetic is the same: a one-process run resumed from a checkpoint
written by two ranks starts from exactly the saved weights and optimiser state (bit for bit),
and then continues within the tolerance above of the run that never stopped.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multimodel.config import ConfigError, load_config
from multimodel.pretrained import load_pretrained
from multimodel.training import checkpoint as ckpt
from multimodel.training.distributed import DistInfo
from multimodel.training.layout import check_layout
from multimodel.training.train import TrainingError, _check_resume_config, setup, take_step, train
from torchrun import torchrun

STEPS = 10
COMMON = ["data.tasks=digits,numbers_en_de", "data.train_size=64", f"train.steps={STEPS}", "train.checkpoint_every=5",
          "train.keep_checkpoints=4", "model.dropout=0.0", "model.moe.noisy_gating=false", "train.warmup_steps=4"]
QUIET = lambda _m: None  # noqa: E731


def _data(root: Path) -> str:
    return f"data.data_dir={str(root / 'data')!r}"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parallel")


@pytest.fixture(scope="module")
def single(root) -> Path:
    """The reference: one process, global batch 8, 10 steps (checkpoints at 5 and 10)."""
    run = root / "one"
    train(load_config("tiny", [_data(root), "data.batch_size=8", *COMMON]), run, log=QUIET, progress=False)
    return run


def _ranks(root: Path, name: str, ranks: int, *overrides: str) -> Path:
    run = root / name
    done = torchrun(["-m", "multimodel", "train", "--config", "tiny", "--run-dir", str(run), "--no-eval",
                     "--no-progress", _data(root), f"data.batch_size={8 // ranks}", *COMMON, *overrides], ranks)
    assert done.returncode == 0, done.stdout + done.stderr
    return run


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-4, rtol=0, msg=k)


def _step(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}"


@pytest.mark.slow  # 11 s of process start-up and gloo; run by `make test-slow` (CI runs both)
def test_two_ranks_with_half_the_experts_each_match_one_process_and_resume_on_one(single, root, tmp_path):
    two = _ranks(root, "expert-parallel", 2, "train.expert_parallel=2")
    _assert_close(_weights(_step(two, STEPS)), _weights(_step(single, STEPS)))
    r1, r2 = (json.loads((run / "routing.json").read_text()) for run in (single, two))
    for task in r1:  # the routing statistics are global: as many slots per expert as one process
        for layer in r1[task]:
            assert r2[task][layer]["token_slots"] == pytest.approx(r1[task][layer]["token_slots"])

    # The checkpoint is the whole model: one CPU loads it, all 4 experts.
    loaded = load_pretrained(_step(two, 5))
    assert loaded.model.encoder.moe.experts.w1.shape[0] == 4

    # One process resumes it: exactly the saved weights and optimiser state, then the same run.
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(_step(two, 5), _step(run, 5))
    state = setup(load_config("tiny", [_data(root), "data.batch_size=8", *COMMON]), run, resume=True, log=QUIET)
    saved = _weights(_step(two, 5))
    assert all(torch.equal(v, saved[k]) for k, v in state.model.state_dict().items() if k in saved)
    saved_optimizer = ckpt.load_training_state(_step(two, 5))["optimizer"]["state"]
    for index, entry in state.optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, saved_optimizer[index][key]), (index, key)
    while state.step < STEPS:
        take_step(state)
    resumed = {k: v.detach() for k, v in state.model.state_dict().items()}
    _assert_close({k: resumed[k] for k in saved}, _weights(_step(single, STEPS)))


@pytest.mark.slow
def test_a_one_process_checkpoint_resumed_on_two_ranks_continues_the_same_run(single, root):
    # The other way round: one process's checkpoint at step 5, two data-parallel ranks with half
    # the batch each from there. Same global batches, so the weights at step 10 are the run's.
    run = root / "resumed-on-two"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(_step(single, 5), _step(run, 5))
    # No --config: the checkpoint's config rules, its batch of 8 split over the two ranks.
    done = torchrun(["-m", "multimodel", "train", "--run-dir", str(run), "--resume", "--no-eval", "--no-progress"], 2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "data.batch_size 8 -> 4 per rank" in done.stdout
    _assert_close(_weights(_step(run, STEPS)), _weights(_step(single, STEPS)))
    got, want = (ckpt.load_training_state(_step(r, STEPS))["scheduler"] for r in (run, single))
    assert got == want


@pytest.mark.slow
def test_four_ranks_two_expert_parallel_times_two_data_parallel_match_one_process(single, root):
    four = _ranks(root, "ep2-dp2", 4, "train.expert_parallel=2")
    _assert_close(_weights(_step(four, STEPS)), _weights(_step(single, STEPS)))


@pytest.mark.slow
def test_fsdp_with_expert_parallelism_matches_one_process_and_saves_its_optimiser_state(single, root):
    """FSDP2 runs on CPU with gloo (torch 2.13): dense parameters sharded, experts split."""
    run = _ranks(root, "fsdp-ep", 2, "train.expert_parallel=2", "train.shard=fsdp")
    _assert_close(_weights(_step(run, STEPS)), _weights(_step(single, STEPS)))
    got, want = (ckpt.load_training_state(_step(r, STEPS)) for r in (run, single))
    assert got["scheduler"] == want["scheduler"]
    assert [g["params"] for g in got["optimizer"]["param_groups"]] == [g["params"] for g in want["optimizer"]["param_groups"]]
    for index, entry in want["optimizer"]["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(got["optimizer"]["state"][index][key], value, atol=1e-4, rtol=0)


def test_the_layout_must_fit_the_world_and_the_experts():
    cfg = load_config("tiny", ["train.expert_parallel=2"]).train
    with pytest.raises(ConfigError, match="divide the number of ranks"):
        check_layout(cfg, DistInfo(rank=0, world_size=3), num_experts=4)
    with pytest.raises(ConfigError, match="divide model.moe.num_experts"):
        check_layout(cfg, DistInfo(rank=0, world_size=2), num_experts=5)
    check_layout(cfg, DistInfo(rank=0, world_size=4), num_experts=4)
    for bad in ("train.expert_parallel=0", "train.shard=zero3", "train.precision=fp16"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config("tiny", [bad])


def test_a_run_resumed_on_another_number_of_ranks_keeps_the_global_batch():
    said = []
    saved = load_config("tiny", ["data.batch_size=4", "train.expert_parallel=2"])  # written by 2 ranks
    resumed = _check_resume_config(saved, None, saved_world=2, world=1, log=said.append)
    assert (resumed.data.batch_size, resumed.train.expert_parallel) == (8, 1) and len(said) == 2
    assert _check_resume_config(saved, load_config("tiny", ["data.batch_size=8"]), 2, 1, QUIET).data.batch_size == 8
    assert _check_resume_config(saved, None, 2, 4, QUIET).data.batch_size == 2
    with pytest.raises(TrainingError, match="global batch of 6"):
        _check_resume_config(saved, load_config("tiny", ["data.batch_size=6"]), 2, 1, QUIET)
    assert _check_resume_config(saved, None, None, 4, QUIET).data.batch_size == 4  # world size not kept then


def test_a_run_resumed_on_another_number_of_ranks_keeps_each_tasks_global_batch():
    TASKS = "data.tasks=digits,numbers_en_de"
    saved = load_config("tiny", [TASKS, "data.batch_size=4", "data.task_batch_sizes={'digits': 6}"])  # written by 2 ranks
    resumed = _check_resume_config(saved, None, saved_world=2, world=1, log=QUIET)
    assert (resumed.data.batch_size, resumed.data.task_batch_sizes) == (8, {"digits": 12})
    given = load_config("tiny", [TASKS, "data.batch_size=8", "data.task_batch_sizes={'digits': 12}"])
    assert _check_resume_config(saved, given, 2, 1, QUIET).data.task_batch_sizes == {"digits": 12}
    assert _check_resume_config(saved, None, 2, 4, QUIET).data.task_batch_sizes == {"digits": 3}
    with pytest.raises(TrainingError, match=r"data.task_batch_sizes.digits=5 on 4 rank\(s\) is a global batch of 20"):
        _check_resume_config(saved, load_config("tiny", [TASKS, "data.batch_size=2", "data.task_batch_sizes={'digits': 5}"]),
                             2, 4, QUIET)
    with pytest.raises(TrainingError, match=r"data.task_batch_sizes.digits=4 on 2 rank\(s\) is a global batch of 8"):
        _check_resume_config(saved, load_config("tiny", [TASKS, "data.batch_size=4"]), 2, 2, QUIET)
    # The effective sizes are compared, not the lists: digits listed at data.batch_size is the same run.
    plain = load_config("tiny", [TASKS, "data.batch_size=4"])
    same = load_config("tiny", [TASKS, "data.batch_size=4", "data.task_batch_sizes={'digits': 4}"])
    assert _check_resume_config(plain, same, 2, 2, QUIET).data.task_batch_sizes == {}
    assert _check_resume_config(same, plain, 2, 1, QUIET).data == _check_resume_config(plain, None, 2, 1, QUIET).data
    # A task the run does not train may list any size: it is dropped, not rescaled.
    other = load_config("tiny", [TASKS, "data.batch_size=4", "data.task_batch_sizes={'speech_numbers': 3}"])
    assert _check_resume_config(other, None, 2, 1, QUIET).data.task_batch_sizes == {}



def test_a_resume_that_changes_the_decoding_at_evaluation_says_so():
    said = []
    saved = load_config("tiny", ["train.beam_size=1"])
    assert _check_resume_config(saved, load_config("tiny"), log=said.append).train.beam_size == 4
    assert len(said) == 1 and "train.beam_size 1 -> 4" in said[0] and "not comparable" in said[0]
    said.clear()
    _check_resume_config(saved, load_config("tiny", ["train.beam_size=1", "train.steps=99"]), log=said.append)
    assert not said


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

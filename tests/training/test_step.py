"""The shared training step: the same update as a plain reference step, skipped updates leave
everything alone, and no host reads between log lines beyond the MoE's dropless dispatch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from host_reads import count_host_reads  # tests/ is on sys.path (conftest.py)
from multimodel.config import load_config
from multimodel.training.optim import build_optimizer
from multimodel.training.step import train_step
from multimodel.training.train import setup, take_step

QUIET = lambda _m: None  # noqa: E731


def tiny(tmp_path: Path, *overrides: str):
    return load_config("tiny", [f"data.data_dir={str(tmp_path / 'data')!r}", *overrides])


@pytest.fixture
def state(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=digits,numbers_fr_en,speech_numbers", "data.train_size=16",
               "data.batch_size=4", "model.dropout=0.0")
    return setup(cfg, tmp_path / "run", log=QUIET)


def _batch(state, name):
    td = state.task_data[name]
    return state.streams[name].next_batch(), td.task.model_kwargs


def test_train_step_takes_the_plain_reference_step(state):
    """forward → loss + balancing loss → backward → clip → Adam → schedule, written out."""
    model = state.model
    reference = copy.deepcopy(model)
    ref_opt, ref_sched = build_optimizer(reference, state.cfg.train)
    batch, kwargs = _batch(state, "numbers_fr_en")
    torch.manual_seed(5)
    stats = train_step(model, state.optimizer, state.scheduler, batch, kwargs, grad_clip=state.cfg.train.grad_clip)
    torch.manual_seed(5)
    out = reference(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
    (out.loss.loss + out.aux_loss).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), state.cfg.train.grad_clip)
    ref_opt.step()
    ref_sched.step()
    assert float(stats.skipped) == 0.0 and torch.equal(stats.loss, out.loss.loss.detach())
    assert float(stats.count) == float(batch.target_mask.sum())
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert state.scheduler.get_last_lr() == ref_sched.get_last_lr()


def test_a_loss_multiplier_scales_the_gradient_and_leaves_the_reported_loss_alone(state):
    """train.loss_multipliers: the backward sees factor × loss; the statistics report the loss
    itself and the gradient norm before clipping, which the factor scales."""
    model = state.model
    reference = copy.deepcopy(model)
    batch, kwargs = _batch(state, "numbers_fr_en")
    torch.manual_seed(5)
    stats = train_step(model, state.optimizer, state.scheduler, batch, kwargs, grad_clip=1e9, loss_multiplier=0.25)
    torch.manual_seed(5)
    out = reference(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
    (0.25 * out.loss.loss + out.aux_loss).backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1e9)
    torch.testing.assert_close(stats.loss, out.loss.loss.detach())
    torch.testing.assert_close(stats.grad_norm, norm, rtol=1e-5, atol=1e-7)
    torch.manual_seed(5)
    plain = copy.deepcopy(reference)
    plain.zero_grad(set_to_none=True)
    out = plain(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
    (out.loss.loss + out.aux_loss).backward()
    assert float(torch.nn.utils.clip_grad_norm_(plain.parameters(), 1e9)) > 2 * float(norm)


@pytest.mark.parametrize("multiplier", [1e-3, 1e3])
def test_normalize_gradients_gives_adam_a_unit_norm_gradient_small_or_large(state, multiplier):
    """train.normalize_gradients: a gradient of any global norm, far below or far above the
    clipping threshold, reaches Adam rescaled to norm 1."""
    model = state.model
    first, kwargs = _batch(state, "digits")
    train_step(model, state.optimizer, None, first, kwargs, grad_clip=2.0)  # Adam's moments now weigh a scale
    reference = copy.deepcopy(model)
    ref_opt, _ = build_optimizer(reference, state.cfg.train)
    ref_opt.load_state_dict(copy.deepcopy(state.optimizer.state_dict()))  # not the same moment tensors
    batch, kwargs = _batch(state, "numbers_fr_en")
    torch.manual_seed(5)
    stats = train_step(model, state.optimizer, None, batch, kwargs, grad_clip=2.0, loss_multiplier=multiplier,
                       normalize_gradients=True)
    torch.manual_seed(5)
    out = reference(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **kwargs)
    (multiplier * out.loss.loss + out.aux_loss).backward()
    grads = [p.grad for p in reference.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert (float(norm) < 0.5) if multiplier < 1 else (float(norm) > 4.0)  # both sides of grad_clip
    torch.testing.assert_close(stats.grad_norm, norm, rtol=1e-5, atol=1e-9)
    for g in grads:
        g.div_(norm)
    ref_opt.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_non_finite_gradient_skips_the_update_and_keeps_the_optimiser_state(state):
    batch, kwargs = _batch(state, "digits")
    train_step(state.model, state.optimizer, state.scheduler, batch, kwargs, grad_clip=1.0)  # Adam has state
    before = copy.deepcopy(state.model.state_dict())
    optimiser_before = copy.deepcopy(state.optimizer.state_dict())
    name, param = next((n, p) for n, p in state.model.named_parameters() if n.startswith("encoder."))  # all use it
    hook = param.register_hook(lambda g: g * float("inf"))
    stats = train_step(state.model, state.optimizer, state.scheduler, batch, kwargs, grad_clip=1.0)
    hook.remove()
    assert float(stats.skipped) == 1.0
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    saved = state.optimizer.state_dict()["state"]
    for index, entry in optimiser_before["state"].items():
        for key, value in entry.items():
            assert torch.equal(saved[index][key], value), (index, key)
    assert all(p.grad is None for p in state.model.parameters())
    stats = train_step(state.model, state.optimizer, state.scheduler, batch, kwargs, grad_clip=1.0)
    assert float(stats.skipped) == 0.0 and not torch.equal(param, before[name])  # the next step updates


#: The one host read a training step makes: the MoE's dropless dispatch needs each expert's
#: token count on the host to split the tokens into per-expert blocks.
#: With expert parallelism (``train.expert_parallel``) the same read, in the same place
#: (``layers/moe.py:_dispatch``), takes every rank's counts, gathered just before it: they size
#: the all-to-all's splits too. It stays the only one: tests/layers/test_expert_parallel.py
#: checks that on two ranks.
ALLOWED_READS = {"layers/moe.py"}


def test_a_step_between_log_lines_reads_nothing_on_the_host_but_the_moes_expert_sizes(state):
    """Every kind of task (image → class, audio → text, text → text) through the trainer's own
    step bookkeeping: meters, routing totals, skipped-step counters all stay on the device."""
    for _ in range(3):  # warm: first calls may initialise lazily
        take_step(state)
    with count_host_reads() as reads:
        for _ in range(12):
            take_step(state)
    names = {state.sampler.task_at(s) for s in range(3, 15)}
    assert len(names) == 3, names  # the 12 steps covered every task kind
    own = [r for r in reads.in_package() if not r.file.startswith(("data/", "corpora/"))]  # host-side batching
    unexpected = [str(r) for r in own if r.file not in ALLOWED_READS]
    assert not unexpected, unexpected


def test_each_task_trains_on_batches_of_its_own_size(tmp_path):
    """data.task_batch_sizes: the listed task's batches hold that many examples, the others
    data.batch_size; the steps train on them (a classification target per example)."""
    state = setup(tiny(tmp_path, "data.tasks=digits,numbers_fr_en", "data.train_size=32", "data.batch_size=4",
                       "data.task_batch_sizes={'digits': 12}", "model.use_moe=false"), tmp_path / "run", log=QUIET)
    assert {name: stream.batch_size for name, stream in state.streams.items()} == {"digits": 12, "numbers_fr_en": 4}
    assert state.streams["digits"].next_batch().size == 12
    for _ in range(6):
        take_step(state)
    totals = state.meters.read()
    assert totals["digits"].updated >= 1 and totals["digits"].count == 12 * totals["digits"].updated  # a label each


def test_the_trainer_applies_each_tasks_loss_multiplier_and_rescales_without_host_reads(tmp_path):
    """train.loss_multipliers reach the step of their task only (its gradient norm shrinks by the
    factor), and train.normalize_gradients adds no host read to the step."""
    overrides = ("data.tasks=digits,numbers_fr_en", "data.train_size=16", "data.batch_size=4", "model.dropout=0.0",
                 "model.use_moe=false")
    norms = {}
    for factor in (1.0, 0.01):
        state = setup(tiny(tmp_path, *overrides, f"train.loss_multipliers={{'digits': {factor}}}",
                           "train.normalize_gradients=true"), tmp_path / f"run{factor}", log=QUIET)
        assert state.loss_multipliers == {"digits": factor, "numbers_fr_en": 1.0}
        take_step(state)  # warm
        with count_host_reads() as reads:
            for _ in range(6):
                take_step(state)
        assert not [str(r) for r in reads.in_package() if not r.file.startswith(("data/", "corpora/"))]
        totals = state.meters.read()
        assert set(totals) == {"digits", "numbers_fr_en"}
        norms[factor] = {name: t.grad_norm / t.updated for name, t in totals.items()}
    assert norms[0.01]["digits"] < 0.05 * norms[1.0]["digits"]
    assert norms[0.01]["numbers_fr_en"] > 0.2 * norms[1.0]["numbers_fr_en"]


def test_the_step_passes_the_collator_s_padding_hints_to_the_model(state):
    """An image batch has no input padding (Batch.input_padded False): in the step the
    encoder's ConvSteps get no mask; the same batch marked as possibly padded gets one."""
    from dataclasses import replace

    from multimodel.layers.separable_conv import ConvStep

    batch, kwargs = _batch(state, "digits")
    assert batch.input_padded is False
    seen = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[1])) for m in state.model.encoder.modules()
             if isinstance(m, ConvStep)]
    try:
        train_step(state.model, state.optimizer, None, batch, kwargs, grad_clip=state.cfg.train.grad_clip)
        hinted, seen[:] = list(seen), []
        train_step(state.model, state.optimizer, None, replace(batch, input_padded=True), kwargs,
                   grad_clip=state.cfg.train.grad_clip)
    finally:
        for h in hooks:
            h.remove()
    assert hinted and all(m is None for m in hinted)
    assert len(seen) == len(hinted) and all(m is not None and bool(m.all()) for m in seen)

"""The optimiser: fused Adam where PyTorch has the kernel, equal to the default implementation."""

from __future__ import annotations

import pytest
import torch

from multimodel.config import Config, ConfigError, TrainConfig, config_from_dict, to_dict
from multimodel.training.optim import LearningRateSchedule, build_optimizer, noam_factor, schedule_for


def _model(device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(device)


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(9, 5, generator=gen)  # (B, in)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_cpu_parameters_get_the_fused_kernel_and_match_the_default(weight_decay):
    cfg = TrainConfig(learning_rate=1e-2, weight_decay=weight_decay)
    fused_model, plain_model = _model(), _model()
    start = [p.detach().clone() for p in fused_model.parameters()]
    optimizer, _ = build_optimizer(fused_model, cfg)
    assert all(group["fused"] for group in optimizer.param_groups)
    # The same optimiser over the twin model, with PyTorch's default (single-tensor) implementation.
    twin = dict(zip(fused_model.parameters(), plain_model.parameters()))
    reference = type(optimizer)([{**group, "params": [twin[p] for p in group["params"]], "fused": None,
                                  "foreach": False} for group in optimizer.param_groups])
    _train(fused_model, optimizer)
    _train(plain_model, reference)
    for before, a, b in zip(start, fused_model.parameters(), plain_model.parameters()):
        assert not torch.equal(a, before)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_parameters_fused_adam_cannot_take_fall_back_to_the_default():
    optimizer, _ = build_optimizer(_model("meta"), TrainConfig())
    assert not any(group["fused"] for group in optimizer.param_groups)


def test_an_unfused_checkpoint_resumes_unfused():
    cfg = TrainConfig(learning_rate=1e-2)
    model = _model()
    old = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps)
    _train(model, old, steps=2)
    optimizer, _ = build_optimizer(model, cfg)
    optimizer.load_state_dict(old.state_dict())
    assert not optimizer.param_groups[0]["fused"]
    _train(model, optimizer, steps=1)  # and it steps


def test_cooldown_lowers_the_learning_rate_linearly_to_zero_over_the_last_fraction():
    schedule = LearningRateSchedule(warmup_steps=10, steps=100, cooldown_fraction=0.2, decay="rsqrt")
    plain = LearningRateSchedule(warmup_steps=10, steps=100, decay="rsqrt")
    assert [schedule.factor(s) for s in range(80)] == [noam_factor(s, 10) for s in range(80)]
    assert [plain.factor(s) for s in range(100)] == [noam_factor(s, 10) for s in range(100)]
    assert schedule.factor(90) == pytest.approx(noam_factor(90, 10) * 0.5)
    assert schedule.factor(99) == pytest.approx(noam_factor(99, 10) * 0.05)
    ratios = [schedule.factor(s) / noam_factor(s, 10) for s in range(80, 100)]
    assert all(a > b for a, b in zip(ratios, ratios[1:]))  # strictly falling, never below 0
    assert min(ratios) > 0


def test_lr_decay_none_holds_the_peak_after_the_linear_warmup_until_the_cooldown():
    schedule = LearningRateSchedule(warmup_steps=10, steps=100, cooldown_fraction=0.2, decay="none")
    factors = [schedule.factor(s) for s in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[9:80] == [1.0] * 71  # noam would be down to a third by step 80
    assert noam_factor(79, 10) < 0.4
    assert factors[90] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(factors[80:], factors[81:])) and factors[99] > 0


def _rates(cfg: TrainConfig, steps: int) -> list[float]:
    optimizer, scheduler = build_optimizer(torch.nn.Linear(3, 3), cfg)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_train_lr_decay_reaches_the_optimiser_and_rejects_unknown_values():
    # The default is the released code's shape: constant after the warm-up.
    assert TrainConfig().lr_decay == "none"
    assert _rates(TrainConfig(learning_rate=1e-2, warmup_steps=2, steps=50), 20) == pytest.approx([1e-2] * 20)
    noam = _rates(TrainConfig(learning_rate=1e-2, warmup_steps=2, steps=50, lr_decay="rsqrt"), 20)
    assert noam == pytest.approx([1e-2 * noam_factor(s, 2) for s in range(1, 21)])
    assert noam[-1] < 0.4e-2
    assert schedule_for(TrainConfig(lr_decay="rsqrt")).decay == "rsqrt"
    with pytest.raises(ConfigError, match="train.lr_decay"):
        TrainConfig(lr_decay="cosine")


def test_a_saved_config_from_before_lr_decay_keeps_the_noam_schedule_it_trained_with():
    saved = to_dict(Config())
    del saved["train"]["lr_decay"]  # written before the key existed, when every run followed noam
    assert config_from_dict(saved).train.lr_decay == "rsqrt"
    assert config_from_dict(to_dict(Config())).train.lr_decay == "none"  # a key that is there wins


def test_the_clock_ends_the_cooldown_when_the_time_budget_comes_first():
    schedule = LearningRateSchedule(warmup_steps=10, steps=100_000, cooldown_fraction=0.5, decay="rsqrt")
    assert schedule.factor(20) == pytest.approx(noam_factor(20, 10))
    schedule.clock_progress = 0.75  # three quarters of the budget gone, at step 20 of 100,000
    assert schedule.factor(20) == pytest.approx(noam_factor(20, 10) * 0.5)
    schedule.clock_progress = 1.5
    assert schedule.factor(20) == 0.0


def test_the_optimiser_follows_the_schedule_and_a_bad_fraction_is_refused():
    cfg = TrainConfig(learning_rate=1e-2, warmup_steps=2, steps=10, cooldown_fraction=0.5)
    optimizer, scheduler = build_optimizer(_model(), cfg)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-2 * schedule_for(cfg).factor(s) for s in range(10)])
    assert lrs[-1] < lrs[5] / 4
    with pytest.raises(ConfigError, match="train.cooldown_fraction"):
        TrainConfig(cooldown_fraction=1.5)

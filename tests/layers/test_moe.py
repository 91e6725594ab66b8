"""Behaviour of the sparsely-gated mixture of experts (layers/moe.py).

Most checks compare the layer with ``dense_reference``: every expert run on every token and
mixed with a dense (N, E) gate matrix computed independently here (top-k of the clean
logits, softmax over the kept ones, zeros elsewhere).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from multimodel.config import MoEConfig
from multimodel.layers import moe as moe_module
from multimodel.layers.expert_threads import expert_threads
from multimodel.layers.moe import (
    FEW_SLOTS,
    MixtureOfExperts,
    RoutingStats,
    _ExpertFFN,
    _PaddedExpertFFN,
    cv_squared,
    mixture_reference,
    smooth_load,
)

KERNELS = {"per_expert": _ExpertFFN, "padded": _PaddedExpertFFN}


def make_moe(
    D: int = 8,
    E: int = 4,
    K: int = 2,
    H: int = 16,
    seed: int = 0,
    gate_scale: float = 1.0,
    **config: object,
) -> MixtureOfExperts:
    """A small layer with non-zero gate weights (zero gates would make routing trivial)."""
    torch.manual_seed(seed)
    moe = MixtureOfExperts(D, MoEConfig(num_experts=E, top_k=K, expert_hidden_size=H, **config))
    with torch.no_grad():
        moe.w_gate.normal_(0.0, gate_scale)
        moe.w_noise.normal_(0.0, 1.0)
    return moe


def expert(moe: MixtureOfExperts, e: int, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e]


def dense_reference(
    moe: MixtureOfExperts, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Noise-free MoE output (B, T, D): all experts on all tokens, unused ones gated by 0."""
    logits = x.float() @ moe.w_gate.float()  # (B, T, E)
    top, idx = logits.topk(moe.top_k, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))  # (B, T, E)
    out = sum(gates[..., e : e + 1] * expert(moe, e, x) for e in range(moe.num_experts))
    if mask is not None:
        out = out * mask.unsqueeze(-1)
    return out


# ----------------------------------------------------------------------------------------
# Parity with dense references


def test_top_k_equal_to_num_experts_is_the_dense_softmax_mixture():
    moe = make_moe(E=5, K=5).eval()
    x = torch.randn(2, 7, 8)
    out, _, stats = moe(x)
    gates = torch.softmax(x @ moe.w_gate, dim=-1)  # softmax over all logits, (B, T, E)
    expected = sum(gates[..., e : e + 1] * expert(moe, e, x) for e in range(5))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert stats.tokens_per_expert.tolist() == [14.0] * 5


@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_both_ways_of_mixing_the_k_outputs_agree(monkeypatch, capacity_factor):
    """Small layers mix elementwise, big ones with bmm (ELEMENTWISE_MIX_MAX): same values, same gradients."""
    moe = make_moe(E=4, K=3, capacity_factor=capacity_factor).train()
    x = torch.randn(2, 9, 8, requires_grad=True)
    results = []
    for limit in (1 << 30, 0):  # everything elementwise, then everything bmm
        monkeypatch.setattr(moe_module, "ELEMENTWISE_MIX_MAX", limit)
        torch.manual_seed(1)  # the same gate noise
        out, aux, _ = moe(x)
        grads = torch.autograd.grad((out.square().sum() + aux), [x, *moe.parameters()])
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_both_ways_of_mixing_return_the_experts_dtype_under_autocast(monkeypatch):
    moe = make_moe(E=4, K=2).eval()
    x = torch.randn(2, 9, 8)
    outs = []
    for limit in (1 << 30, 0):  # elementwise, then bmm (which autocast would otherwise run in bf16)
        monkeypatch.setattr(moe_module, "ELEMENTWISE_MIX_MAX", limit)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(moe(x)[0])
    assert outs[0].dtype == outs[1].dtype == torch.float32
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)


def test_one_expert_equals_that_expert():
    moe = make_moe(E=1, K=1).train()  # with one expert the noise cannot change anything
    x = torch.randn(3, 5, 8)
    out, aux, _ = moe(x)
    torch.testing.assert_close(out, expert(moe, 0, x), atol=1e-6, rtol=1e-6)
    assert aux.item() == 0.0


def test_identity_experts_pass_positive_input_through():
    D = 6
    moe = make_moe(D=D, E=3, K=2, H=D).eval()
    with torch.no_grad():
        moe.w1.copy_(torch.eye(D).expand(3, D, D))
        moe.w2.copy_(torch.eye(D).expand(3, D, D))
        moe.b1.zero_()
        moe.b2.zero_()
    x = torch.rand(2, 4, D) + 0.1  # positive, so ReLU is the identity; gates sum to 1
    out, _, _ = moe(x)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train_without_noise"])
def test_output_and_gradients_match_dense_reference(mode):
    moe = make_moe(D=8, E=6, K=2, H=12, noisy_gating=mode == "eval")
    moe.train(mode != "eval")
    twin = make_moe(D=8, E=6, K=2, H=12)
    twin.load_state_dict(moe.state_dict())
    x = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    weight = torch.randn(3, 5, 8)

    x1 = x.clone().requires_grad_()
    out, _, _ = moe(x1, mask)
    (out * weight).sum().backward()
    x2 = x.clone().requires_grad_()
    (dense_reference(twin, x2, mask) * weight).sum().backward()

    torch.testing.assert_close(out, dense_reference(twin, x, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for name, param in moe.named_parameters():
        other = dict(twin.named_parameters())[name].grad
        if name == "w_noise":
            assert param.grad is None or param.grad.abs().max() == 0  # no noise here
            continue
        torch.testing.assert_close(param.grad, other, atol=1e-5, rtol=1e-5, msg=name)
    unused = moe.w1.grad.flatten(1).abs().sum(1) == 0
    assert not unused.all()  # the test is not trivial...


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_dispatch_equals_the_reference_expert_by_expert(kernel, train):
    """Either expert kernel, behind the sort-and-gather dispatch, gives the outputs and the
    gradients of ``mixture_reference``: the paper's sum, one expert at a time."""
    moe = make_moe(D=8, E=6, K=2, H=12).train(train)
    moe.experts_kernel = kernel
    x = torch.randn(3, 7, 8)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [4], [1]])
    weight = torch.randn(3, 7, 8)
    params = list(moe.parameters())

    x1 = x.clone().requires_grad_()
    torch.manual_seed(5)  # the same gate noise for both
    out, aux, _ = moe(x1, mask)
    grads = torch.autograd.grad((out * weight).sum() + aux, [x1, *params], allow_unused=True)

    x2 = x.clone().requires_grad_()
    torch.manual_seed(5)
    gates, experts, ref_aux = moe.gate(x2.view(21, 8), mask.view(21))
    ref = mixture_reference(x2.view(21, 8), gates, experts, moe.w1, moe.b1, moe.w2, moe.b2).view(3, 7, 8)
    ref_grads = torch.autograd.grad((ref * weight).sum() + ref_aux, [x2, *params], allow_unused=True)

    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert out[~mask].abs().max() == 0
    for (name, _), got, expected in zip([("x", None), *moe.named_parameters()], grads, ref_grads):
        if expected is None:
            assert got is None or got.abs().max() == 0, name
        else:
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("parallel", [False, True])
def test_expert_function_gradcheck_with_empty_experts(kernel, parallel, two_threads):
    torch.manual_seed(0)
    E, D, H = 4, 3, 5
    counts = [2, 0, 3, 1]  # expert 1 gets nothing: its gradients must be exactly zero
    args = [
        torch.randn(sum(counts), D, dtype=torch.float64, requires_grad=True),
        torch.randn(E, D, H, dtype=torch.float64, requires_grad=True),
        torch.randn(E, H, dtype=torch.float64, requires_grad=True),
        torch.randn(E, H, D, dtype=torch.float64, requires_grad=True),
        torch.randn(E, D, dtype=torch.float64, requires_grad=True),
    ]
    function = KERNELS[kernel]
    assert torch.autograd.gradcheck(lambda *a: function.apply(*a, counts, parallel), args)
    function.apply(*args, counts, parallel).sum().backward()
    assert args[1].grad[1].abs().sum() == 0 and args[4].grad[1].abs().sum() == 0


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_parallel_experts_at_evaluation(context, two_threads):
    """Evaluation runs the layer under no_grad or inference_mode (both per thread): the experts
    on the worker threads must run in the same mode and give the serial loop's outputs."""
    if expert_threads() is None:
        pytest.skip("this torch build has no per-thread MKL/OpenMP control")
    serial = make_moe(D=16, E=8, K=2, H=32, parallel_experts=False).eval()
    parallel = make_moe(D=16, E=8, K=2, H=32).eval()
    parallel.load_state_dict(serial.state_dict())
    x = torch.randn(3, 20, 16)
    mode = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with mode:
        expected, got = serial(x)[0], parallel(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_parallel_experts_match_serial_and_are_deterministic(kernel, two_threads):
    """Experts side by side on two cores: the serial loop's outputs and gradients (to rounding:
    MKL sums differently on one thread than on two), and the same bits on every run."""
    if expert_threads() is None:
        pytest.skip("this torch build has no per-thread MKL/OpenMP control")
    torch.manual_seed(0)
    E, D, H = 12, 32, 48
    counts = [7, 0, 30, 1, 12, 5, 0, 9, 40, 3, 2, 11]
    inputs = [
        torch.randn(sum(counts), D),
        torch.randn(E, D, H) / D**0.5,
        torch.randn(E, H),
        torch.randn(E, H, D) / H**0.5,
        torch.randn(E, D),
    ]
    grad_out = torch.randn(sum(counts), D)
    results = []
    for parallel in (False, True, True):
        args = [t.clone().requires_grad_() for t in inputs]
        out = KERNELS[kernel].apply(*args, counts, parallel)
        out.backward(grad_out)
        results.append([out.detach()] + [a.grad for a in args])
    for serial, side_by_side, again in zip(*results):
        torch.testing.assert_close(side_by_side, serial, rtol=1e-5, atol=1e-5)
        assert torch.equal(side_by_side, again)


def test_whole_layer_gradcheck_in_training_with_noise():
    """Finite differences through gate, noise, smooth load, experts and mix (float64)."""
    moe = make_moe(D=4, E=5, K=2, H=6).double().train()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    names = ["w_gate", "w_noise", "w1", "b2"]
    params = [getattr(moe, n).detach().clone().requires_grad_() for n in names]

    def layer(x, *values):
        torch.manual_seed(0)  # the same noise at every evaluation
        out, aux, _ = torch.func.functional_call(moe, dict(zip(names, values)), (x, mask))
        return out, aux

    assert torch.autograd.gradcheck(layer, (x, *params), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 6),
    D=st.integers(1, 9),
    E=st.integers(1, 7),
    data=st.data(),
)
def test_dispatch_and_combine_round_trip_property(B, T, D, E, data):
    K = data.draw(st.integers(1, E), label="K")
    mask_bits = data.draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T), label="mask")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    moe = make_moe(D=D, E=E, K=K, H=5, seed=seed).eval()
    x = torch.randn(B, T, D)
    mask = torch.tensor(mask_bits).view(B, T)
    out, aux, stats = moe(x, mask)
    torch.testing.assert_close(out, dense_reference(moe, x, mask), atol=1e-5, rtol=1e-5)
    n_real = int(mask.sum())
    assert stats.num_tokens.item() == n_real
    assert stats.tokens_per_expert.sum().item() == n_real * K
    torch.testing.assert_close(stats.gate_sum_per_expert.sum(), torch.tensor(float(n_real)))
    assert torch.isfinite(aux)


# ----------------------------------------------------------------------------------------
# Train / eval behaviour


def test_eval_is_deterministic_and_independent_of_batching():
    moe = make_moe(D=8, E=8, K=2).eval()
    torch.manual_seed(1)
    token = torch.randn(8)
    alone, _, _ = moe(token.view(1, 1, 8))
    crowd = torch.randn(4, 9, 8)
    crowd[2, 5] = token
    mask = torch.rand(4, 9) > 0.3
    mask[2, 5] = True
    among, _, _ = moe(crowd, mask)
    again, _, _ = moe(crowd, mask)
    assert torch.equal(among, again)
    torch.testing.assert_close(among[2, 5], alone[0, 0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("capacity_factor", [None, 0.1])
def test_single_token_shortcut_without_autograd_matches_the_general_path(capacity_factor):
    """Decoding calls the layer with one real token under no_grad: a separate code path."""
    moe = make_moe(D=8, E=6, K=3, capacity_factor=capacity_factor).eval()
    x = torch.randn(2, 3, 8)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[1, 2] = True  # one real token among padding
    general, aux, stats = moe(x, mask)  # autograd on: the sort-and-gather path
    with torch.no_grad():
        shortcut, aux_nograd, stats_nograd = moe(x, mask)
        single, _, _ = moe(x[1:, 2:])  # the same token alone, no mask
    torch.testing.assert_close(shortcut, general, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(single[0, 0], general[1, 2], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shortcut, dense_reference(moe, x, mask), atol=1e-5, rtol=1e-5)
    assert torch.equal(aux, aux_nograd)
    assert torch.equal(stats.tokens_per_expert, stats_nograd.tokens_per_expert)
    assert stats_nograd.dropped_slots.item() == 0 and stats_nograd.num_tokens.item() == 1


def test_few_tokens_shortcut_matches_the_general_path_and_shares_experts():
    """A decoding step of a small batch or beam (N·K <= FEW_SLOTS, no autograd) skips the sort."""
    moe = make_moe(D=8, E=4, K=2).eval()
    x = torch.randn(4, 1, 8)
    x[3] = x[1]  # two tokens with the same experts: each expert runs once on both rows
    assert 4 * 2 <= FEW_SLOTS
    general, aux, stats = moe(x)  # autograd on: the sort-and-gather path
    with torch.no_grad():
        shortcut, aux_nograd, stats_nograd = moe(x)
    torch.testing.assert_close(shortcut, general, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shortcut, dense_reference(moe, x, None), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shortcut[3], shortcut[1])
    assert torch.equal(aux, aux_nograd)
    assert torch.equal(stats.tokens_per_expert, stats_nograd.tokens_per_expert)


def test_capacity_still_drops_without_autograd_for_a_few_tokens():
    """The shortcut ignores capacity, so several tokens under a capacity take the general path."""
    moe, x = routed_by_construction(E=4, collapsed=True)
    moe.config.capacity_factor = 1.0
    x = x.view(16, 1, 4)[:4]  # 4 tokens, all to expert 0: capacity ceil(4·1/4) = 1
    with torch.no_grad():
        out, _, stats = moe.eval()(x)
    assert stats.dropped_slots.item() == 3
    assert out[1:].abs().max() == 0


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
def test_without_statistics_the_output_is_the_same_and_nothing_else_is_computed(grad):
    """What incremental decoding asks for: no balancing loss, no routing statistics."""
    moe = make_moe(D=8, E=6, K=2).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.rand(2, 5) > 0.3
    with torch.set_grad_enabled(grad):
        out, aux, stats = moe(x, mask)
        lean, lean_aux, lean_stats = moe(x, mask, statistics=False)
    torch.testing.assert_close(lean, out, atol=0, rtol=0)
    assert aux.item() > 0 and lean_aux.item() == 0 and lean_stats is None
    assert stats is not None


def test_noise_only_in_training():
    moe = make_moe(D=8, E=8, K=2, gate_scale=0.1)  # small logits: noise decides the routing
    x = torch.randn(4, 6, 8)

    moe.train()
    torch.manual_seed(1)
    train_a, _, stats_a = moe(x)
    torch.manual_seed(2)
    train_b, _, stats_b = moe(x)
    assert not torch.allclose(train_a, train_b)
    assert not torch.equal(stats_a.tokens_per_expert, stats_b.tokens_per_expert)

    moe.eval()
    torch.manual_seed(1)
    rng = torch.get_rng_state()
    eval_a, _, _ = moe(x)
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation draws no noise at all
    torch.manual_seed(2)
    eval_b, _, _ = moe(x)
    assert torch.equal(eval_a, eval_b)
    torch.testing.assert_close(eval_a, dense_reference(moe, x), atol=1e-5, rtol=1e-5)


def test_training_gate_is_clean_logits_plus_scaled_noise():
    """Replays the layer's noise draw: H = x W_g + ε · (softplus(x W_noise) + 1e-2)."""
    moe = make_moe(D=8, E=6, K=2).train()
    twin = make_moe(D=8, E=6, K=2)
    twin.load_state_dict(moe.state_dict())
    x = torch.randn(2, 5, 8)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    weight = torch.randn(2, 5, 8)

    torch.manual_seed(3)
    out, _, _ = moe(x1)
    (out * weight).sum().backward()

    torch.manual_seed(3)
    noise = torch.randn(10, 6)  # the layer's first and only draw, (N, E)
    std = F.softplus(x2 @ twin.w_noise) + 1e-2  # (B, T, E)
    logits = x2 @ twin.w_gate + noise.view(2, 5, 6) * std
    top, idx = logits.topk(2, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))
    expected = sum(gates[..., e : e + 1] * expert(twin, e, x2) for e in range(6))
    (expected * weight).sum().backward()

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for name in ("w_gate", "w_noise", "w1", "b2"):
        mine, theirs = getattr(moe, name).grad, getattr(twin, name).grad
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5, msg=name)
    assert moe.w_noise.grad.abs().sum() > 0


def test_training_without_noisy_gating_is_deterministic():
    moe = make_moe(noisy_gating=False).train()
    x = torch.randn(2, 5, 8)
    torch.manual_seed(1)
    a, _, _ = moe(x)
    torch.manual_seed(2)
    b, _, _ = moe(x)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------
# Balancing loss


def routed_by_construction(E: int, collapsed: bool) -> tuple[MixtureOfExperts, torch.Tensor]:
    """K=1 layer and tokens that go round-robin to every expert, or all to expert 0."""
    moe = make_moe(D=E, E=E, K=1, aux_loss_coef=1.0)
    with torch.no_grad():
        moe.w_gate.copy_(20.0 * torch.eye(E))
        moe.w_noise.fill_(-20.0)  # softplus(-20·x) ≈ 0 for x > 0: almost no noise
    tokens = torch.arange(4 * E) % E
    x = F.one_hot(torch.zeros_like(tokens) if collapsed else tokens, E).float()
    return moe, x.view(4, E, E)


@pytest.mark.parametrize("train", [False, True])
def test_uniform_routing_has_no_balancing_loss_and_collapse_a_large_one(train):
    E = 8
    moe, x = routed_by_construction(E, collapsed=False)
    _, aux_uniform, stats = moe.train(train)(x)
    assert stats.tokens_per_expert.tolist() == [4.0] * E
    assert aux_uniform.item() < 1e-6

    moe, x = routed_by_construction(E, collapsed=True)
    _, aux_collapsed, stats = moe.train(train)(x)
    assert stats.tokens_per_expert[0].item() == 4 * E
    # Population CV² of (N, 0, ..., 0) is E - 1, for importance and for load alike.
    assert aux_collapsed.item() == pytest.approx(2 * (E - 1), rel=1e-3)


def test_cv_squared():
    assert cv_squared(torch.ones(5)).item() == 0.0
    assert cv_squared(torch.zeros(5)).item() == 0.0  # no 0/0
    assert cv_squared(torch.tensor([3.0])).item() == 0.0
    x = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert cv_squared(x).item() == pytest.approx(x.var(unbiased=False).item() / 9.0)


def test_smooth_load_is_the_probability_of_staying_in_the_top_k():
    """Monte Carlo: redraw one expert's noise, keep the others', count how often it is kept."""
    torch.manual_seed(0)
    N, E, K, draws = 3, 5, 2, 20000
    clean = torch.randn(N, E)
    noise_std = torch.rand(N, E) + 0.3
    noisy = clean + torch.randn(N, E) * noise_std
    top, experts = noisy.topk(K + 1, dim=-1)
    load = smooth_load(clean, noise_std, top, experts[:, :K])

    expected = torch.zeros(E)
    for i in range(E):
        trials = noisy.unsqueeze(0).repeat(draws, 1, 1)  # (draws, N, E)
        trials[:, :, i] = clean[:, i] + torch.randn(draws, N) * noise_std[:, i]
        kept = (trials.topk(K, dim=-1).indices == i).any(-1)  # (draws, N)
        expected[i] = kept.float().mean(0).sum()
    torch.testing.assert_close(load, expected, atol=0.03, rtol=0.0)


def test_balancing_loss_trains_the_gate_and_noise_weights():
    moe = make_moe(D=8, E=6, K=2).train()
    _, aux, _ = moe(torch.randn(3, 7, 8))
    aux.backward()
    assert moe.w_gate.grad.abs().sum() > 0
    assert moe.w_noise.grad.abs().sum() > 0  # only through the smooth load estimator


# ----------------------------------------------------------------------------------------
# Padding, capacity, dtypes, statistics


@pytest.mark.parametrize("train", [False, True])
def test_padding_is_ignored(train):
    moe = make_moe(D=8, E=4, K=2).train(train)
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()
    garbage = x.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)

    torch.manual_seed(0)
    out, aux, stats = moe(x, mask)
    torch.manual_seed(0)
    out_garbage, aux_garbage, _ = moe(garbage.requires_grad_(), mask)
    assert torch.equal(out, out_garbage)
    assert torch.equal(aux, aux_garbage)
    assert out[~mask].abs().max() == 0
    (out_garbage.sum() + aux_garbage).backward()
    assert garbage.grad[~mask].abs().max() == 0

    if not train:  # (training draws gate noise per position, padding included)
        # The real tokens alone, packed into one row, give the same outputs and loss.
        packed, aux_packed, _ = moe(x[mask].unsqueeze(0))
        torch.testing.assert_close(packed[0], out[mask], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(aux_packed, aux, atol=1e-6, rtol=1e-6)

    assert stats.num_tokens.item() == 10
    assert stats.tokens_per_expert.sum().item() == 10 * 2


def test_a_mask_without_padding_equals_no_mask():
    moe = make_moe(D=8, E=6, K=2).eval()
    x = torch.randn(2, 5, 8)
    out, aux, stats = moe(x, torch.ones(2, 5, dtype=torch.bool))
    ref, ref_aux, ref_stats = moe(x)
    assert torch.equal(out, ref) and torch.equal(aux, ref_aux)
    assert torch.equal(stats.tokens_per_expert, ref_stats.tokens_per_expert)


def test_all_padding_gives_zeros_and_a_finite_loss():
    moe = make_moe().train()
    x = torch.randn(2, 3, 8, requires_grad=True)
    out, aux, stats = moe(x, torch.zeros(2, 3, dtype=torch.bool))
    assert out.abs().max() == 0 and aux.item() == 0.0
    assert stats.num_tokens.item() == 0 and stats.tokens_per_expert.sum() == 0
    (out.sum() + aux).backward()
    assert x.grad.abs().max() == 0


def test_no_slot_is_dropped_without_capacity():
    moe, x = routed_by_construction(E=4, collapsed=True)  # every token to expert 0
    out, _, stats = moe.eval()(x)
    torch.testing.assert_close(out, expert(moe, 0, x), atol=1e-6, rtol=1e-6)
    assert stats.dropped_slots.item() == 0
    assert stats.tokens_per_expert.tolist() == [16.0, 0.0, 0.0, 0.0]


def test_capacity_factor_drops_and_counts_overflow():
    moe, x = routed_by_construction(E=4, collapsed=True)
    moe.config.capacity_factor = 1.0  # capacity = 16 slots / 4 experts = 4
    out, _, stats = moe.eval()(x)
    flat_out, flat_x = out.view(16, 4), x.view(16, 4)
    # The first four tokens (in batch order) fit; the other twelve are dropped (output 0).
    torch.testing.assert_close(flat_out[:4], expert(moe, 0, flat_x[:4]), atol=1e-6, rtol=1e-6)
    assert flat_out[4:].abs().max() == 0
    assert stats.dropped_slots.item() == 12
    assert stats.tokens_per_expert.tolist() == [16.0, 0.0, 0.0, 0.0]


def test_capacity_keeps_first_choices_before_second_choices():
    N, E, K = 12, 4, 2
    moe = make_moe(D=8, E=E, K=K, capacity_factor=1.0).eval()
    capacity = math.ceil(1.0 * N * K / E)  # 6 slots per expert
    x = torch.randn(1, N, 8)
    out, _, stats = moe(x)
    gates, experts, _ = moe.gate(x[0])  # (N, K)

    # Expected: per expert, first choices in token order, then second choices, up to capacity.
    expected = torch.zeros(N, 8)
    dropped = 0
    for e in range(E):
        queue = [(n, k) for k in range(K) for n in range(N) if experts[n, k] == e]
        dropped += max(0, len(queue) - capacity)
        for n, k in queue[:capacity]:
            expected[n] += gates[n, k] * expert(moe, e, x[0, n])
    assert dropped > 0  # the seed gives an overloaded expert, so the test is not trivial
    assert stats.dropped_slots.item() == dropped
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=1e-6)


def test_gate_math_is_float32_under_bfloat16():
    moe = make_moe(D=8, E=6, K=2).eval()
    x = torch.randn(2, 5, 8).to(torch.bfloat16)
    gates, experts, aux = moe.gate(x.view(10, 8))
    assert gates.dtype == torch.float32 and aux.dtype == torch.float32
    _, ref_experts = (x.view(10, 8).float() @ moe.w_gate).topk(2, dim=-1)
    assert torch.equal(experts, ref_experts)

    out, aux, stats = moe(x)
    assert out.dtype == torch.bfloat16 and aux.dtype == torch.float32
    assert stats.gate_sum_per_expert.dtype == torch.float32
    torch.testing.assert_close(out.float(), dense_reference(moe, x.float()), atol=0.05, rtol=0.05)

    # Under autocast and with the whole layer in bfloat16, the gate still runs in float32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert moe.gate(x.view(10, 8).float())[0].dtype == torch.float32
    moe.to(torch.bfloat16)
    gates, _, aux = moe.gate(x.view(10, 8))
    assert gates.dtype == torch.float32 and aux.dtype == torch.float32


def test_routing_stats_are_detached_and_sum_across_batches():
    moe = make_moe(D=8, E=4, K=2).train()
    x = torch.randn(2, 5, 8, requires_grad=True)
    stats = [moe(x)[2] for _ in range(3)]
    for s in stats:
        for value in vars(s).values():
            assert isinstance(value, torch.Tensor) and not value.requires_grad
    total = sum(stats)
    assert isinstance(total, RoutingStats)
    assert total.num_tokens.item() == 30
    torch.testing.assert_close(total.tokens_per_expert, sum(s.tokens_per_expert for s in stats))
    merged = RoutingStats.zeros(4).merge(stats[0]) + stats[1]
    torch.testing.assert_close(merged.gate_sum_per_expert.sum(), torch.tensor(20.0))
    assert merged.detach().num_tokens.item() == 20


def test_initialisation_and_config_validation():
    moe = MixtureOfExperts(16, MoEConfig(num_experts=3, top_k=2, expert_hidden_size=32))
    assert moe.w_gate.abs().max() == 0 and moe.w_noise.abs().max() == 0
    assert moe.w1.shape == (3, 16, 32) and moe.b1.shape == (3, 32)
    assert moe.w2.shape == (3, 32, 16) and moe.b2.shape == (3, 16)
    assert moe.w1.abs().max() <= 1 / math.sqrt(16) and moe.w2.abs().max() <= 1 / math.sqrt(32)
    assert moe.w1.std() > 0.5 / math.sqrt(3 * 16)  # not degenerate
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfExperts(16, MoEConfig(num_experts=3, top_k=4))
    with pytest.raises(ValueError, match="capacity_factor"):
        MixtureOfExperts(16, MoEConfig(num_experts=3, top_k=1, capacity_factor=0.0))

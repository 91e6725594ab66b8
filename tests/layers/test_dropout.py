"""Dropout: the keep rate, the scaling, the gradient, evaluation, dtypes."""

import pytest
import torch

from multimodel.layers.dropout import Dropout


@pytest.mark.parametrize("p", [0.02, 0.3, 0.9])
def test_training_keeps_one_minus_p_and_scales_the_kept_values(p):
    torch.manual_seed(0)
    x = torch.rand(200, 500) + 0.5  # no zeros of its own
    y = Dropout(p).train()(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 100,000 draws: std <= 0.0016
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_p_next_to_one_keeps_almost_nothing():
    """p · 2^31 rounds to 2^31, which must not wrap around to keeping everything."""
    torch.manual_seed(0)
    y = Dropout(1 - 2**-33).train()(torch.ones(100_000))
    assert int(y.count_nonzero()) <= 1  # keep probability 2^-31


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    y = Dropout(0.5).train()(x)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() * 2.0)


def test_evaluation_and_p_zero_are_the_identity():
    x = torch.randn(8, 8)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_same_seed_same_mask_and_low_precision_keeps_its_dtype():
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = Dropout(0.25).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.25).train()(x)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_probability_out_of_range_is_refused(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(p)

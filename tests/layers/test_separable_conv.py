"""Separable conv, ConvStep, conv block: parity with a naive reference, causality, masking."""

import pytest
import torch
import torch.nn.functional as F

from multimodel.layers.separable_conv import (
    ConvBlock,
    ConvStep,
    DownsampleBlock2d,
    SeparableConv1d,
    depthwise_conv_reference,
    depthwise_conv_time,
)

D = 8


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one thread is faster and does not oversubscribe a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reference_sepconv(conv: SeparableConv1d, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Grouped ``F.conv1d`` then a 1×1 ``F.conv1d`` on (B, C, T), with explicit padding."""
    C = x.shape[-1]
    k, d = conv.depthwise.kernel_size[0], conv.depthwise.dilation[0]
    total = (k - 1) * d
    pad = (total, 0) if causal else (total // 2, total - total // 2)
    y = F.conv1d(F.pad(x.transpose(1, 2), pad), conv.depthwise.weight, dilation=d, groups=C)
    y = F.conv1d(y, conv.pointwise.weight[:, :, None], conv.pointwise.bias)
    return y.transpose(1, 2)


@pytest.mark.parametrize("length", [11, 16])  # 16: (5, 2) and (15, 8) also let the conv pad "same"
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel,dilation", [(1, 1), (3, 1), (5, 2), (4, 3), (15, 8)])
def test_separable_conv_matches_depthwise_plus_pointwise(causal, kernel, dilation, length):
    torch.manual_seed(0)
    conv = SeparableConv1d(D, 6, kernel, dilation, causal)
    x = torch.randn(3, length, D, requires_grad=True)
    ours, reference = conv(x), reference_sepconv(conv, x, causal)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ours)
    weights = [conv.depthwise.weight, conv.pointwise.weight]
    for a, b in zip(torch.autograd.grad(ours, [x, *weights], g), torch.autograd.grad(reference, [x, *weights], g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_causal_conv_block_ignores_the_future():
    torch.manual_seed(0)
    block = ConvBlock(D, (3, 3, 5, 5), (1, 1, 1, 4), causal=True).eval()
    x = torch.randn(2, 13, D)
    y = x.clone()
    y[:, 7:] = torch.randn(2, 6, D)
    torch.testing.assert_close(block(x)[:, :7], block(y)[:, :7])
    assert not torch.allclose(block(x)[:, 7:], block(y)[:, 7:])


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_reaches_real_positions(causal):
    torch.manual_seed(0)
    block = ConvBlock(D, (3, 3, 5, 5), (1, 1, 1, 2), causal=causal).eval()
    x = torch.randn(2, 9, D)
    mask = torch.arange(9)[None, :] < torch.tensor([[9], [5]])
    garbage = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    torch.testing.assert_close(block(x, mask)[mask], block(garbage, mask)[mask])
    # The short example alone, without any padding, gives the same real outputs.
    torch.testing.assert_close(block(x[1:, :5])[0], block(garbage, mask)[1, :5])


@pytest.mark.parametrize("left", ["causal", "same"])
@pytest.mark.parametrize("kernel,dilation,length", [(3, 1, 9), (5, 2, 16), (4, 3, 10), (7, 4, 12)])
def test_channels_last_depthwise_conv_equals_the_plain_conv1d(kernel, dilation, length, left):
    torch.manual_seed(0)
    context = (kernel - 1) * dilation
    pad = context if left == "causal" else context // 2
    x = torch.randn(2, length, D, requires_grad=True)
    weight = torch.randn(D, 1, kernel, requires_grad=True)
    fast, plain = depthwise_conv_time(x, weight, dilation, pad), depthwise_conv_reference(x, weight, dilation, pad)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(fast)
    for a, b in zip(torch.autograd.grad(fast, [x, weight], g), torch.autograd.grad(plain, [x, weight], g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def decoding_states(module, batch: int, length: int) -> dict:
    """Every stateful layer's empty decoding state (what MultiModel.start_decoding builds)."""
    memory = torch.zeros(batch, 1, D)
    return {m: m.decoding_state(memory, None, length) for m in module.modules() if hasattr(m, "decoding_state")}


@pytest.mark.parametrize("first_relu", [True, False])
@pytest.mark.parametrize("dilation", [1, 3])
def test_one_position_steps_equal_the_full_sequence(dilation, first_relu):
    torch.manual_seed(0)
    step = ConvStep(D, D, 5, dilation=dilation, causal=True, first_relu=first_relu).eval()
    x = torch.randn(2, 12, D)
    states = decoding_states(step, 2, 12)
    with torch.no_grad():
        steps = torch.stack([step.step(x[:, t], states, t) for t in range(12)], dim=1)
        torch.testing.assert_close(steps, step(x), atol=1e-6, rtol=1e-5)
    assert states[step].inputs.shape == (2, 4 * dilation + 12, D)  # (k - 1) · dilation of left padding


@pytest.mark.parametrize("dilation", [1, 3])
def test_long_one_position_decoding_and_row_reordering(dilation):
    """Many single positions through a conv block, then beam-search-style row reordering."""
    torch.manual_seed(0)
    block = ConvBlock(D, (3, 3, 5, 5), (1, 1, dilation, 2 * dilation), causal=True).eval()
    x = torch.randn(3, 70, D)
    order = torch.tensor([2, 2, 0])  # rows kept after a re-ranking at position 40
    states = decoding_states(block, 3, 70)
    with torch.no_grad():
        early = torch.stack([block.step(x[:, t], states, t) for t in range(40)], dim=1)
        torch.testing.assert_close(early, block(x[:, :40]), atol=1e-6, rtol=1e-5)
        for window in states.values():
            window.reorder(order, 40)
        later = torch.stack([block.step(x[order, t], states, t) for t in range(40, 70)], dim=1)
        expected = block(x[order])[:, 40:]  # row i's whole history is now that of old row order[i]
    torch.testing.assert_close(later, expected, atol=1e-6, rtol=1e-5)


def test_non_causal_conv_cannot_decode():
    with pytest.raises(ValueError, match="non-causal"):
        ConvStep(D, D, 3).decoding_state(torch.zeros(1, 1, D), None, 4)


def test_conv_block_needs_four_steps():
    with pytest.raises(ValueError, match="4 kernel sizes"):
        ConvBlock(D, (3, 3, 3), (1, 1, 1))


def test_conv_block_dropout_only_in_training():
    torch.manual_seed(0)
    block = ConvBlock(D, (3, 3, 3, 3), (1, 1, 1, 1), dropout=0.5)
    x = torch.randn(2, 7, D)
    block.train()
    assert not torch.equal(block(x), block(x))
    block.eval()
    assert torch.equal(block(x), block(x))


def test_downsample_block_2d_halves_time_and_ignores_padding():
    torch.manual_seed(0)
    block = DownsampleBlock2d(3, 5, stride=(2, 1)).eval()
    x = torch.randn(2, 3, 11, 6)  # (B, C, T, F)
    mask = torch.arange(11)[None, :] < torch.tensor([[11], [7]])
    y, out_mask = block(x, mask)
    assert y.shape == (2, 5, 6, 6) and out_mask.tolist()[1] == [True] * 4 + [False] * 2
    alone, _ = block(x[1:, :, :7], None)
    torch.testing.assert_close(y[1:, :, :4], alone, atol=1e-5, rtol=1e-5)

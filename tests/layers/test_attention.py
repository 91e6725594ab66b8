"""Multi-head attention and the attention block: naive-reference parity, masks, causality."""

import math

import pytest
import torch

from multimodel.layers.attention import AttentionBlock, MultiHeadAttention, MultiHeadSelfAttention
from multimodel.layers.timing import timing_signal

D, H = 16, 4


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one thread is faster and does not oversubscribe a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def naive_attention(layer: MultiHeadAttention, x, memory, memory_mask):
    """softmax(Q Kᵀ / sqrt(hd) + mask) V per head, written out."""
    B, T, _ = x.shape
    S, hd = memory.shape[1], D // H
    q = layer.query(x).view(B, T, H, hd).permute(0, 2, 1, 3)
    k = layer.key(memory).view(B, S, H, hd).permute(0, 2, 1, 3)
    v = layer.value(memory).view(B, S, H, hd).permute(0, 2, 1, 3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, H, T, S)
    scores = scores.masked_fill(~memory_mask[:, None, None, :], float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, hd)
    return layer.out(y.permute(0, 2, 1, 3).reshape(B, T, D))


def test_attention_matches_naive_reference_with_padding():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D, H)
    x, memory = torch.randn(3, 5, D), torch.randn(3, 7, D)
    memory_mask = torch.arange(7)[None, :] < torch.tensor([[7], [3], [1]])
    expected = naive_attention(layer, x, memory, memory_mask)
    torch.testing.assert_close(layer(x, memory, memory_mask), expected, atol=1e-5, rtol=1e-5)


def test_padded_memory_is_ignored():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D, H)
    x, memory = torch.randn(1, 4, D), torch.randn(1, 6, D)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    torch.testing.assert_close(layer(x, memory, mask), layer(x, memory[:, :4], None))


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


@pytest.mark.parametrize("variant", [{}, {"self_attention_residual": True}, {"self_attention": False}],
                         ids=["paper", "residual", "no_self_attention"])
def test_attention_block_is_causal_and_its_steps_equal_forward(variant):
    torch.manual_seed(0)
    block = AttentionBlock(D, H, kernel_size=3, **variant).eval()
    x, memory = torch.randn(2, 9, D), torch.randn(2, 5, D)
    full = block(x, None, memory, None)
    y = x.clone()
    y[:, 6:] += 1.0
    torch.testing.assert_close(block(y, None, memory, None)[:, :6], full[:, :6])
    states = decoding_states(block, memory, 9)
    with torch.no_grad():  # steps are for decoding: no autograd
        steps = torch.stack([block.step(x[:, t], states, t) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def decoding_states(module, memory, length: int, memory_mask=None) -> dict:
    """Every stateful layer's decoding state (what MultiModel.start_decoding builds)."""
    return {m: m.decoding_state(memory, memory_mask, length) for m in module.modules() if hasattr(m, "decoding_state")}


def test_one_query_step_equals_forward_with_a_padded_memory():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D, H)
    x, memory = torch.randn(3, D), torch.randn(3, 7, D)
    memory_mask = torch.arange(7)[None, :] < torch.tensor([[7], [3], [1]])
    states = decoding_states(layer, memory, 4, memory_mask)
    torch.testing.assert_close(layer.step(x, states), layer(x[:, None], memory, memory_mask)[:, 0], atol=1e-6, rtol=1e-5)


def naive_self_attention(layer: MultiHeadSelfAttention, x, mask):
    """Causal softmax(Q Kᵀ / sqrt(hd)) V per head over real keys, written out."""
    B, T, _ = x.shape
    hd = D // H
    q, k, v = layer.qkv(x).split(D, dim=-1)
    q, k, v = (t.view(B, T, H, hd).permute(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, hd)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, H, T, T)
    allowed = torch.ones(T, T, dtype=torch.bool).tril() & mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, hd)
    return layer.out(y.permute(0, 2, 1, 3).reshape(B, T, D))


def test_self_attention_matches_naive_causal_reference_with_padding():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(D, H, causal=True)
    x = torch.randn(3, 6, D)
    mask = torch.arange(6)[None, :] < torch.tensor([[6], [4], [1]])
    expected = naive_self_attention(layer, x, mask)
    got = layer(x, mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x, None), naive_self_attention(layer, x, torch.ones(3, 6, dtype=torch.bool)),
                               atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()  # padded queries too


def test_self_attention_is_causal_and_its_steps_equal_forward():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(D, H, causal=True)
    x = torch.randn(2, 8, D)
    full = layer(x, None)
    y = x.clone()
    y[:, 5:] = torch.randn(2, 3, D)  # a future target never changes an earlier output
    torch.testing.assert_close(layer(y, None)[:, :5], full[:, :5])
    states = decoding_states(layer, torch.zeros(2, 1, D), 8)
    with torch.no_grad():
        steps = torch.stack([layer.step(x[:, t], states, t) for t in range(8)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    assert states[layer].keys.shape == (2, H, 8, D // H)


def test_non_causal_self_attention_sees_the_future_but_not_padding():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(D, H, causal=False)
    x = torch.randn(1, 5, D)
    y = x.clone()
    y[:, 4] += 1.0
    assert not torch.allclose(layer(x, None)[:, 0], layer(y, None)[:, 0])
    mask = torch.tensor([[True, True, True, False, False]])
    garbage = torch.where(mask[..., None], x, torch.randn_like(x) * 30)
    torch.testing.assert_close(layer(x, mask)[:, :3], layer(garbage, mask)[:, :3])
    torch.testing.assert_close(layer(x, mask)[:, :3], layer(x[:, :3], None))
    with pytest.raises(ValueError, match="incrementally"):
        layer.decoding_state(x, None, 5)


def test_attention_block_self_attention_reads_the_whole_prefix():
    """With self-attention, an early target changes a late output even past the ConvSteps'
    receptive field (kernel 3, dilations 1 and 4: 10 positions); without it, it cannot."""
    torch.manual_seed(0)
    x, memory = torch.randn(1, 16, D), torch.randn(1, 3, D)
    y = x.clone()
    y[:, 0] += 3.0
    for self_attention, reaches in ((True, True), (False, False)):
        block = AttentionBlock(D, H, kernel_size=3, self_attention=self_attention).eval()
        changed = not torch.allclose(block(x, None, memory, None)[:, 15], block(y, None, memory, None)[:, 15])
        assert changed == reaches
    assert sum(isinstance(m, MultiHeadSelfAttention) for m in AttentionBlock(D, H).modules()) == 1
    # The residual variant passes the mixed targets on beside the self-attention's output.
    chain = AttentionBlock(D, H, kernel_size=3).eval()
    residual = AttentionBlock(D, H, kernel_size=3, self_attention_residual=True).eval()
    residual.load_state_dict(chain.state_dict())
    assert not torch.allclose(chain(x, None, memory, None), residual(x, None, memory, None))
    assert not any(isinstance(m, MultiHeadSelfAttention) for m in AttentionBlock(D, H, self_attention=False).modules())


def test_timing_signal_values_and_offset():
    signal = timing_signal(10, 8)
    assert signal.shape == (10, 8)
    torch.testing.assert_close(signal[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(timing_signal(3, 8, offset=7), signal[7:])
    assert timing_signal(4, 7).shape == (4, 7)  # odd width: zero last channel

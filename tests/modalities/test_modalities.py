"""Modality nets, parametrised over the whole catalogue: a new entry gets these tests for free."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from multimodel.config import ConfigError, load_config
from multimodel.modalities import EXAMPLE_SPECS, MODALITIES, ModalityError, build_modality, label_smoothed_loss

CONFIG = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.py").model
VOCAB = 100
SPECS = list(EXAMPLE_SPECS.values())


def build(spec, **overrides):
    torch.manual_seed(0)
    return build_modality(spec, replace(CONFIG, **overrides), VOCAB).eval()


def test_every_catalogue_entry_has_an_example_spec():
    assert set(EXAMPLE_SPECS) == set(MODALITIES)


@pytest.mark.parametrize("spec", SPECS)
def test_builds_and_has_a_role(spec):
    modality = build(spec)
    assert modality.is_input or modality.is_output


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("length", [1, 7, 12])
def test_bottom_shapes_with_odd_lengths_and_padding(spec, length):
    modality = build(spec)
    if not modality.is_input:
        pytest.skip(f"{spec} is output-only")
    inputs, mask = modality.example_inputs(3, length, torch.Generator().manual_seed(length))
    x, out_mask = modality.bottom(inputs, mask)
    assert x.dim() == 3 and x.shape[0] == 3 and x.shape[2] == CONFIG.hidden_size
    assert out_mask.shape == x.shape[:2] and out_mask.dtype == torch.bool
    assert out_mask.any(dim=1).all() and torch.isfinite(x[out_mask]).all()


@pytest.mark.parametrize("spec", SPECS)
def test_extra_padding_leaves_real_positions_unchanged(spec):
    modality = build(spec)
    if not modality.is_input:
        pytest.skip(f"{spec} is output-only")
    inputs, mask = modality.example_inputs(2, 9, torch.Generator().manual_seed(0))
    if mask is None:
        pytest.skip(f"{spec} inputs have no padding")
    pad = torch.zeros((2, 7) + inputs.shape[2:], dtype=inputs.dtype)
    longer, longer_mask = torch.cat([inputs, pad], 1), torch.cat([mask, torch.zeros(2, 7, dtype=torch.bool)], 1)
    x, m = modality.bottom(inputs, mask)
    y, n = modality.bottom(longer, longer_mask)
    assert torch.equal(n[:, : m.shape[1]], m) and not n[:, m.shape[1] :].any()
    torch.testing.assert_close(y[:, : x.shape[1]][m], x[m], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_top_and_loss(spec):
    modality = build(spec)
    if not modality.is_output:
        pytest.skip(f"{spec} is input-only")
    h = torch.randn(3, 5, CONFIG.hidden_size, requires_grad=True)
    h_mask = torch.arange(5)[None, :] < torch.tensor([[5], [2], [4]])
    targets, target_mask = modality.example_targets(3, 5, torch.Generator().manual_seed(0))
    logits = modality.top(h, h_mask)
    out = modality.loss(logits, targets, target_mask)
    expected_count = 3 if target_mask is None else int(target_mask.sum())
    assert int(out.count) == expected_count and 0 <= int(out.correct) <= expected_count
    assert torch.isfinite(out.loss) and out.nll_sum > 0
    out.loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("spec", SPECS)
def test_wrong_rank_raises_a_clear_error(spec):
    modality = build(spec)
    if modality.is_input:
        with pytest.raises(ModalityError, match="shape|must be"):
            modality.bottom(torch.zeros(2, 3, 4, 5, 6), None)
    else:
        with pytest.raises(ModalityError, match="input modality"):
            modality.bottom(torch.zeros(2, 3), None)


def test_unknown_spec_lists_the_valid_ones():
    with pytest.raises(ModalityError, match="valid modalities: text, image, audio, class_label:10"):
        build_modality("video", CONFIG, VOCAB)
    with pytest.raises(ModalityError, match="number of classes"):
        build_modality("class_label", CONFIG, VOCAB)
    with pytest.raises(ModalityError, match="takes no argument"):
        build_modality("text:5", CONFIG, VOCAB)


def test_label_smoothed_loss_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]]])
    targets = torch.tensor([[0, 1]])
    mask = torch.tensor([[True, False]])
    out = label_smoothed_loss(logits, targets, mask, smoothing=0.1)
    logp = torch.log_softmax(logits[0, 0], -1)
    expected = -(0.9 * logp[0] + 0.1 * logp.mean())
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.nll_sum, -logp[0])
    assert int(out.correct) == 1 and int(out.count) == 1


def test_label_smoothed_loss_equals_torch_cross_entropy_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (3, 5))
    out = label_smoothed_loss(logits, targets, None, smoothing=0.1)
    reference = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(out.loss, reference)
    torch.testing.assert_close(out.nll_sum, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), reduction="sum"))
    (grad,) = torch.autograd.grad(out.loss, logits)
    (expected,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(grad, expected)


# -- text ---------------------------------------------------------------------------------


def test_text_rejects_bad_ids_and_empty_examples():
    text = build("text")
    with pytest.raises(ModalityError, match=r"\[0, 100\)"):
        text.bottom(torch.tensor([[5, 100]]), None)
    with pytest.raises(ModalityError, match="integer"):
        text.bottom(torch.zeros(1, 3), None)
    with pytest.raises(ModalityError, match="empty"):
        text.bottom(torch.tensor([[4, 5], [0, 0]]), None)
    with pytest.raises(ModalityError, match="empty"):
        text.bottom(torch.zeros(2, 0, dtype=torch.long), None)


def test_text_tied_embeddings_share_one_table():
    text = build("text", tie_text_embeddings=True)
    assert text.output.weight is text.embedding.weight


# -- image --------------------------------------------------------------------------------


@pytest.mark.parametrize("size,positions", [(28, 4), (8, 1), (32, 4), (9, 1)])
def test_image_sizes(size, positions):
    image = build("image")
    x, mask = image.bottom(torch.rand(2, 1, size, size), None)  # grayscale repeated to 3 channels
    assert x.shape == (2, positions, CONFIG.hidden_size) and mask.all()


def test_image_rejects_what_it_cannot_stride_down():
    image = build("image")
    with pytest.raises(ModalityError, match="at least 8×8"):
        image.bottom(torch.rand(1, 3, 7, 28), None)
    with pytest.raises(ModalityError, match="channels"):
        image.bottom(torch.rand(1, 2, 28, 28), None)
    with pytest.raises(ModalityError, match="floating point"):
        image.bottom(torch.zeros(1, 3, 28, 28, dtype=torch.uint8), None)


# -- audio --------------------------------------------------------------------------------


def test_audio_waveform_front_end_and_mask():
    audio = build("audio")
    wave = torch.randn(2, 4000)
    mask = torch.arange(4000)[None, :] < torch.tensor([[4000], [1000]])
    x, out_mask = audio.bottom(wave, mask)
    frames = 1 + 4000 // 160  # frames centred every 10 ms at 16 kHz
    assert x.shape == (2, -(-frames // 4), CONFIG.hidden_size)  # two stride-2 blocks over time
    assert int(out_mask[1].sum()) == -(-(1 + 1000 // 160) // 4)
    alone, _ = audio.bottom(wave[1:, :1000], None)
    torch.testing.assert_close(x[1, : alone.shape[1]], alone[0], atol=1e-4, rtol=1e-4)


def test_front_end_matches_the_corpora_features():
    from multimodel.corpora.audio_features import log_mel_spectrogram

    wave = torch.sin(torch.arange(3217) * 0.05) * 0.3 + 0.01 * torch.randn(3217)
    front_end = build("audio").front_end
    features, _ = front_end(wave[None], None)
    expected = torch.from_numpy(log_mel_spectrogram(wave.numpy(), CONFIG.audio_sample_rate, CONFIG.audio_mels))
    torch.testing.assert_close(features[0], expected, atol=1e-3, rtol=1e-4)


def test_audio_rejects_bad_inputs():
    audio = build("audio")
    with pytest.raises(ModalityError, match="80 mel bands"):
        audio.bottom(torch.randn(1, 10, 16), None)
    with pytest.raises(ModalityError, match="empty"):
        audio.bottom(torch.randn(2, 100), torch.arange(100)[None, :] < torch.tensor([[5], [0]]))
    with pytest.raises(ModalityError, match="mask must have shape"):
        audio.bottom(torch.randn(2, 10, 80), torch.ones(2, 9, dtype=torch.bool))


# -- class label --------------------------------------------------------------------------


def test_class_label_pooling_ignores_padding_and_checks_targets():
    labels = build("class_label:10")
    assert labels.skips_decoder
    h = torch.randn(2, 7, CONFIG.hidden_size)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [3]])
    garbage = torch.where(mask[..., None], h, torch.randn_like(h) * 50)
    torch.testing.assert_close(labels.top(h, mask), labels.top(garbage, mask))
    torch.testing.assert_close(labels.top(h, mask)[1], labels.top(h[1:, :3], None)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ModalityError, match=r"\[0, 10\)"):
        labels.loss(torch.randn(2, 10), torch.tensor([3, 10]), None)


# -- blind control ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_every_input_modality_has_a_blind_control(spec):
    modality = build(spec)
    if not modality.is_input:
        with pytest.raises(NotImplementedError, match="no blind control"):
            modality.blind(torch.zeros(2, 3), None)
        return
    inputs, mask = modality.example_inputs(3, 11, torch.Generator().manual_seed(0))
    blinded, blind_mask = modality.blind(inputs, mask, torch.Generator().manual_seed(1))
    assert blinded.shape == inputs.shape and blinded.dtype == inputs.dtype
    assert (blind_mask is None) == (mask is None) and (mask is None or torch.equal(blind_mask, mask))
    x, _ = modality.bottom(blinded, blind_mask)  # still a valid input
    assert torch.isfinite(x).all()


def test_image_blind_is_a_blank_canvas_whatever_the_image():
    image = build("image")
    a, b = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    blind_a, _ = image.blind(a, None)
    blind_b, _ = image.blind(b, None)
    assert torch.equal(blind_a, blind_b) and not blind_a.any()  # the corpora's black background
    torch.testing.assert_close(image.bottom(blind_a, None)[0], image.bottom(blind_b, None)[0], rtol=0, atol=0)


def test_audio_blind_is_the_silence_of_the_front_end():
    import math

    from multimodel.layers.log_mel import LOG_FLOOR

    audio = build("audio")
    mask = torch.arange(9)[None, :] < torch.tensor([[9], [4]])
    a = torch.randn(2, 9, CONFIG.audio_mels).masked_fill(~mask[..., None], 0.0)
    b = torch.randn(2, 9, CONFIG.audio_mels).masked_fill(~mask[..., None], 0.0)
    blind_a, mask_a = audio.blind(a, mask)
    blind_b, _ = audio.blind(b, mask)
    assert torch.equal(mask_a, mask) and torch.equal(blind_a, blind_b)
    assert torch.equal(blind_a[~mask], a[~mask])  # padded frames untouched
    torch.testing.assert_close(blind_a[mask], torch.full_like(blind_a[mask], math.log(LOG_FLOOR)))
    # The value is what the front end makes of a silent waveform.
    silent_features, _ = audio.front_end(torch.zeros(1, 1600), None)
    torch.testing.assert_close(silent_features, torch.full_like(silent_features, math.log(LOG_FLOOR)))
    x_a, m_a = audio.bottom(blind_a, mask)
    x_b, m_b = audio.bottom(blind_b, mask)
    assert torch.equal(m_a, m_b) and torch.equal(x_a[m_a], x_b[m_b])
    wave_mask = torch.arange(800)[None, :] < torch.tensor([[800], [300]])
    blind_wave, blind_wave_mask = audio.blind(torch.randn(2, 800), wave_mask)
    assert not blind_wave.any() and torch.equal(blind_wave_mask, wave_mask)


def test_text_blind_leaves_no_word_and_keeps_padding():
    from multimodel.config import PAD_ID, UNK_ID

    text = build("text")
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([30, 17, 2, 1])
    mask = torch.arange(30)[None, :] < lengths[:, None]
    a = torch.randint(3, VOCAB, (4, 30), generator=g).masked_fill(~mask, PAD_ID)
    b = torch.randint(3, VOCAB, (4, 30), generator=g).masked_fill(~mask, PAD_ID)
    blind_a, blind_mask = text.blind(a, mask)
    blind_b, _ = text.blind(b, mask)
    assert torch.equal(blind_mask, mask) and torch.equal(blind_a, blind_b)  # nothing of the words is left
    assert torch.equal(blind_a[~mask], a[~mask]) and (blind_a[mask] == UNK_ID).all()
    # And so the encoder's memory of two different sentences of one length is the same.
    x_a, _ = text.bottom(blind_a, mask)
    x_b, _ = text.bottom(blind_b, mask)
    assert torch.equal(x_a, x_b)
    no_mask, none = text.blind(a, None)  # mask None: ids != PAD are the real tokens
    assert none is None and torch.equal(no_mask, blind_a)


def test_class_label_net_reaches_its_documented_widths():
    """The released code's downsampling block: residual and pooled width 1.25 D, then 2 D and
    2.5 D before the pool; the sequence halves."""
    D = CONFIG.hidden_size
    labels = build("class_label:10")
    (block,) = labels.downsample
    widths = [step.norm.normalized_shape[0] for step in (block.residual, block.conv0, block.conv1, block.conv2, block.conv3)]
    assert widths == [round(1.25 * D), D, round(1.25 * D), 2 * D, round(2.5 * D)]
    assert labels.output.in_features == round(2.5 * D)
    assert not block.conv2.first_relu and block.conv3.first_relu
    h = torch.randn(2, 7, D)
    out, mask = block(h, torch.ones(2, 7, dtype=torch.bool))
    assert out.shape == (2, 4, round(2.5 * D)) and mask.shape == (2, 4)
    wider = build("class_label:10", class_label_widths=(2.0, 3.0, 4.0), class_label_blocks=2)
    assert wider.output.in_features == 4 * D and len(wider.downsample) == 2
    assert wider.top(h, None).shape == (2, 10)
    legacy = build("class_label:10", class_label_net="convstep")
    assert legacy.output.in_features == D
    with pytest.raises(ConfigError, match="model.class_label_net must be 'downsample' or 'convstep', got 'pool'"):
        build("class_label:10", class_label_net="pool")


def test_paper_audio_net_stacks_eight_strided_blocks():
    audio = build("audio", audio_block_filters=(2, 4, 8, 16, 32, 64, 128, 256), audio_frequency_patch=1)
    assert audio.entry is None and len(audio.blocks) == 8
    assert [b.conv2.norm.normalized_shape[0] for b in audio.blocks] == [2, 4, 8, 16, 32, 64, 128, 256]
    features = torch.randn(2, 600, CONFIG.audio_mels)
    mask = torch.arange(600)[None, :] < torch.tensor([[600], [300]])
    x, out_mask = audio.bottom(features, mask)
    assert x.shape == (2, 3, CONFIG.hidden_size)  # 600 frames halved 8 times: ceil(600 / 256)
    assert out_mask.tolist() == [[True, True, True], [True, True, False]]

"""The assembled MultiModel: every modality pair, causality, padding, train/eval, gradients,
ablations, save/load and bad-input errors."""

import json

import pytest
import torch

from multimodel.errors import CheckpointError
from multimodel.layers.separable_conv import ConvStep
from multimodel.modalities import ModalityError
from multimodel.model.multimodel import MultiModel

from .conftest import SPECS, TINY, VOCAB, make_model

INPUT_SPECS = [s for s in SPECS if make_model().modality(s).is_input]
OUTPUT_SPECS = [s for s in SPECS if make_model().modality(s).is_output]


def batch(model, input_spec, target_spec, B=3, T_in=7, T_out=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs, input_mask = model.modality(input_spec).example_inputs(B, T_in, g)
    targets, target_mask = model.modality(target_spec).example_targets(B, T_out, g)
    return inputs, input_mask, targets, target_mask


def run(model, input_spec, target_spec, inputs, input_mask, targets, target_mask):
    return model(
        inputs, input_mask, targets, target_mask,
        input_modality=input_spec, target_modality=target_spec, task_token="To-English",
    )


@pytest.mark.parametrize("target_spec", OUTPUT_SPECS)
@pytest.mark.parametrize("input_spec", INPUT_SPECS)
def test_every_modality_pair_runs(model, input_spec, target_spec):
    data = batch(model, input_spec, target_spec)
    out = run(model, input_spec, target_spec, *data)
    targets, target_mask = data[2], data[3]
    if model.modality(target_spec).skips_decoder:
        assert out.logits.shape == (3, 10) and set(out.routing) == {"encoder.moe"}
    else:
        assert out.logits.shape == (3, 5, 100) and set(out.routing) == {"encoder.moe", "decoder.moe"}
        assert int(out.loss.count) == int(target_mask.sum())
    assert torch.isfinite(out.loss.loss) and torch.isfinite(out.aux_loss)


def test_decoder_and_mixer_are_causal(model):
    inputs, input_mask, targets, _ = batch(model, "text", "text", T_out=9)
    full = torch.ones_like(targets, dtype=torch.bool)
    reference = run(model, "text", "text", inputs, input_mask, targets, full).logits
    for t in (0, 4, 7):
        changed = targets.clone()
        changed[:, t + 1 :] = torch.randint(3, 100, changed[:, t + 1 :].shape)
        logits = run(model, "text", "text", inputs, input_mask, changed, full).logits
        torch.testing.assert_close(logits[:, : t + 1], reference[:, : t + 1])
        if t + 2 <= 8:
            assert not torch.allclose(logits[:, t + 2 :], reference[:, t + 2 :])


@pytest.mark.parametrize("input_spec", [s for s in INPUT_SPECS if s != "image"])
def test_extra_padding_does_not_change_real_outputs(model, input_spec):
    inputs, input_mask, targets, target_mask = batch(model, input_spec, "text")
    out = run(model, input_spec, "text", inputs, input_mask, targets, target_mask)
    pad_in = torch.zeros((3, 6) + inputs.shape[2:], dtype=inputs.dtype)
    no = torch.zeros(3, 6, dtype=torch.bool)
    padded = run(
        model, input_spec, "text",
        torch.cat([inputs, pad_in], 1), torch.cat([input_mask, no], 1),
        torch.cat([targets, torch.zeros(3, 6, dtype=torch.long)], 1), torch.cat([target_mask, no], 1),
    )
    torch.testing.assert_close(padded.logits[:, :5][target_mask], out.logits[target_mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.loss.loss, out.loss.loss, atol=1e-5, rtol=1e-5)
    # An example alone equals the same example inside a padded batch.
    n_in, n_out = int(input_mask[1].sum()), int(target_mask[1].sum())
    alone = run(model, input_spec, "text", inputs[1:2, :n_in], None, targets[1:2, :n_out], None)
    torch.testing.assert_close(alone.logits[0], out.logits[1, :n_out], atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    model = make_model()
    data = batch(model, "text", "text")
    model.train()
    assert not torch.equal(run(model, "text", "text", *data).logits, run(model, "text", "text", *data).logits)
    model.eval()
    assert torch.equal(run(model, "text", "text", *data).logits, run(model, "text", "text", *data).logits)


def test_gradients_reach_every_parameter():
    model = make_model().train()
    total = 0.0
    for input_spec in INPUT_SPECS:
        for target_spec in OUTPUT_SPECS:
            out = run(model, input_spec, target_spec, *batch(model, input_spec, target_spec))
            total = total + out.loss.loss + out.aux_loss
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    # Rows of unused task tokens get zero gradient; everything else must move.
    dead = [n for n, p in model.named_parameters() if n != "task_embedding.weight" and not p.grad.abs().sum() > 0]
    assert not dead, dead


@pytest.mark.parametrize("ablation", [{"use_moe": False}, {"use_attention": False}])
def test_ablations_remove_their_layers(ablation):
    model = make_model(**ablation).eval()
    names = [n for n, _ in model.named_modules()]
    if "use_moe" in ablation:
        assert not any(n.endswith(".moe") for n in names)
    else:
        assert not any(n.endswith(".attention") for n in names)
    out = run(model, "text", "text", *batch(model, "text", "text"))
    assert torch.isfinite(out.loss.loss)
    assert out.routing == {} if "use_moe" in ablation else set(out.routing) == {"encoder.moe", "decoder.moe"}


def test_save_pretrained_then_from_pretrained_reproduces_outputs(tmp_path):
    model = make_model(tie_text_embeddings=True).eval()
    data = batch(model, "audio", "text")
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = MultiModel.from_pretrained(tmp_path / "m")
    assert not loaded.training
    assert loaded.config == model.config and loaded.modality_specs == model.modality_specs
    assert loaded.vocab_size == model.vocab_size
    assert loaded.modality("text").output.weight is loaded.modality("text").embedding.weight
    assert torch.equal(run(model, "audio", "text", *data).logits, run(loaded, "audio", "text", *data).logits)


def test_format_1_models_load_with_the_body_they_were_built_with(tmp_path):
    """A model saved before the paper's self-attention, encoder timing and class-label net
    (format 1, whose config lacks those fields) loads as the model it was."""
    model = make_model(self_attention=False, encoder_timing_signal=False, class_label_net="convstep").eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("self_attention", "encoder_timing_signal", "class_label_net"):
        del saved["model"][key]
    # Format 1 was a training checkpoint whose meta.json held the model's config.
    (tmp_path / "config.json").unlink()
    (tmp_path / "meta.json").write_text(json.dumps({
        "format_version": 1, "step": 1, "config": {"model": saved["model"]}, "vocab_size": saved["vocab_size"],
        "modality_specs": saved["modality_specs"]}))
    loaded = MultiModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for target in ("text", "class_label:10"):
        data = batch(model, "image", target)
        assert torch.equal(run(model, "image", target, *data).logits, run(loaded, "image", target, *data).logits)


def test_encoder_output_depends_on_input_order():
    """The timing signal marks positions: the same vector at every input position gives
    different memory rows, so the decoder's attention can tell positions apart. Without it,
    interior rows (away from the convs' zero padding) are identical."""
    with_timing = make_model(use_moe=False).eval()
    without = make_model(use_moe=False, encoder_timing_signal=False).eval()
    x = torch.randn(1, 1, TINY.hidden_size).expand(1, 100, -1)  # (1, 100, D), one vector repeated
    memory, _, _ = with_timing.encoder(x, None)
    assert (memory[0, 45] - memory[0, 55]).abs().max() > 1e-2
    memory, _, _ = without.encoder(x, None)
    torch.testing.assert_close(memory[0, 45], memory[0, 55])


def test_from_pretrained_refuses_an_unknown_format_and_weights_that_do_not_fit(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "format_version": 99}))
    with pytest.raises(CheckpointError, match=r"config.json: format version 99, this multimodel reads versions"):
        MultiModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**saved, "vocab_size": VOCAB + 1}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: does not fit .*shape mismatch"):
        MultiModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json: missing"):
        MultiModel.from_pretrained(tmp_path)


def test_bad_inputs_raise_clear_errors(model):
    inputs, input_mask, targets, target_mask = batch(model, "text", "text")
    kw = dict(input_modality="text", target_modality="text", task_token="To-English")
    with pytest.raises(ModalityError, match="no modality 'video'"):
        model(inputs, input_mask, targets, target_mask, input_modality="video", target_modality="text")
    with pytest.raises(ValueError, match="unknown task token 'To-Klingon'"):
        model(inputs, input_mask, targets, target_mask, **{**kw, "task_token": "To-Klingon"})
    with pytest.raises(ValueError, match="unknown task token None"):
        model(inputs, input_mask, targets, target_mask, **{**kw, "task_token": None})
    with pytest.raises(ModalityError, match=r"shape \(B, T\), got \(3,\)"):
        model(inputs, input_mask, targets[:, 0], None, **kw)
    with pytest.raises(ModalityError, match="batch size 3 but targets have 2"):
        model(inputs, input_mask, targets[:2], target_mask[:2], **kw)
    with pytest.raises(ModalityError, match="empty"):
        model(inputs, input_mask, targets[:, :0], None, **kw)
    with pytest.raises(ModalityError, match="max_target_length"):
        model(inputs, input_mask, torch.full((3, TINY.max_target_length + 1), 5), None, **kw)
    with pytest.raises(ModalityError, match="at least 8×8"):
        model(torch.rand(3, 3, 4, 4), None, targets, target_mask, **{**kw, "input_modality": "image"})
    with pytest.raises(ModalityError, match="cannot be used as an input modality"):
        model(torch.rand(3, 5), None, targets, target_mask, **{**kw, "input_modality": "class_label:10"})
    with pytest.raises(ModalityError, match="unknown modality 'video'"):
        MultiModel(TINY, 100, ["text", "video"])


def test_classify_returns_class_logits(model):
    images, _ = model.modality("image").example_inputs(2, 28)
    logits = model.classify(images, None, input_modality="image", target_modality="class_label:10")
    assert logits.shape == (2, 10)
    with pytest.raises(ModalityError, match="use generate"):
        model.classify(images, None, input_modality="image", target_modality="text")


def test_model_on_two_threads_with_parallel_experts_matches_serial_experts():
    """The whole model with the MoE's experts on worker threads (two intra-op threads): the
    same loss and gradients when training, and the same tokens when generating under
    inference mode, as with the experts run one after another."""
    from dataclasses import replace as replace_config

    from multimodel.layers.expert_threads import expert_threads

    torch.set_num_threads(2)  # the autouse fixture restores the previous count
    if expert_threads() is None:
        pytest.skip("this torch build has no per-thread MKL/OpenMP control")
    models = []
    for parallel in (False, True):
        m = make_model(moe=replace_config(TINY.moe, parallel_experts=parallel)).eval()
        models.append(m)
    models[1].load_state_dict(models[0].state_dict())
    inputs, input_mask, targets, target_mask = batch(models[0], "text", "text", B=4, T_in=9, T_out=8)
    results = []
    for m in models:
        out = run(m, "text", "text", inputs, input_mask, targets, target_mask)
        m.zero_grad()
        loss = out.loss.loss + out.aux_loss
        loss.backward()
        grads = [p.grad.clone() for n, p in m.named_parameters() if ".moe." in n and p.grad is not None]
        with torch.inference_mode():
            tokens = m.generate(inputs, input_mask, input_modality="text", target_modality="text",
                                task_token="To-English", max_length=6)
        results.append((loss.detach(), grads, tokens))
    (loss_a, grads_a, tokens_a), (loss_b, grads_b, tokens_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a and len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
    assert tokens_b == tokens_a


def _body_masks(model, fn):
    """fn()'s result and the masks the body's ConvSteps received meanwhile, per part
    ("encoder" or "decoder side", the I/O mixer's and the decoder's)."""
    seen = {"encoder": [], "decoder side": []}

    def spy(part):
        return lambda _module, args: seen[part].append(args[1] if len(args) > 1 else None)

    hooks = [m.register_forward_pre_hook(spy("encoder" if part is model.encoder else "decoder side"))
             for part in (model.encoder, model.mixer, model.decoder) for m in part.modules()
             if isinstance(m, ConvStep)]
    try:
        out = fn()
    finally:
        for h in hooks:
            h.remove()
    return out, seen


@pytest.mark.parametrize("input_spec", ["text", "image"])
def test_padding_hints_skip_the_body_masks_in_training_with_the_same_result(input_spec):
    """A batch without padding, hinted as such (input_padded / target_padded False, what the
    collator sets), trains through the body with no masks and gives the masked path's loss
    and gradients; the hints change nothing outside training."""
    model = make_model().train()
    g = torch.Generator().manual_seed(1)
    inputs, input_mask = model.modality(input_spec).example_inputs(3, 7, g)
    input_mask = None if input_mask is None else torch.ones_like(input_mask)
    targets = torch.randint(3, VOCAB, (3, 6), generator=g)
    full = torch.ones_like(targets, dtype=torch.bool)

    def step(**hints):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # the same dropout and gate noise for both
        out = model(inputs, input_mask, targets, full, input_modality=input_spec, target_modality="text",
                    task_token="To-English", **hints)
        (out.loss.loss + out.aux_loss).backward()
        return out.loss.loss.detach(), out.aux_loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                               if p.grad is not None}

    (loss, aux, grads), masked = _body_masks(model, step)
    (loss_h, aux_h, grads_h), hinted = _body_masks(model, lambda: step(input_padded=False, target_padded=False))
    for part in ("encoder", "decoder side"):
        assert masked[part] and all(m is not None for m in masked[part])
        assert len(hinted[part]) == len(masked[part]) and all(m is None for m in hinted[part])
    torch.testing.assert_close(loss_h, loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aux_h, aux, atol=1e-5, rtol=1e-5)
    assert grads_h.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_h[name], grads[name], atol=1e-5, rtol=1e-4, msg=name)

    # The hint is a promise the body trusts in training: a false one lets padding through...
    padded = full.clone()
    padded[0, 3:] = False
    kwargs = dict(input_modality=input_spec, target_modality="text", task_token="To-English")
    _, trusted = _body_masks(model, lambda: model(inputs, input_mask, targets, padded, target_padded=False, **kwargs))
    assert all(m is None for m in trusted["decoder side"]) and all(m is not None for m in trusted["encoder"])
    # ...while outside training the masks are read and the hints do not matter.
    model.eval()
    with torch.no_grad():
        honest = model(inputs, input_mask, targets, padded, **kwargs).logits
        hinted_eval = model(inputs, input_mask, targets, padded, input_padded=False, target_padded=False, **kwargs)
    torch.testing.assert_close(hinted_eval.logits, honest)

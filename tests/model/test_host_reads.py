"""No host synchronisation in the model's training forward and backward.

A training step on an accelerator should queue work and never wait for it. The one read it
needs is the MoE's: its dropless dispatch sizes each expert's matrix products by the number
of token-slots routed to it, so it reads those counts on the host, once per MoE layer
(``layers/moe.py:_dispatch``). Input checks that read values (ids in range, no empty example)
run outside training only; the collator validates training batches.
"""

import pytest
import torch

from host_reads import count_host_reads  # tests/ is on sys.path (conftest.py)
from .conftest import SPECS, make_model

MOE_EXPERT_SIZES = "layers/moe.py:_dispatch"
"""The only place a training step may read a tensor on the host."""

MODEL = make_model()
INPUT_SPECS = [s for s in SPECS if MODEL.modality(s).is_input]
OUTPUT_SPECS = [s for s in SPECS if MODEL.modality(s).is_output]


def example(model, input_spec, target_spec, waveform=False):
    g = torch.Generator().manual_seed(0)
    if waveform:  # audio as raw samples, through the log-mel front end
        inputs = torch.randn(3, 1600, generator=g)
        input_mask = torch.arange(1600)[None, :] < torch.tensor([[1600], [1200], [900]])
    else:
        inputs, input_mask = model.modality(input_spec).example_inputs(3, 7, g)
    targets, target_mask = model.modality(target_spec).example_targets(3, 5, g)
    kwargs = dict(input_modality=input_spec, target_modality=target_spec, task_token="To-English")
    return (inputs, input_mask, targets, target_mask), kwargs


CASES = [(i, o, False) for i in INPUT_SPECS for o in OUTPUT_SPECS] + [("audio", "text", True)]


@pytest.mark.parametrize(
    "input_spec, target_spec, waveform", CASES, ids=[f"{i}-{o}{'-wave' if w else ''}" for i, o, w in CASES]
)
def test_training_forward_and_backward_read_only_the_expert_sizes(input_spec, target_spec, waveform):
    model = make_model().train()
    args, kwargs = example(model, input_spec, target_spec, waveform)
    with count_host_reads() as reads:
        out = model(*args, **kwargs)
        (out.loss.loss + out.aux_loss).backward()
        # What a trainer accumulates between log steps stays on the device too.
        routed = sum(stats.tokens_per_expert for stats in out.routing.values())
        correct = out.loss.correct + out.loss.count
    assert routed.device == correct.device == out.loss.loss.device
    moe_layers = len(out.routing)  # one read per MoE layer the batch went through
    assert moe_layers >= 1
    assert [r.where for r in reads.in_package()] == [MOE_EXPERT_SIZES] * moe_layers, [str(r) for r in reads]
    assert len(reads) == moe_layers, [str(r) for r in reads]  # nothing from torch's Python code either


def test_the_counter_sees_reads_and_their_callers():
    """The counter is what the test above relies on: it must see every kind of read."""
    x = torch.arange(6.0)
    mask = x > 2
    with count_host_reads() as reads:
        x.sum().item()
        bool(x.any())
        int(x[0])
        float(x.max())
        x.tolist()
        x.nonzero()
        x[mask]
        x.repeat_interleave(torch.tensor([1, 0, 2, 1, 1, 1]))
        x.cpu()
        x * 2  # not a read
    names = [r.func for r in reads]
    assert names == [
        "item", "__bool__", "__int__", "__float__", "tolist", "nonzero", "__getitem__",
        "repeat_interleave", "cpu",
    ]
    assert all(r.file == __file__ and r.function == "test_the_counter_sees_reads_and_their_callers" for r in reads)
    assert not reads.in_package()


def test_evaluation_still_checks_values_that_training_leaves_to_the_collator():
    """Out-of-range ids, class labels and empty examples are refused outside training."""
    from multimodel.modalities import ModalityError

    model = make_model().eval()
    (inputs, input_mask, targets, target_mask), kwargs = example(model, "text", "text")
    with pytest.raises(ModalityError, match=r"ids must lie in \[0, 100\)"):
        model(inputs.masked_fill(~input_mask, 100), input_mask, targets, target_mask, **kwargs)
    empty = target_mask.clone()
    empty[1] = False
    with pytest.raises(ModalityError, match=r"examples \[1\] are empty"):
        model(inputs, input_mask, targets, empty, **kwargs)
    labels = torch.tensor([0, 10, 3])
    with pytest.raises(ModalityError, match=r"class targets must lie in \[0, 10\)"):
        model(inputs, input_mask, labels, None, **{**kwargs, "target_modality": "class_label:10"})
    with count_host_reads() as reads:
        model(inputs, input_mask, targets, target_mask, **kwargs)
    functions = {r.function for r in reads.in_package()}
    assert {"_check_ids", "check_mask", "padding_or_none"} <= functions

"""The collator checks what the model takes on trust in training (where a check would read the
device): class labels in range, at least one real input and target position per example."""

from __future__ import annotations

import numpy as np
import pytest

from multimodel.data.batching import Collator
from multimodel.data.example import Example
from multimodel.data.tokenizer import EOS, PAD, Tokenizer
from multimodel.errors import UserError


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    texts = [f"{a} plus {b} is {a + b}" for a in range(30) for b in range(30)]
    return Tokenizer.train(texts, vocab_size=60)


def test_class_labels_outside_the_task_s_classes_are_refused(tokenizer):
    collate = Collator("shapes", True, tokenizer, num_classes=3)
    images = [np.zeros((1, 4, 4), np.float32)] * 2
    batch = collate([Example(images[0], 2), Example(images[1], 0)])
    assert batch.targets.tolist() == [2, 0]
    for label in (3, -1):
        with pytest.raises(UserError, match=rf"task shapes: class label {label} is outside \[0, 3\)"):
            collate([Example(images[0], 0), Example(images[1], label)])


def test_every_row_keeps_a_real_input_and_target_position(tokenizer):
    text = Collator("copy", False, tokenizer)
    batch = text([Example("", ""), Example("1 plus 2", "3")])
    assert batch.input_mask.sum(1).tolist()[0] == 1 and batch.inputs[0, 0].item() == PAD
    assert batch.target_mask.sum(1).min().item() >= 1 and batch.targets[0, 0].item() == EOS
    audio = Collator("speech", False, tokenizer)
    frames = audio([Example(np.ones((5, 3), np.float32), "1"), Example(np.ones((2, 3), np.float32), "2")])
    assert frames.input_mask.sum(1).tolist() == [5, 2]
    with pytest.raises(UserError, match="task speech: an example with no input frames or samples"):
        audio([Example(np.ones((5, 3), np.float32), "1"), Example(np.zeros((0, 3), np.float32), "2")])


def test_the_collator_says_which_sides_have_padding(tokenizer):
    """Batch.input_padded / target_padded: False only where every row has the same length."""
    text = Collator("copy", False, tokenizer)
    same = text([Example("1 plus 2", "3"), Example("2 plus 1", "3")])
    assert same.input_mask.all() and same.target_mask.all()
    assert (same.input_padded, same.target_padded) == (False, False)
    mixed = text([Example("1 plus 2", "3"), Example("12", "12 plus 0 is 12")])
    assert (mixed.input_padded, mixed.target_padded) == (True, True)
    assert not mixed.input_mask.all() and not mixed.target_mask.all()
    images = Collator("shapes", True, tokenizer, num_classes=3)
    pictures = images([Example(np.zeros((1, 4, 4), np.float32), 1)] * 2)
    assert (pictures.input_padded, pictures.target_padded) == (False, False)
    audio = Collator("speech", False, tokenizer)
    frames = audio([Example(np.ones((5, 3), np.float32), "1"), Example(np.ones((2, 3), np.float32), "1")])
    assert (frames.input_padded, frames.target_padded) == (True, False)
    # Moving and sharding keep the collator's answer.
    assert (same.to("cpu").input_padded, same.shard(1, 2).target_padded) == (False, False)
    assert (mixed.to("cpu").input_padded, mixed.shard(0, 2).target_padded) == (True, True)

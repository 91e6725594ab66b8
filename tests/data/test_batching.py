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

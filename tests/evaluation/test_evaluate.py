"""Evaluation of a (random) tiny model: the blind control and the per-task table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multimodel.config import load_config
from multimodel.corpora.captions import captions_for
from multimodel.data.batching import Collator
from multimodel.data.example import Example
from multimodel.data.tokenizer import Tokenizer
from multimodel.evaluation import evaluate as evaluate_module
from multimodel.evaluation.evaluate import evaluate_task, format_table
from multimodel.model.multimodel import MultiModel
from multimodel.tasks import TASKS
from multimodel.training.run import breakdown_lines

CONFIG = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.py")
SPECS = ["image", "audio", "text", "class_label:10"]
LAYOUTS = [[(7, (0, 0)), (8, (1, 1))], [(0, (0, 0)), (1, (0, 1)), (5, (1, 1))], [(2, (0, 1)), (2, (1, 1))]]
NUMBERS = [("twenty one", "einundzwanzig"), ("three hundred", "dreihundert"), ("forty two", "zweiundvierzig"),
           ("seven", "sieben")]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    texts = [c for items in LAYOUTS for c in captions_for(items)] + [t for pair in NUMBERS for t in pair]
    return Tokenizer.train(texts, vocab_size=120)


@pytest.fixture(scope="module")
def model(tokenizer) -> MultiModel:
    torch.manual_seed(0)
    return MultiModel(CONFIG.model, tokenizer.vocab_size, SPECS).eval()


def examples_of(task: str) -> list[Example]:
    rng = np.random.default_rng(0)
    if task == "digits":
        return [Example(rng.random((1, 8, 8), dtype=np.float32), int(rng.integers(10))) for _ in range(20)]
    if task == "fashion_captions":
        return [Example(rng.random((1, 64, 64), dtype=np.float32), captions_for(items)[0], captions_for(items))
                for items in LAYOUTS]
    if task == "speech_numbers":
        return [Example(rng.standard_normal((int(rng.integers(20, 40)), 80), dtype=np.float32), en)
                for en, _ in NUMBERS]
    return [Example(en, de) for en, de in NUMBERS]


def evaluate(model, tokenizer, name: str, **options):
    task = TASKS[name]
    collate = Collator(name, task.is_classification, tokenizer, CONFIG.model.max_target_length)
    return evaluate_task(model, task, examples_of(name), collate, tokenizer, batch_size=8,
                         num_shown=1, **options)


def random_inputs(spec: str, shape: tuple[int, ...], seed: int, mask: torch.Tensor | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec == "text":  # subword ids past the special ones, padding where the mask says
        return torch.randint(3, 100, shape, generator=g).masked_fill(~mask, 0)
    return torch.rand(shape, generator=g)


@pytest.mark.parametrize("spec, shape", [("image", (3, 1, 28, 28)), ("audio", (3, 17, 80)), ("text", (3, 17))])
def test_encoder_output_on_blinded_inputs_does_not_depend_on_the_content(model, spec, shape):
    mask = None if spec == "image" else torch.arange(17)[None, :] < torch.tensor([[17], [9], [12]])
    blind = model.modality(spec).blind
    outputs = []
    for seed in (1, 2):
        inputs = random_inputs(spec, shape, seed, mask)
        blinded, blind_mask = blind(inputs, mask, torch.Generator().manual_seed(0))
        outputs.append(model.encode(blinded, blind_mask, input_modality=spec))
    seen = [model.encode(random_inputs(spec, shape, s, mask), mask, input_modality=spec).memory for s in (1, 2)]
    assert not torch.allclose(seen[0], seen[1])  # the real inputs do differ in the memory
    assert torch.equal(outputs[0].mask, outputs[1].mask)
    real = outputs[0].mask
    torch.testing.assert_close(outputs[0].memory[real], outputs[1].memory[real], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["digits", "fashion_captions", "speech_numbers", "numbers_en_de"])
def test_evaluate_task_reports_blind_metrics_deterministically(model, tokenizer, name):
    plain = evaluate(model, tokenizer, name)
    assert not any(key.startswith("blind_") for key in plain.metrics)
    result = evaluate(model, tokenizer, name, blind_control=True)
    for metric, value in plain.metrics.items():  # the real scores are unchanged
        assert result.metrics[metric] == value
    assert set(result.metrics) == set(plain.metrics) | {f"blind_{m}" for m in plain.metrics}
    assert f"blind_{TASKS[name].metrics[0]}" in result.metrics
    assert "blind_prediction" in result.examples[0]
    assert result.token_accuracy == plain.token_accuracy and result.log_perplexity == plain.log_perplexity
    again = evaluate(model, tokenizer, name, blind_control=True)
    assert again.metrics == result.metrics


def test_blind_classification_scores_the_class_prior(model, tokenizer):
    result = evaluate(model, tokenizer, "digits", blind_control=True)
    targets = np.array([e.target for e in examples_of("digits")])
    with torch.no_grad():  # every blank image gets the same class
        blank = model.classify(torch.zeros(1, 1, 8, 8), None, input_modality="image", target_modality="class_label:10")
    predicted = int(blank.argmax(-1)[0])
    assert result.metrics["blind_accuracy"] == pytest.approx(100.0 * float(np.mean(targets == predicted)))


def test_captions_report_item_f1_as_headline_with_bleu_beside_it(model, tokenizer):
    result = evaluate(model, tokenizer, "fashion_captions", blind_control=True)
    assert TASKS["fashion_captions"].metrics[0] == "item_f1"
    for key in ("item_f1", "item_precision", "item_recall", "item_only_f1", "caption_bleu"):
        assert key in result.metrics and f"blind_{key}" in result.metrics
    table = format_table([result], {"fashion_captions": TASKS["fashion_captions"]})
    header, _, row = table.splitlines()
    assert "| value | blind |" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "item F1" and cells[3] == f"{result.metrics['item_f1']:.1f}"
    assert cells[4] == f"{result.metrics['blind_item_f1']:.1f}" and cells[5].startswith("BLEU ")
    no_blind = evaluate(model, tokenizer, "fashion_captions")
    row = format_table([no_blind], {"fashion_captions": TASKS["fashion_captions"]}).splitlines()[2]
    assert [c.strip() for c in row.strip("|").split("|")][4] == "—"


def test_a_modality_without_a_blind_control_keeps_its_real_scores(model, tokenizer, monkeypatch):
    def no_blind(inputs, mask, generator=None):
        raise NotImplementedError("this modality has no blind control")

    monkeypatch.setattr(model.modality("image"), "blind", no_blind)
    with pytest.warns(UserWarning, match="task digits: no blind control"):
        result = evaluate(model, tokenizer, "digits", blind_control=True)
    assert result.metrics == evaluate(model, tokenizer, "digits").metrics  # no blind_* keys, the rest intact


def test_speech_is_also_scored_per_voice_on_the_right_examples(model, tokenizer, monkeypatch):
    """Examples of voice "a" are decoded right and those of "b" wrong (the stand-in decoder reads
    the batch's references); the per-voice WERs must say so, although evaluation sorts the
    examples by length."""
    examples = examples_of("speech_numbers")
    voices = ["a", "b", "a", "b"]
    for ex, voice in zip(examples, voices):
        ex.meta.update(voice=voice, kind="cardinal")
    right = {ex.target for ex, voice in zip(examples, voices) if voice == "a"}

    def fake_decode(model, batch, task, tokenizer, **options):
        return [r[0] if r[0] in right else "wrong" for r in batch.references]

    monkeypatch.setattr(evaluate_module, "decode_batch", fake_decode)
    task = TASKS["speech_numbers"]
    collate = Collator("speech_numbers", False, tokenizer, CONFIG.model.max_target_length)
    result = evaluate_task(model, task, examples, collate, tokenizer, batch_size=3)
    by_voice = result.breakdown["voice"]
    assert by_voice["a"] == {"count": 2.0, "wer": 0.0, "substituted": 0.0, "deleted": 0.0, "inserted": 0.0,
                             "length_ratio": 100.0}
    b = by_voice["b"]
    assert b["count"] == 2.0 and b["wer"] == 100.0  # 1 substitution + deletions
    assert b["substituted"] + b["deleted"] == 100.0 and b["inserted"] == 0.0 and b["length_ratio"] == b["substituted"]
    assert result.breakdown["kind"]["cardinal"]["wer"] == pytest.approx(result.metrics["wer"])
    assert "by voice" in "\n".join(breakdown_lines([result], {"speech_numbers": task}))

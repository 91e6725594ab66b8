"""Metrics on hand-computed cases: top-k, BLEU, WER, EVALB-style bracket F1, caption item F1,
per-token scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from multimodel.evaluation.metrics import (
    bracket_f1,
    caption_item_f1,
    caption_items,
    corpus_bleu,
    log_perplexity,
    token_accuracy,
    topk_accuracy,
    word_error_rate,
    word_errors,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"

# ----------------------------------------------------------------------------------------
# top-k

LOGITS = np.array(
    [
        [0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # ranking 1 5 6 3 4 0 2
        [0.7, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 0 6 5 4 3 2 1
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 6 5 4 3 2 1 0
    ],
    dtype=np.float32,
)
TARGETS = np.array([1, 3, 0])  # ranks 1, 5, 7


def test_topk_accuracy_hand_computed():
    assert topk_accuracy(LOGITS, TARGETS, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(LOGITS, TARGETS, 5) == pytest.approx(2 / 3)
    assert topk_accuracy(LOGITS, TARGETS, 7) == 1.0
    assert topk_accuracy(LOGITS, TARGETS, 50) == 1.0  # k past the classes counts them all


def test_topk_accuracy_takes_tensors_and_ranked_ids():
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16, requires_grad=True)
    assert topk_accuracy(logits, torch.tensor(TARGETS), 5) == pytest.approx(2 / 3)
    ranked = np.argsort(-LOGITS, axis=1)[:, :5]  # integer ids, best first
    assert topk_accuracy(ranked, TARGETS.tolist(), 5) == pytest.approx(2 / 3)
    assert topk_accuracy(ranked, TARGETS, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(np.zeros((0, 4)), np.zeros(0, dtype=int), 1) == 0.0
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, TARGETS[:2], 1)


# ----------------------------------------------------------------------------------------
# BLEU


def test_bleu_identical_is_100_and_takes_any_reference():
    hyps = ["a man rides a horse on the beach .", "two dogs play in the snow ."]
    assert corpus_bleu(hyps, [[h] for h in hyps]) == pytest.approx(100.0)
    refs = [
        ["a woman walks .", hyps[0], "someone rides ."],
        ["two dogs play in the snow ."],
    ]  # 3 and 1 references
    assert corpus_bleu(hyps, refs) == pytest.approx(100.0)


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(
        expected, abs=1e-6
    )
    assert corpus_bleu(["x y z w"], [["a b c d"]]) == 0.0
    assert corpus_bleu([], []) == 0.0


def test_bleu_rejects_flat_references():
    with pytest.raises(ValueError, match="wrap a single reference"):
        corpus_bleu(["a b"], ["a b"])
    with pytest.raises(ValueError, match="1 hypotheses but 2"):
        corpus_bleu(["a b"], [["a b"], ["c"]])


# ----------------------------------------------------------------------------------------
# WER


def test_wer_hand_computed():
    assert word_error_rate(["the bat sat"], ["the cat sat"]) == pytest.approx(1 / 3)  # one substitution
    assert word_error_rate(["a b c"], ["a b"]) == pytest.approx(1 / 2)  # one insertion
    assert word_error_rate([""], ["a b c"]) == 1.0  # empty hypothesis: all deletions
    # corpus level: (1 substitution + 2 deletions) / 6 reference words
    assert word_error_rate(["a x c d", "  "], ["a b c d", "e f"]) == pytest.approx(3 / 6)
    assert word_error_rate(["a b", "z"], ["a b", ""]) == pytest.approx(1 / 2)  # empty reference: insertions


def test_word_errors_name_each_kind_and_sum_to_the_wer():
    hyps, refs = ["a x c d", "  ", "the cat sat on", "z"], ["a b c d", "e f", "the cat sat", ""]
    counts = word_errors(hyps, refs)
    assert counts == {"substitutions": 1, "deletions": 2, "insertions": 2, "reference_words": 9, "hypothesis_words": 9}
    assert word_error_rate(hyps, refs) == pytest.approx(5 / 9)
    # The evaluation reports them per reference word beside the WER, and the transcripts' length.
    from multimodel.evaluation.evaluate import _score

    scores = _score("wer", ["seven", "one two three four"], [["seven eight"], ["one two three"]])
    assert scores == pytest.approx({"wer": 40.0, "substituted": 0.0, "deleted": 20.0, "inserted": 20.0,
                                    "length_ratio": 100.0})


def test_wer_undefined_cases():
    with pytest.raises(ValueError, match="no words"):
        word_error_rate(["a"], [""])
    with pytest.raises(ValueError):
        word_error_rate(["a"], ["a", "b"])


# ----------------------------------------------------------------------------------------
# bracket F1

# positions (punctuation deleted): DT0 NN1 VBD2 IN3 DT4 NN5 (.)
# brackets: S(0,6) NP(0,2) VP(2,6) PP(3,6) NP(4,6)
GOLD = "(S (NP DT NN ) (VP VBD (PP IN (NP DT NN ) ) ) . )"


def test_bracket_f1_identical():
    assert bracket_f1([GOLD], [GOLD]) == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "exact_match": 1.0,
        "valid_fraction": 1.0,
    }


def test_bracket_f1_one_missing_and_one_wrong_bracket():
    missing = "(S (NP DT NN ) (VP VBD (PP IN DT NN ) ) . )"  # lacks NP(4,6): 4 predicted, 4 matched, 5 gold
    scores = bracket_f1([missing], [GOLD])
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(4 / 5)
    assert scores["f1"] == pytest.approx(2 * 1 * 0.8 / 1.8) and scores["exact_match"] == 0.0
    wrong = "(S (NP DT NN ) (VP VBD ) (PP IN (NP DT NN ) ) . )"  # VP(2,3) instead of VP(2,6)
    scores = bracket_f1([wrong], [GOLD])
    assert scores["precision"] == pytest.approx(4 / 5) and scores["recall"] == pytest.approx(4 / 5)
    assert scores["f1"] == pytest.approx(4 / 5)


def test_bracket_f1_malformed_prediction_counts_zero_not_crash():
    missing = "(S (NP DT NN ) (VP VBD (PP IN DT NN ) ) . )"
    for malformed in ("(S (NP DT NN ) (VP", "(S NN )VP", "NN )", "", "(S (NP ) )"):
        scores = bracket_f1([missing, malformed], [GOLD, GOLD])
        # matched 4, predicted 4, gold 10
        assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(0.4), malformed
        assert scores["f1"] == pytest.approx(2 * 0.4 / 1.4) and scores["valid_fraction"] == 0.5


def test_bracket_f1_evalb_conventions():
    # punctuation positions are deleted: attaching the comma inside or outside NP is the same span
    assert bracket_f1(["(S (NP NNP , ) (VP VBD ) . )"], ["(S (NP NNP ) , (VP VBD ) . )"])["f1"] == 1.0
    # punctuation is read from the gold tags when the lengths agree (the '.' mis-tagged NN inside VP)
    assert bracket_f1(["(S (NP NN ) (VP VBD NN ) )"], ["(S (NP NN ) (VP VBD ) . )"])["f1"] == 1.0
    # PRT and ADVP are one label; closing labels are accepted
    assert bracket_f1(["(S (VP VB (ADVP RP )ADVP )VP )S"], ["(S (VP VB (PRT RP ) ) )"])["f1"] == 1.0
    # brackets are a multiset: the unary NP -> NP chain is two brackets
    scores = bracket_f1(["(S (NP NN ) )"], ["(S (NP (NP NN ) ) )"])
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(2 / 3)
    # a bracket over punctuation only is not a bracket; the root S counts
    assert bracket_f1(["(S NN (X . ) )"], ["(S NN . )"])["precision"] == 1.0
    # a wrong-length prediction is scored by positions, not skipped: S(0,3) matches, NP(0,3) does not
    scores = bracket_f1(["(S (NP DT NN NN ) )"], ["(S (NP DT NN ) VBD )"])
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["valid_fraction"] == 1.0


def test_bracket_f1_errors_and_empty():
    with pytest.raises(ValueError, match="gold tree 0 is malformed"):
        bracket_f1([GOLD], ["(S NN"])
    with pytest.raises(ValueError):
        bracket_f1([GOLD], [])
    assert bracket_f1([], [])["f1"] == 0.0


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real corpora not found at {SHARED}")
def test_bracket_f1_real_trees_against_themselves():
    from multimodel.corpora.ptb import read_ptb

    targets = [e.target for e in read_ptb(SHARED / "ptb_sample" / "treebank.zip", limit=400).examples]
    assert bracket_f1(targets, targets)["f1"] == 1.0
    shifted = bracket_f1(targets[1:] + targets[:1], targets)
    assert 0.0 < shifted["f1"] < 0.5 and shifted["valid_fraction"] == 1.0


# ----------------------------------------------------------------------------------------
# per-token scores


def test_token_accuracy_and_log_perplexity():
    assert token_accuracy(3, 4) == 0.75 and token_accuracy(0, 0) == 0.0
    with pytest.raises(ValueError):
        token_accuracy(5, 4)
    assert log_perplexity(6.0, 3) == 2.0
    assert math.exp(log_perplexity(3 * math.log(10.0), 3)) == pytest.approx(
        10.0
    )  # uniform over 10 = perplexity 10
    with pytest.raises(ValueError, match="at least one token"):
        log_perplexity(1.0, 0)


# ----------------------------------------------------------------------------------------
# Caption items: which items a built-in caption names, and where

REFERENCE = ("a t-shirt on the top left, a shirt on the top right, a t-shirt on the bottom left and a sandal on"
             " the bottom right")


def item_scores(hypothesis: str, reference: str = REFERENCE) -> dict[str, float]:
    return caption_item_f1([hypothesis], [reference])


def test_caption_items_reads_every_template_of_the_generator():
    from collections import Counter

    from multimodel.corpora.captions import NOUNS, POSITIONS, captions_for

    layouts = [
        [(7, (0, 0)), (8, (1, 1))],  # diagonal
        [(0, (0, 0)), (1, (0, 1))],  # one row
        [(2, (0, 1)), (2, (1, 1))],  # one column, the same item twice
        [(9, (0, 1)), (9, (1, 0)), (3, (1, 1))],
        [(0, (0, 0)), (6, (0, 1)), (0, (1, 0)), (5, (1, 1))],
    ]
    for items in layouts:
        truth = Counter((NOUNS[c][0], POSITIONS[cell]) for c, cell in items)
        for caption in captions_for(items):
            found = caption_items(caption)
            if caption.startswith("a picture of"):  # names the items, not where they are
                assert found == Counter((NOUNS[c][0], None) for c, _ in items), caption
            else:
                assert found == truth, caption


def test_caption_item_f1_exact_match_is_100_percent_whatever_the_template():
    other_template = ("on the top left there is a t-shirt, on the top right there is a shirt, on the bottom left"
                      " there is a t-shirt and on the bottom right there is a sandal")
    for hypothesis in (REFERENCE, other_template):
        scores = item_scores(hypothesis)
        assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "position_f1": 1.0, "item_only_f1": 1.0,
                          "exact_match": 1.0}


def test_caption_item_f1_wrong_item_in_one_position():
    scores = item_scores(REFERENCE.replace("a sandal", "a bag"))
    assert scores["precision"] == scores["recall"] == pytest.approx(3 / 4)
    assert scores["item_only_f1"] == pytest.approx(3 / 4) and scores["exact_match"] == 0.0


def test_caption_item_f1_missing_and_extra_items():
    missing = item_scores("a t-shirt on the top left, a shirt on the top right and a t-shirt on the bottom left")
    assert missing["precision"] == 1.0 and missing["recall"] == pytest.approx(3 / 4)
    assert missing["f1"] == pytest.approx(2 * 0.75 / 1.75)
    extra = item_scores("a t-shirt on the top left and a dress on the bottom right",
                        "a t-shirt on the top left")
    assert extra["precision"] == pytest.approx(1 / 2) and extra["recall"] == 1.0


def test_caption_item_f1_wrong_position_counts_for_items_only():
    swapped = item_scores("a sandal on the top left, a shirt on the top right, a t-shirt on the bottom left"
                          " and a t-shirt on the bottom right")
    assert swapped["precision"] == swapped["recall"] == pytest.approx(2 / 4)
    assert swapped["item_only_f1"] == 1.0  # the right items, two in the wrong cells
    unplaced = item_scores("a picture of two t-shirts, a shirt and a sandal")
    assert unplaced["f1"] == 1.0 and unplaced["position_f1"] == 0.0 and unplaced["item_only_f1"] == 1.0
    # An unplaced mention only credits an item nothing else matched, and never a wrong one.
    both = item_scores("a t-shirt on the bottom right and a picture of a t-shirt", "a t-shirt on the top left")
    assert both["precision"] == pytest.approx(1 / 2) and both["recall"] == 1.0 and both["position_f1"] == 0.0
    wrong = item_scores("a picture of a bag and a coat")
    assert wrong["f1"] == 0.0


def test_caption_item_f1_unparsable_text_scores_zero_without_crashing():
    for hypothesis in ("", "the the the", "a a a on the top left", "left right top bottom row corner", "🙂 ,,, and"):
        scores = item_scores(hypothesis)
        assert scores["recall"] == 0.0 and scores["precision"] == 0.0 and scores["f1"] == 0.0
    assert caption_item_f1([], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "position_f1": 0.0,
                                       "item_only_f1": 0.0, "exact_match": 0.0}
    with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
        caption_item_f1(["a bag on the top left"], [REFERENCE, REFERENCE])


def test_caption_item_f1_is_micro_averaged():
    # 4 + 1 reference pairs; the first caption is perfect, the second names a wrong item.
    scores = caption_item_f1([REFERENCE, "a bag on the top left"], [REFERENCE, "a coat on the top left"])
    assert scores["recall"] == pytest.approx(4 / 5) and scores["precision"] == pytest.approx(4 / 5)
    assert scores["exact_match"] == pytest.approx(1 / 2)

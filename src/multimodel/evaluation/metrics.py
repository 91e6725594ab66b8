"""The scores MultiModel reports (paper section 4, Tables 1-3), as pure functions.

Scales: accuracies, WER and bracket scores are fractions in [0, 1]; BLEU is 0-100, as
sacrebleu and the paper report it. Callers multiply by 100 for display.

* classification (ImageNet): :func:`topk_accuracy` (top-1 and top-5);
* translation and captioning: :func:`corpus_bleu` (sacrebleu, several references allowed);
* speech recognition: :func:`word_error_rate` (jiwer);
* constituency parsing: :func:`bracket_f1` (EVALB-style labelled brackets on linearised trees);
* the built-in captions: :func:`caption_item_f1` (which items are named, and where);
* every task: :func:`token_accuracy` and :func:`log_perplexity` of the targets, the two
  numbers of the paper's Table 3.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from multimodel.corpora import captions
from multimodel.corpora.trees import Tree, delinearize


def _to_numpy(values: Any) -> np.ndarray:
    """An array from a list, numpy array or torch tensor (any device, any float dtype)."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach()
        if values.is_floating_point():
            values = values.float()  # bfloat16/half have no numpy dtype
        values = values.cpu().numpy()
    return np.asarray(values)


def topk_accuracy(logits_or_ranked: Any, targets: Any, k: int) -> float:
    """Fraction of examples whose target is among the top ``k`` predictions.

    Args:
        logits_or_ranked: either scores ``(N, C)`` (any float dtype; higher = more likely), or
            already-ranked class ids ``(N, R)`` (an integer array, best first, R >= k or R = C).
        targets: true class ids ``(N,)``.
        k: how many top predictions count; ``k`` larger than the number of columns counts
            them all.

    Returns:
        Accuracy in [0, 1]; 0.0 when there are no examples. Ties between equal scores are
        broken towards the lower class id.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    predictions = _to_numpy(logits_or_ranked)
    gold = _to_numpy(targets).reshape(-1)
    if predictions.ndim != 2 or predictions.shape[0] != gold.shape[0]:
        raise ValueError(
            f"expected predictions (N, C) and targets (N,), got {predictions.shape} and {gold.shape}"
        )
    if gold.size == 0:
        return 0.0
    k = min(k, predictions.shape[1])
    if np.issubdtype(predictions.dtype, np.integer):
        top = predictions[:, :k]  # already ranked
    else:
        top = np.argsort(-predictions, axis=1, kind="stable")[:, :k]  # (N, k)
    return float((top == gold[:, None]).any(axis=1).mean())


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing off) in 0-100.

    Args:
        hypotheses: one detokenised output string per example.
        references: ``references[i]`` is the list of acceptable references of hypothesis ``i``
            (one for translation, about five for COCO captions); the lists may differ in length.

    Returns:
        BLEU in [0, 100]: 100 when every hypothesis equals one of its references; 0.0 for an
        empty corpus.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return 0.0
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(
                f"references[{i}] must be a non-empty list of strings, got {refs!r} "
                "(wrap a single reference: [[ref] for ref in refs])"
            )
    # sacrebleu takes one stream per reference slot; a missing reference is None.
    slots = max(len(refs) for refs in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(slots)]
    return float(sacrebleu.metrics.BLEU().corpus_score(list(hypotheses), streams).score)


def word_errors(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, int]:
    """Counts of a corpus's word alignment: ``substitutions``, ``deletions`` and ``insertions``
    (their sum over ``reference_words`` is the word error rate), and ``hypothesis_words``.

    Words are whitespace-separated tokens, compared exactly (readers already lower-case the
    transcripts). An empty hypothesis counts all its reference's words as deletions; an empty
    reference counts all its hypothesis's words as insertions.

    Raises:
        ValueError: different numbers of hypotheses and references.
    """
    import jiwer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    counts = {"substitutions": 0, "deletions": 0, "insertions": 0,
              "reference_words": sum(len(r.split()) for r in references),
              "hypothesis_words": sum(len(h.split()) for h in hypotheses)}
    both: list[tuple[str, str]] = []  # pairs with words on both sides, for jiwer
    for reference, hypothesis in zip(references, hypotheses):
        reference_tokens, hypothesis_tokens = reference.split(), hypothesis.split()
        if reference_tokens and hypothesis_tokens:
            both.append((" ".join(reference_tokens), " ".join(hypothesis_tokens)))
        else:  # all deletions or all insertions
            counts["deletions"] += len(reference_tokens)
            counts["insertions"] += len(hypothesis_tokens)
    if both:
        out = jiwer.process_words([r for r, _ in both], [h for _, h in both])
        counts["substitutions"] += out.substitutions
        counts["deletions"] += out.deletions
        counts["insertions"] += out.insertions
    return counts


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words
    (:func:`word_errors` counts them).

    Returns:
        WER as a fraction (can exceed 1 with many insertions).

    Raises:
        ValueError: different numbers of hypotheses and references, or no reference words at
            all (WER is undefined).
    """
    return error_rate(word_errors(hypotheses, references))


def error_rate(counts: dict[str, int]) -> float:
    """The word error rate of :func:`word_errors`' counts, as a fraction.

    Raises:
        ValueError: no reference words at all (WER is undefined).
    """
    if counts["reference_words"] == 0:
        raise ValueError("the references contain no words: word error rate is undefined")
    return (counts["substitutions"] + counts["deletions"] + counts["insertions"]) / counts["reference_words"]


# ----------------------------------------------------------------------------------------
# Constituency parsing: labelled brackets, EVALB style.

PUNCTUATION_TAGS = frozenset({",", ":", "``", "''", "."})
"""POS tags EVALB's COLLINS.prm deletes (DELETE_LABEL): not counted as span positions."""

ROOT_LABELS = frozenset({"", "TOP", "ROOT"})
"""Wrapper labels ignored as brackets (COLLINS.prm: DELETE_LABEL TOP)."""

EQUIVALENT_LABELS = {"PRT": "ADVP"}
"""Labels scored as equal (COLLINS.prm: EQ_LABEL ADVP PRT)."""


def _tags(tree: Tree) -> list[str]:
    if tree.is_preterminal:
        return [tree.label]
    return [tag for child in tree.children if isinstance(child, Tree) for tag in _tags(child)]


def _brackets(tree: Tree, deleted: list[bool]) -> Counter:
    """Multiset of (label, start, end) over non-deleted leaf positions; empty spans dropped."""
    brackets: Counter = Counter()
    position = 0  # index among all leaves
    kept = 0  # index among the leaves that count

    def walk(node: Tree) -> None:
        nonlocal position, kept
        if node.is_preterminal:  # a POS leaf
            kept += not deleted[position]
            position += 1
            return
        start = kept
        for child in node.children:
            if isinstance(child, Tree):
                walk(child)
        if kept > start and node.label not in ROOT_LABELS:
            brackets[(EQUIVALENT_LABELS.get(node.label, node.label), start, kept)] += 1

    walk(tree)
    return brackets


def _as_tree(tree: str | Tree) -> Tree:
    return tree if isinstance(tree, Tree) else delinearize(tree)


def bracket_f1(predicted_trees: Sequence[str | Tree], gold_trees: Sequence[str | Tree]) -> dict[str, float]:
    """Labelled bracket precision, recall and F1 of linearised parse trees, EVALB style.

    Trees are linearised strings as written by :func:`multimodel.corpora.trees.linearize`
    (``"(S (NP DT NN ) (VP VBD ) . )"``; ``)NP`` closings accepted too) or
    :class:`~multimodel.corpora.trees.Tree` objects. Leaves are POS tags (no words).

    What is scored, following EVALB with its standard ``COLLINS.prm``:

    * a bracket is ``(label, start, end)`` of every constituent above the POS level (POS tags
      themselves are not brackets); a root labelled ``TOP``/``ROOT``/empty is ignored, the
      sentence's top constituent (e.g. ``S``) counts;
    * span positions count leaves except the punctuation tags ``,`` ``:`` `````` ``''`` ``.``,
      which are deleted; which positions are punctuation is read from the gold tree when the
      prediction has as many leaves as the gold tree (EVALB deletes by the gold tags), else
      from each tree's own tags; a bracket covering only punctuation is dropped;
    * ``PRT`` and ``ADVP`` are the same label;
    * brackets are multisets (a unary chain ``NP → NP`` over one span is two brackets);
      matches are the multiset intersection; counts are summed over the corpus (micro average).

    Unlike EVALB, which skips a sentence whose length differs from the gold, a prediction with
    the wrong number of leaves is still scored (by positions), so that emitting wrong-length
    trees cannot help. A malformed prediction (unbalanced brackets, mismatched closing label,
    empty constituent) counts as zero predicted and zero matched brackets; its gold brackets
    still count towards recall.

    Returns:
        ``{"precision", "recall", "f1", "exact_match", "valid_fraction"}``, all in [0, 1]:
        ``exact_match`` = fraction of sentences whose bracket multisets are equal,
        ``valid_fraction`` = fraction of predictions that are well-formed trees. All 0.0 for an
        empty corpus.

    Raises:
        ValueError: different numbers of predicted and gold trees, or a malformed gold tree.
    """
    if len(predicted_trees) != len(gold_trees):
        raise ValueError(f"{len(predicted_trees)} predicted trees but {len(gold_trees)} gold trees")
    matched = predicted_total = gold_total = exact = valid = 0
    for index, (predicted, gold) in enumerate(zip(predicted_trees, gold_trees)):
        try:
            gold_tree = _as_tree(gold)
        except ValueError as error:
            raise ValueError(f"gold tree {index} is malformed ({error}): {gold!r}") from error
        gold_tags = _tags(gold_tree)
        gold_deleted = [tag in PUNCTUATION_TAGS for tag in gold_tags]
        gold_brackets = _brackets(gold_tree, gold_deleted)
        gold_total += sum(gold_brackets.values())
        try:
            predicted_tree = _as_tree(predicted)
        except ValueError:
            continue  # malformed: nothing predicted, nothing matched
        valid += 1
        predicted_tags = _tags(predicted_tree)
        predicted_deleted = (
            gold_deleted
            if len(predicted_tags) == len(gold_tags)
            else [tag in PUNCTUATION_TAGS for tag in predicted_tags]
        )
        predicted_brackets = _brackets(predicted_tree, predicted_deleted)
        predicted_total += sum(predicted_brackets.values())
        matched += sum((predicted_brackets & gold_brackets).values())
        exact += predicted_brackets == gold_brackets
    count = len(gold_trees)
    precision = matched / predicted_total if predicted_total else 0.0
    recall = matched / gold_total if gold_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "exact_match": exact / count if count else 0.0,
        "valid_fraction": valid / count if count else 0.0,
    }


# ----------------------------------------------------------------------------------------
# Captions of the built-in collages: which items a caption names, and where.

_COUNT_WORDS = {"a": 1, "an": 1, **{word: n for n, word in captions.COUNT_WORDS.items()}}
_NOUN_CLASS = {form: c for c, forms in enumerate(captions.NOUNS) for form in forms}
_POSITION_CELL = {phrase: cell for cell, phrase in captions.POSITIONS.items()}
_ROW_WORDS = {captions.POSITIONS[(row, 0)].split()[0]: row for row in (0, 1)}  # "top" -> 0
_SIDE_WORDS = {captions.POSITIONS[(0, col)].split()[1]: col for col in (0, 1)}  # "left" -> 0


def _alternatives(words: Any) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # longest first


_MENTION = re.compile(rf"\b({_alternatives(_COUNT_WORDS)}) ({_alternatives(_NOUN_CLASS)})\b")
_POSITION = re.compile(rf"\b({_alternatives(_POSITION_CELL)})\b")
_ROW = re.compile(rf"\b({_alternatives(_ROW_WORDS)}) row\b")
_SIDE = re.compile(rf"\bon the ({_alternatives(_SIDE_WORDS)})\b")
_BOTH_IN_ROW = re.compile(rf"\bboth in the ({_alternatives(_ROW_WORDS)}) row\b")
_ON_SIDE = re.compile(rf"\bon the ({_alternatives(_SIDE_WORDS)}) side\b")


def caption_items(caption: str) -> Counter:
    """The multiset of ``(item, position)`` pairs a built-in caption names.

    Reads every template of :mod:`multimodel.corpora.captions` with that module's own words:
    items are its nouns (singular or plural, after "a", "an" or a count word; a plural counts
    as that many items), positions its four cell names ("top left", ...). Positions are also
    read from the row template ("in the top row a bag on the right"), and from the two-item
    relations ("X to the left of Y, both in the top row", "X above Y on the left side",
    "X at the top left and Y diagonally opposite"). An item named without a position (e.g. in
    "a picture of a bag and two sandals") gets position None: :func:`caption_item_f1` credits it
    for the item only. ``item`` is the singular noun, ``position`` the cell name. Text that names no item
    gives an empty multiset.
    """
    text = " ".join(caption.lower().split())
    pairs: Counter = Counter()
    row = last = None  # the row named by "in the top row ..."; the last cell named
    clauses = re.split(r",| and ", text)
    for index, clause in enumerate(clauses):
        mentions = [(captions.NOUNS[_NOUN_CLASS[m.group(2)]][0], _COUNT_WORDS[m.group(1)])
                    for m in _MENTION.finditer(clause)]
        if (found := _ROW.search(clause)) is not None:
            row = _ROW_WORDS[found.group(1)]
        cells: list[tuple[int, int] | None] = [None] * len(mentions)
        position, side = _POSITION.search(clause), _SIDE.search(clause)
        if len(mentions) == 1 and "diagonally opposite" in clause and last is not None:
            cells = [(1 - last[0], 1 - last[1])]
        elif len(mentions) == 2 and " to the left of " in clause:
            both = _BOTH_IN_ROW.search(" ".join(clauses[index + 1 :]))
            if both is not None:
                r = _ROW_WORDS[both.group(1)]
                cells = [(r, 0), (r, 1)]
        elif len(mentions) == 2 and " above " in clause and (on_side := _ON_SIDE.search(clause)) is not None:
            c = _SIDE_WORDS[on_side.group(1)]
            cells = [(0, c), (1, c)]
        elif len(mentions) == 1 and position is not None:
            cells = [_POSITION_CELL[position.group(1)]]
        elif len(mentions) == 1 and side is not None and row is not None:
            cells = [(row, _SIDE_WORDS[side.group(1)])]
        for (item, count), cell in zip(mentions, cells):
            pairs[(item, None if cell is None else captions.POSITIONS[cell])] += count
            last = cell if cell is not None else last
    return pairs


def _f1(matched: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = matched / predicted if predicted else 0.0
    recall = matched / gold if gold else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def _unplaced_matches(said: Counter, true: Counter) -> int:
    """Mentions without a position ("a picture of a bag") that match a true item left over
    after the exact (item, position) matches: the caption names it, rightly, without placing it."""
    left_true = true - (said & true)
    left_items: Counter = Counter()
    for (item, _), n in left_true.items():
        left_items[item] += n
    unplaced = Counter({item: n for (item, position), n in said.items() if position is None})
    return sum((unplaced & left_items).values())


def caption_item_f1(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of the items captions name, and where.

    A score BLEU cannot give: whether a caption names the right things in the right places,
    whatever template (word order) it uses. Each caption is read by :func:`caption_items`; a
    named (item, position) matches a true one exactly; a mention without a position (the
    "a picture of ..." template) matches a true item of its kind that nothing else matched (it
    is right, only less specific; ``position_f1`` gives it no credit). Matches are summed over
    the corpus. A hypothesis that names nothing scores no matches (recall 0) without error.

    Args:
        hypotheses: generated captions.
        references: one reference per hypothesis that names every item with its position
            (the first template of :func:`multimodel.corpora.captions.captions_for`).

    Returns:
        ``{"precision", "recall", "f1", "position_f1", "item_only_f1", "exact_match"}`` in
        [0, 1]: ``position_f1`` counts only mentions placed in the right cell, ``item_only_f1``
        ignores positions (the right items, anywhere), ``exact_match`` is the fraction of
        captions whose pair multiset equals the reference's. All 0.0 for an empty corpus.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    placed = unplaced = predicted = gold = items_matched = exact = 0
    for hypothesis, reference in zip(hypotheses, references):
        said, true = caption_items(hypothesis), caption_items(reference)
        placed += sum((said & true).values())
        unplaced += _unplaced_matches(said, true)
        predicted += sum(said.values())
        gold += sum(true.values())
        said_items, true_items = Counter(), Counter()
        for (item, _), n in said.items():
            said_items[item] += n
        for (item, _), n in true.items():
            true_items[item] += n
        items_matched += sum((said_items & true_items).values())
        exact += said == true
    precision, recall, f1 = _f1(placed + unplaced, predicted, gold)
    return {"precision": precision, "recall": recall, "f1": f1,
            "position_f1": _f1(placed, predicted, gold)[2],
            "item_only_f1": _f1(items_matched, predicted, gold)[2],
            "exact_match": exact / len(references) if references else 0.0}


# ----------------------------------------------------------------------------------------
# Per-token scores of the targets (paper Table 3).


def token_accuracy(correct: float, count: float) -> float:
    """Fraction of target tokens predicted correctly (argmax = target); 0.0 when ``count`` is 0."""
    if count < 0 or correct < 0 or correct > count:
        raise ValueError(f"need 0 <= correct <= count, got correct={correct}, count={count}")
    return float(correct) / float(count) if count else 0.0


def log_perplexity(nll_sum: float, count: float) -> float:
    """Mean negative log-likelihood per target token, in nats: log(perplexity).

    Args:
        nll_sum: sum of -log p(target token) over real (non-padding) target positions.
        count: number of those positions.

    Raises:
        ValueError: ``count`` is not positive (no tokens: the score is undefined).
    """
    if count <= 0:
        raise ValueError(f"log-perplexity needs at least one token, got count={count}")
    return float(nll_sum) / float(count)  # NaN stays NaN: a diverged model should show as such

"""Trees: Penn-Treebank brackets, clean-up, Vinyals linearisation and its inverse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multimodel.corpora.trees import (
    Tree,
    attach_words,
    delinearize,
    labeled_spans,
    leaves,
    linearize,
    normalize_ptb,
    parse_bracketed,
    pos_tags,
    strip_words,
    to_bracketed,
)

PTB = """( (S (NP-SBJ-1 (NNP Pierre) (NNP Vinken) )
    (VP (MD will)
      (VP (VB join) (NP (DT the) (NN board) )
        (S (NP-SBJ (-NONE- *-1) ) (VP (TO to) (VP (VB sit) )))))
    (. .) ))"""


def test_parse_and_print_brackets():
    tree = parse_bracketed("(S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))")
    assert leaves(tree) == ["The", "cat", "sat", "."]
    assert pos_tags(tree) == ["DT", "NN", "VBD", "."]
    assert to_bracketed(tree) == "(S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))"
    assert parse_bracketed(to_bracketed(tree)) == tree


def test_normalize_ptb_removes_wrapper_traces_and_function_tags():
    tree = normalize_ptb(parse_bracketed(PTB))
    assert to_bracketed(tree) == (
        "(S (NP (NNP Pierre) (NNP Vinken)) (VP (MD will) (VP (VB join) (NP (DT the) (NN board))"
        " (S (VP (TO to) (VP (VB sit)))))) (. .))"
    )
    bracket = normalize_ptb(parse_bracketed("(ROOT (S (NP (-LRB- -LRB-) (NN x))))")).children[0].children[0]
    assert bracket.label == "-LRB-"


def test_linearize_vinyals_style():
    tree = parse_bracketed("(S (NP (DT The) (NN cat)) (VP (VBD saw) (NP (DT a) (JJ big) (NN dog))) (. .))")
    assert linearize(tree) == "(S (NP DT NN ) (VP VBD (NP DT JJ NN ) ) . )"
    assert linearize(tree, label_closing=True) == "(S (NP DT NN )NP (VP VBD (NP DT JJ NN )NP )VP . )S"
    assert delinearize(linearize(tree)) == strip_words(tree)
    assert delinearize(linearize(tree, label_closing=True)) == strip_words(tree)
    assert attach_words(delinearize(linearize(tree)), leaves(tree)) == tree


@pytest.mark.parametrize(
    "text",
    [
        "",
        "NP",
        "(S (NP DT NN )",
        "(S DT ) )",
        "(S (NP DT )VP )",
        "(S (NP ) )",
        "(S DT ) (S DT )",
        "( DT )",
        "DT (S )",
    ],
)
def test_delinearize_rejects_malformed(text):
    with pytest.raises(ValueError):
        delinearize(text)


def test_attach_words_checks_counts():
    skeleton = delinearize("(S (NP DT NN ) . )")
    with pytest.raises(ValueError):
        attach_words(skeleton, ["the", "cat"])
    with pytest.raises(ValueError):
        attach_words(skeleton, ["the", "cat", ".", "extra"])


def test_labeled_spans():
    tree = delinearize("(S (NP DT NN ) (VP VBD (NP DT NN ) ) . )")
    assert sorted(labeled_spans(tree)) == [("NP", 0, 2), ("NP", 3, 5), ("S", 0, 6), ("VP", 2, 5)]


LABELS = st.sampled_from(["S", "NP", "VP", "PP", "SBAR", "ADJP"])
TAGS = st.sampled_from(["DT", "NN", "VBD", "IN", ".", ",", "PRP$", "-LRB-", "CD"])
WORDS = st.text(alphabet="abcXYZ.,'$-0123", min_size=1, max_size=5)


def _trees():
    preterminal = st.builds(lambda tag, word: Tree(tag, (word,)), TAGS, WORDS)
    return st.recursive(
        preterminal,
        lambda kids: st.builds(
            lambda label, cs: Tree(label, tuple(cs)), LABELS, st.lists(kids, min_size=1, max_size=4)
        ),
        max_leaves=25,
    ).filter(lambda t: not t.is_preterminal)


@settings(max_examples=60, deadline=None)
@given(_trees())
def test_round_trips_on_random_trees(tree):
    text = linearize(tree)
    assert delinearize(text) == strip_words(tree)
    assert linearize(delinearize(text)) == text
    assert attach_words(delinearize(text), leaves(tree)) == tree
    assert parse_bracketed(to_bracketed(tree)) == tree

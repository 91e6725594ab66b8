"""Constituency trees: a tiny Tree type, Penn-Treebank brackets, and Vinyals-style linearisation.

The paper's parsing task (WSJ constituency parsing) follows Vinyals et al. 2015, "Grammar as a
Foreign Language": the decoder writes the parse tree as a flat token sequence. Our linearised
form opens each constituent with ``(LABEL``, writes each word as its part-of-speech tag (words
themselves are dropped: they are already in the input sentence), and closes with a bare ``)``::

    (S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))   # Penn-Treebank brackets
    (S (NP DT NN ) (VP VBD ) . )                      # linearised target

Vinyals et al. also labelled the closing brackets (``)NP``); ``linearize(tree,
label_closing=True)`` produces that variant and :func:`delinearize` reads both.

Shared by the built-in grammar corpus (``grammar.py``) and readers of real treebanks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Union

Child = Union["Tree", str]


@dataclass(frozen=True)
class Tree:
    """A constituent: ``label`` and ``children``; a child is a Tree or a word (str).

    A preterminal is ``Tree("NN", ("cat",))``; after :func:`delinearize` (no words) it is
    ``Tree("NN", ())``.
    """

    label: str
    children: tuple[Child, ...] = ()

    @property
    def is_preterminal(self) -> bool:
        return all(isinstance(c, str) for c in self.children) and len(self.children) <= 1

    def __str__(self) -> str:
        return to_bracketed(self)


def leaves(tree: Tree) -> list[str]:
    """The words of ``tree`` from left to right."""
    out: list[str] = []
    for child in tree.children:
        out.extend([child] if isinstance(child, str) else leaves(child))
    return out


def pos_tags(tree: Tree) -> list[str]:
    """The part-of-speech tags (preterminal labels) from left to right."""
    return [t.label for t in preterminals(tree)]


def preterminals(tree: Tree) -> Iterator[Tree]:
    if tree.is_preterminal:
        yield tree
        return
    for child in tree.children:
        if isinstance(child, Tree):
            yield from preterminals(child)


def strip_words(tree: Tree) -> Tree:
    """The same tree with every word removed (what :func:`delinearize` gives back)."""
    if tree.is_preterminal:
        return Tree(tree.label, ())
    return Tree(tree.label, tuple(strip_words(c) for c in tree.children if isinstance(c, Tree)))


def attach_words(skeleton: Tree, words: list[str]) -> Tree:
    """Put ``words`` back into the preterminals of a word-less tree (left to right).

    Raises ValueError when the numbers of words and preterminals differ (a predicted tree with
    the wrong number of tags).
    """
    it = iter(words)

    def fill(node: Tree) -> Tree:
        if node.is_preterminal:
            try:
                return Tree(node.label, (next(it),))
            except StopIteration:
                raise ValueError(f"tree has more preterminals than the {len(words)} words") from None
        return Tree(node.label, tuple(fill(c) for c in node.children if isinstance(c, Tree)))

    filled = fill(skeleton)
    if next(it, None) is not None:
        raise ValueError(f"tree has fewer preterminals than the {len(words)} words")
    return filled


def labeled_spans(tree: Tree, include_preterminals: bool = False) -> list[tuple[str, int, int]]:
    """(label, start, end) of every constituent, ends exclusive, counted in preterminals.

    The multiset used by EVALB-style bracket precision/recall (preterminals excluded by default,
    as EVALB does).
    """
    spans: list[tuple[str, int, int]] = []

    def walk(node: Tree, start: int) -> int:
        if node.is_preterminal:
            if include_preterminals:
                spans.append((node.label, start, start + 1))
            return start + 1
        end = start
        for child in node.children:
            if isinstance(child, Tree):
                end = walk(child, end)
        spans.append((node.label, start, end))
        return end

    walk(tree, 0)
    return spans


# ----------------------------------------------------------------------------------------
# Penn-Treebank bracketed text.

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_bracketed(text: str) -> Tree:
    """Read one Penn-Treebank s-expression, e.g. ``(S (NP (DT the) (NN cat)) (VP (VBD sat)))``.

    A root without a label (PTB files write ``( (S ...) )``) is returned as ``Tree("", ...)``;
    :func:`normalize_ptb` removes it.
    """
    tokens = _TOKEN.findall(text)
    pos = 0

    def node() -> Tree:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != "(":
            raise ValueError(f"expected '(' at token {pos} of {text[:80]!r}")
        pos += 1
        label = ""
        if pos < len(tokens) and tokens[pos] not in "()":
            label = tokens[pos]
            pos += 1
        children: list[Child] = []
        while pos < len(tokens) and tokens[pos] != ")":
            if tokens[pos] == "(":
                children.append(node())
            else:
                children.append(tokens[pos])
                pos += 1
        if pos >= len(tokens):
            raise ValueError(f"unbalanced brackets (missing ')') in {text[:80]!r}")
        pos += 1
        return Tree(label, tuple(children))

    tree = node()
    if pos != len(tokens):
        raise ValueError(f"text after the tree at token {pos} of {text[:80]!r}")
    return tree


def to_bracketed(tree: Tree) -> str:
    """Penn-Treebank one-line form, the inverse of :func:`parse_bracketed`."""
    parts = [to_bracketed(c) if isinstance(c, Tree) else c for c in tree.children]
    head = f"({tree.label}" if tree.label else "("
    return head + "".join(" " + p for p in parts) + ")"


_FUNCTION_TAG = re.compile(r"^([^-=]+|-[A-Z]+-)(?:[-=].*)?$")


def normalize_ptb(tree: Tree) -> Tree:
    """Penn-Treebank clean-up usual for parsing: drop the unlabeled/``ROOT``/``TOP`` wrapper,
    empty elements (``-NONE-``) and the constituents left empty, and function tags and
    indices (``NP-SBJ-1`` → ``NP``; ``-LRB-``/``-RRB-`` are kept)."""

    def clean(node: Tree) -> Tree | None:
        if node.label == "-NONE-":
            return None
        match = _FUNCTION_TAG.match(node.label)
        label = match.group(1) if match else node.label
        if node.is_preterminal:
            return Tree(label, node.children)
        kids = [k for k in (clean(c) if isinstance(c, Tree) else c for c in node.children) if k is not None]
        if not kids:
            return None
        return Tree(label, tuple(kids))

    while tree.label in ("", "ROOT", "TOP") and len(tree.children) == 1 and isinstance(tree.children[0], Tree):
        tree = tree.children[0]
    cleaned = clean(tree)
    if cleaned is None:
        raise ValueError("tree has no words after removing empty elements")
    return cleaned


# ----------------------------------------------------------------------------------------
# Vinyals et al. linearisation.


def linearize(tree: Tree, label_closing: bool = False) -> str:
    """Flat target string: ``(S (NP DT NN ) (VP VBD ) . )``; words dropped, POS tags kept.

    ``label_closing=True`` writes ``)S`` instead of ``)`` (Vinyals et al.'s exact form).
    """
    out: list[str] = []

    def walk(node: Tree) -> None:
        if node.is_preterminal:
            out.append(node.label)
            return
        out.append("(" + node.label)
        for child in node.children:
            if isinstance(child, Tree):
                walk(child)
        out.append(")" + node.label if label_closing else ")")

    walk(tree)
    return " ".join(out)


def delinearize(text: str) -> Tree:
    """Inverse of :func:`linearize`: a word-less tree (preterminals have no children).

    Raises ValueError on malformed input (unbalanced brackets, a closing label that does not
    match, text after the tree), so evaluation can count invalid predictions.
    """
    tokens = text.split()
    if not tokens or not tokens[0].startswith("(") or len(tokens[0]) < 2:
        raise ValueError(f"a linearised tree starts with '(LABEL', got {text[:40]!r}")
    stack: list[tuple[str, list[Tree]]] = []
    root: Tree | None = None
    for i, tok in enumerate(tokens):
        if root is not None:
            raise ValueError(f"text after the end of the tree at token {i}: {tok!r}")
        if tok.startswith("(") and len(tok) > 1:
            stack.append((tok[1:], []))
        elif tok.startswith(")"):
            if not stack:
                raise ValueError(f"unbalanced ')' at token {i}")
            label, kids = stack.pop()
            if len(tok) > 1 and tok[1:] != label:
                raise ValueError(f"closing {tok!r} at token {i} does not match open '({label}'")
            if not kids:
                raise ValueError(f"empty constituent '({label} )' at token {i}")
            node = Tree(label, tuple(kids))
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        elif tok == "(":
            raise ValueError(f"'(' without a label at token {i}")
        else:
            if not stack:
                raise ValueError(f"tag {tok!r} outside any constituent at token {i}")
            stack[-1][1].append(Tree(tok, ()))
    if root is None:
        raise ValueError(f"unbalanced brackets: {len(stack)} constituent(s) never closed")
    return root


def pretty(tree: Tree, words: list[str] | None = None, indent: str = "  ") -> str:
    """An indented, one-constituent-per-line drawing of ``tree``.

    When ``words`` are given and their number equals the number of preterminals, they are
    shown next to their tags (``NN cat``); otherwise the tags alone are shown.
    """
    if words is not None:
        try:
            tree = attach_words(tree, words)
        except ValueError:
            pass
    lines: list[str] = []

    def walk(node: Tree, depth: int) -> None:
        if node.is_preterminal:
            word = f" {node.children[0]}" if node.children else ""
            lines.append(f"{indent * depth}{node.label}{word}")
            return
        lines.append(f"{indent * depth}{node.label}")
        for child in node.children:
            if isinstance(child, Tree):
                walk(child, depth + 1)
            else:
                lines.append(f"{indent * (depth + 1)}{child}")

    walk(tree, 0)
    return "\n".join(lines)

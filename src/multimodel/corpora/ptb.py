"""Penn Treebank ``.mrg`` files: the constituency-parsing corpus of MultiModel section 4.

Parsing is cast as translation (Vinyals et al. 2015, "Grammar as a Foreign Language"): the input
is the sentence, the target the linearised tree. Tree types and the linearisation itself live in
:mod:`multimodel.corpora.trees`; this module only reads the treebank's files.

Input: a ``.zip`` holding ``*.mrg`` members (the NLTK sample ``treebank.zip`` with
``treebank/combined/wsj_0001.mrg`` ... ``wsj_0199.mrg``), a directory searched recursively for
``*.mrg`` (the LDC layout ``parsed/mrg/wsj/00/wsj_0001.mrg`` ...), or one ``.mrg`` file. Files
are read in sorted path order; trees in file order.

Choices (the usual clean-up for parsing, as in Vinyals et al. and most WSJ parsers):

* Empty elements (``-NONE-`` traces such as ``*T*-1``) are removed from the tree and the
  sentence, and so are constituents left without words.
* Function tags and co-indices are stripped: ``NP-SBJ-1`` → ``NP``, ``PP=2`` → ``PP``; the
  bracket tags ``-LRB-``/``-RRB-`` keep their name. An ambiguous label ``ADVP|PRT`` keeps its
  first alternative (``ADVP``).
* The unlabelled outer bracket of each PTB tree ``( (S ...) )`` is dropped; the root is ``S``
  (or whatever the sentence's top constituent is).
* Target: ``linearize`` of :mod:`~multimodel.corpora.trees` — constituents as ``(LABEL ... )``,
  POS tags as the leaves, the words removed (they are in the input already). Punctuation POS
  tags (comma, period, colon, opening and closing quotes) are kept as leaves, so the target has
  exactly one leaf per input word. ``label_closing=True`` gives Vinyals et al.'s ``)NP`` closing tokens.
* Input: the remaining words joined by single spaces, in PTB tokenisation (``-LRB-`` for a
  parenthesis, two backquotes for an opening quote, ``n't`` split off, as the treebank has them).

Splits (:func:`ptb_split_of`), by file so that sentences of one article never straddle train
and test: for the NLTK 10% sample (every file number below 0200) ``wsj_0001``–``wsj_0169`` are
train and ``wsj_0170``–``wsj_0199`` test (3,501 / 413 trees); for the full WSJ treebank the
standard sections: 02–21 train, 22 valid, 23 test (00, 01, 24 unused). Files not named
``wsj_NNNN.mrg`` go to test when a stable hash of their name falls in the last tenth.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.corpora.trees import Tree, delinearize, leaves, linearize, normalize_ptb, parse_bracketed
from multimodel.data.example import Example, Split

__all__ = ["read_ptb", "ptb_split_of", "iter_mrg_trees", "clean_tree", "delinearize", "linearize"]

SPLITS = ("train", "valid", "test")
_WSJ_FILE = re.compile(r"wsj_(\d{4})\.mrg$")
SAMPLE_TEST_FROM = 170
"""In the NLTK sample, files ``wsj_0170`` and later are the test split."""


def ptb_split_of(file_name: str, sample: bool) -> str | None:
    """The split (``"train"``, ``"valid"``, ``"test"``) file ``file_name`` belongs to, or None.

    Args:
        file_name: path or name of an ``.mrg`` file.
        sample: True for the NLTK 10% sample (files wsj_0001–wsj_0199), False for full WSJ.
    """
    match = _WSJ_FILE.search(file_name)
    if match is None:
        digest = hashlib.sha256(Path(file_name).name.encode("utf-8")).digest()
        return "test" if digest[0] % 10 == 9 else "train"
    number = int(match.group(1))
    if sample:
        return "train" if number < SAMPLE_TEST_FROM else "test"
    section = number // 100
    if 2 <= section <= 21:
        return "train"
    return {22: "valid", 23: "test"}.get(section)


def _mrg_names(path: Path) -> list[str]:
    """Names (not paths) of the .mrg files under ``path``: a directory, a zip, or one file."""
    if path.is_dir():
        return [p.name for p in path.rglob("*.mrg")]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [Path(n).name for n in archive.namelist() if n.endswith(".mrg")]
    return [path.name]


def _mrg_files(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[Path, bytes | Exception]]:
    """(display path, contents or the read error) of each wanted .mrg file, in sorted order."""
    if path.is_dir() or not zipfile.is_zipfile(path):
        for file in sorted(path.rglob("*.mrg")) if path.is_dir() else [path]:
            if wanted(file.name):
                try:
                    yield file, file.read_bytes()
                except OSError as error:
                    yield file, error
        return
    with zipfile.ZipFile(path) as archive:
        for member in sorted(n for n in archive.namelist() if n.endswith(".mrg")):
            if wanted(Path(member).name):
                try:
                    yield path / member, archive.read(member)
                except (OSError, zipfile.BadZipFile) as error:
                    yield path / member, error


_TOKEN = re.compile(r"[()]|[^\s()]+")


def iter_mrg_trees(text: str, path: Path) -> Iterator[tuple[int, str | CorpusError]]:
    """Split one ``.mrg`` file into its trees: (first line, bracketed text or the error).

    A tree is a balanced bracket group. A ``)`` with nothing open, text outside any tree, a
    tree still open at the end of the file, or a line starting with ``(`` while a tree is open
    (PTB files start every tree at column 0, so this marks a missing ``)``) yields a
    :class:`CorpusError` naming the line; reading resumes at the next tree.
    """
    depth, start, parts, column = 0, 0, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if depth > 0 and line.startswith("("):
            yield (
                start,
                CorpusError(
                    path,
                    f"unbalanced brackets: the tree starting on line {start} is still open "
                    f"({depth} ')' missing) when a new tree starts on line {number}",
                    "add the missing ')' or set data.skip_bad=true",
                    line=start,
                ),
            )
            depth, parts = 0, []
        column = 0
        for match in _TOKEN.finditer(line):
            token = match.group()
            if depth == 0:
                if token != "(":
                    problem = (
                        "unbalanced brackets: ')' with no open '('"
                        if token == ")"
                        else f"text {token!r} outside any tree"
                    )
                    yield (
                        number,
                        CorpusError(path, problem, "repair the line or set data.skip_bad=true", line=number),
                    )
                    break
                start, parts, column = number, [], match.start()
            depth += 1 if token == "(" else -1 if token == ")" else 0
            if depth == 0:
                parts.append(line[column : match.end()])
                yield start, "\n".join(parts)
        if depth > 0:
            parts.append(line[column:])
    if depth > 0:
        yield (
            start,
            CorpusError(
                path,
                f"unbalanced brackets: the tree starting here is never closed ({depth} ')' missing)",
                "add the missing ')' or set data.skip_bad=true",
                line=start,
            ),
        )


def _first_alternative(tree: Tree) -> Tree:
    label = tree.label.split("|")[0] if "|" in tree.label.strip("|") else tree.label
    return Tree(label, tuple(_first_alternative(c) if isinstance(c, Tree) else c for c in tree.children))


def clean_tree(bracketed: str) -> Tree:
    """One PTB tree (text) → the cleaned tree with words (see the module docstring's choices).

    Raises ValueError when the text is not one tree or has no words once traces are removed.
    """
    return _first_alternative(normalize_ptb(parse_bracketed(bracketed)))


def read_ptb(
    path: str | Path,
    skip_bad: bool = False,
    split: str | None = None,
    limit: int = 0,
    label_closing: bool = False,
) -> Split:
    """Read Penn Treebank ``.mrg`` trees into a :class:`Split` of parsing examples.

    Args:
        path: a ``.zip`` of ``.mrg`` files, a directory of them, or one ``.mrg`` file.
        skip_bad: skip (and count) malformed trees instead of raising.
        split: None for every tree, else ``"train"``, ``"valid"`` or ``"test"`` by
            :func:`ptb_split_of` (the NLTK sample is recognised by all file numbers < 0200).
        limit: keep at most this many trees (0 = all).
        label_closing: write ``)NP`` rather than ``)`` when closing a constituent.

    Returns:
        Examples with ``inputs`` = the sentence, ``target`` = the linearised tree,
        ``references = [target]``, ``meta = {"file", "line", "tree"}`` (``tree`` = the cleaned
        tree with words, in one-line bracketed form).

    Raises:
        CorpusError: no ``.mrg`` files, an unreadable file, or a malformed tree (unless
            ``skip_bad``), naming the file and the tree's first line.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, got {split!r}")
    path = require_exists(
        path, "Penn Treebank path", "pass treebank.zip, a directory of .mrg files or one .mrg file"
    )
    names = _mrg_names(path)
    if not names:
        raise CorpusError(path, "no .mrg files found", "pass the folder (or zip) holding wsj_*.mrg files")
    numbers = [int(m.group(1)) for name in names if (m := _WSJ_FILE.search(name))]
    sample = bool(numbers) and max(numbers) < 200
    bad = BadRecords(skip_bad)
    examples: list[Example] = []
    files = _mrg_files(path, lambda name: split is None or ptb_split_of(name, sample) == split)
    with contextlib.closing(files):  # closes the zip even when ``limit`` stops early
        for source, data in files:
            try:
                if isinstance(data, Exception):
                    raise data
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:
                bad.skip(CorpusError(source, f"cannot read the file ({error})", "re-extract the treebank"))
                continue
            for line, tree_text in iter_mrg_trees(text, source):
                if limit and len(examples) >= limit:
                    return bad.split(examples, source=path)
                try:
                    if isinstance(tree_text, CorpusError):
                        raise tree_text
                    try:
                        tree = clean_tree(tree_text)
                    except ValueError as error:
                        raise CorpusError(
                            source, f"malformed tree ({error})", "repair it or set data.skip_bad=true", line=line
                        ) from error
                except CorpusError as error:
                    bad.skip(error)
                    continue
                target = linearize(tree, label_closing=label_closing)
                examples.append(
                    Example(
                        inputs=" ".join(leaves(tree)),
                        target=target,
                        references=[target],
                        meta={"file": source.name, "line": line, "tree": str(tree)},
                    )
                )
    return bad.split(examples, source=path)

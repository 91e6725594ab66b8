"""Sentence-aligned parallel text (WMT, Multi30k): the translation corpora of MultiModel section 4.

Format: two UTF-8 files, one sentence a line, line i of the source file translating line i of
the target file; either file may be gzip-compressed (detected from its first bytes, not its
name). Leading and trailing whitespace (including ``\\r`` of Windows line ends) is stripped.

Choices:

* A pair with an empty side is a bad record (error naming the line; skipped and counted with
  ``skip_bad=True``), since an empty sentence has nothing to translate or to learn.
* Different line counts mean the files are not aligned; that is always an error, even with
  ``skip_bad`` (no single record is to blame), and names both files and both counts.
* With ``limit > 0`` only the first ``limit`` good pairs are kept, but the rest of both files
  is still counted: one extra line in the middle shifts every later pair, and a line count over
  the whole files is the only check that sees it whatever ``limit`` is.
"""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import IO, Iterator

from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.data.example import Example, Split

_GZIP_MAGIC = b"\x1f\x8b"

MULTI30K_PREFIXES = {"train": "train", "valid": "val", "val": "val", "test": "test_2016_flickr"}
"""Multi30k task 1 file prefixes per split: the 2016 Flickr test set is the standard test set."""


def open_text_bytes(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, transparently un-gzipping it if it is gzip data."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, decoded stripped line or None if not UTF-8) for each line."""
    try:
        with open_text_bytes(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    yield number, None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise CorpusError(path, f"cannot read the file ({error})", "re-download or re-extract it") from error


def read_parallel(
    src_path: str | Path, tgt_path: str | Path, limit: int = 0, skip_bad: bool = False
) -> Split:
    """Read aligned source/target sentence files into a :class:`Split`.

    Args:
        src_path: source-language file (plain or gzip), one sentence a line.
        tgt_path: target-language file, line i translating line i of ``src_path``.
        limit: keep at most this many pairs (0 = all).
        skip_bad: skip (and count) empty or non-UTF-8 lines instead of raising.

    Returns:
        Examples with ``inputs`` = source sentence, ``target`` = target sentence,
        ``references`` = ``[target]``, ``meta = {"line": n}``.

    Raises:
        CorpusError: a file is missing or unreadable; the files have different line counts;
            a line is empty or not UTF-8 (unless ``skip_bad``).
    """
    hint = "give the path of an existing file (plain text or .gz, one sentence a line)"
    src = require_exists(src_path, "source file", hint)
    tgt = require_exists(tgt_path, "target file", hint)
    bad = BadRecords(skip_bad)
    examples: list[Example] = []
    src_lines, tgt_lines = _lines(src), _lines(tgt)
    pairs = 0

    def misaligned(src_total: int, tgt_total: int) -> CorpusError:
        return CorpusError(
            src,
            f"has {src_total} lines but {tgt} has {tgt_total}; parallel files need one line a pair",
            "use the matching pair of files (same corpus, split and version)",
        )

    for src_line, tgt_line in itertools.zip_longest(src_lines, tgt_lines):
        if src_line is None or tgt_line is None:  # one file ended first: not aligned
            src_total = pairs + (src_line is not None) + sum(1 for _ in src_lines)
            tgt_total = pairs + (tgt_line is not None) + sum(1 for _ in tgt_lines)
            raise misaligned(src_total, tgt_total)
        pairs += 1
        number, src_text = src_line
        _, tgt_text = tgt_line
        try:
            for path, text in ((src, src_text), (tgt, tgt_text)):
                if text is None:
                    raise CorpusError(
                        path,
                        "line is not valid UTF-8",
                        "re-encode the file as UTF-8 or set data.skip_bad=true",
                        line=number,
                    )
                if not text:
                    raise CorpusError(
                        path,
                        "empty line (nothing to translate)",
                        "remove the line from both files or set data.skip_bad=true",
                        line=number,
                    )
        except CorpusError as error:
            bad.skip(error)
            continue
        examples.append(
            Example(inputs=src_text, target=tgt_text, references=[tgt_text], meta={"line": number})
        )
        if limit and len(examples) >= limit:
            src_total, tgt_total = pairs + sum(1 for _ in src_lines), pairs + sum(1 for _ in tgt_lines)
            if src_total != tgt_total:
                raise misaligned(src_total, tgt_total)
            break
    return bad.split(examples, source=f"{src} / {tgt}")


def multi30k_split(
    root: str | Path, src_lang: str, tgt_lang: str, split: str, limit: int = 0, skip_bad: bool = False
) -> Split:
    """One split of Multi30k task 1 from its raw files (``<prefix>.<lang>.gz`` or plain).

    Args:
        root: folder holding the raw files (e.g. ``../shared/corpora/multi30k``).
        src_lang: source language code, ``"en"``, ``"de"`` or ``"fr"``.
        tgt_lang: target language code.
        split: ``"train"`` (29,000 pairs), ``"valid"``/``"val"`` (1,014) or ``"test"`` (the
            2016 Flickr test set, 1,000).
        limit: keep at most this many pairs (0 = all).
        skip_bad: skip bad lines instead of raising (see :func:`read_parallel`).
    """
    if split not in MULTI30K_PREFIXES:
        raise ValueError(f"unknown Multi30k split {split!r}; choose one of {sorted(MULTI30K_PREFIXES)}")
    root = require_exists(
        root,
        "Multi30k folder",
        "run `multimodel data download multi30k` or pass the folder holding train.en.gz etc.",
    )
    prefix = MULTI30K_PREFIXES[split]

    def find(lang: str) -> Path:
        for name in (f"{prefix}.{lang}.gz", f"{prefix}.{lang}"):
            if (root / name).exists():
                return root / name
        raise CorpusError(
            root / f"{prefix}.{lang}.gz",
            f"Multi30k {split} file for language {lang!r} not found",
            "run `multimodel data download multi30k` or check the language code (en, de, fr)",
        )

    return read_parallel(find(src_lang), find(tgt_lang), limit=limit, skip_bad=skip_bad)

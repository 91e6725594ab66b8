"""Errors for corpus readers, and the bookkeeping of records skipped in ``skip_bad`` mode.

Every reader in :mod:`multimodel.corpora` either raises :class:`CorpusError` on the first bad
record (the default) or, with ``skip_bad=True``, skips bad records and counts them with
:class:`BadRecords`. A reader never drops a record silently: the :class:`~multimodel.data.example.Split`
it returns says how many records were skipped and why (the first few reasons verbatim).

A :class:`CorpusError` message always reads ``"<file>:<line>: <what is wrong>. <how to fix>"``
(``"<file>: ..."`` when no line applies), so the user can open the file at the right place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from multimodel.data.example import Example, Split
from multimodel.errors import UserError

log = logging.getLogger(__name__)


class CorpusError(UserError, ValueError):
    """A corpus file that cannot be read as the format it should have.

    Args:
        path: the offending file (or directory).
        problem: what is wrong, e.g. ``"empty line"``.
        fix: how to fix it, e.g. ``"remove the line or pass skip_bad=True"``; may be empty.
        line: 1-based line number inside ``path``, when the problem sits on one line.
    """

    def __init__(self, path: str | Path, problem: str, fix: str = "", *, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        message = f"{where}: {problem.rstrip('.')}."
        if fix:
            message += f" {fix.rstrip('.')}."
        super().__init__(message)

    def __reduce__(self):  # keep the structured fields through pickling (multiprocessing loaders)
        return (_rebuild_corpus_error, (type(self), str(self.path), self.problem, self.fix, self.line))


def _rebuild_corpus_error(cls, path, problem, fix, line):
    return cls(path, problem, fix, line=line)


class BadRecords:
    """Counts the records a reader skips; raises instead when skipping is not allowed.

    Use one per reader call::

        bad = BadRecords(skip_bad)
        for ...:
            try:
                examples.append(parse(record))
            except CorpusError as error:
                bad.skip(error)          # raises ``error`` unless skip_bad
        return bad.split(examples)

    Args:
        skip_bad: when False, :meth:`skip` re-raises the error it is given.
        max_reasons: how many reasons to keep verbatim in ``Split.skipped_reasons``.
    """

    def __init__(self, skip_bad: bool, *, max_reasons: int = 5):
        self.skip_bad = skip_bad
        self.max_reasons = max_reasons
        self.count = 0
        self.reasons: list[str] = []

    def skip(self, error: CorpusError) -> None:
        """Record one skipped record, or raise ``error`` when not in ``skip_bad`` mode."""
        if not self.skip_bad:
            raise error
        self.count += 1
        if len(self.reasons) < self.max_reasons:
            self.reasons.append(str(error))

    def split(self, examples: Sequence[Example], *, source: str | Path = "") -> Split:
        """The :class:`Split` of ``examples``, carrying the skip count; logs a warning if any."""
        if self.count:
            log.warning(
                "%s: skipped %d bad record(s), kept %d; first: %s",
                source or "corpus",
                self.count,
                len(examples),
                self.reasons[0],
            )
        return Split(examples=examples, skipped=self.count, skipped_reasons=tuple(self.reasons))


def require_exists(path: str | Path, what: str, fix: str) -> Path:
    """``Path(path)`` if it exists, else a :class:`CorpusError` saying what was expected there."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(path, f"{what} not found", fix)
    return path

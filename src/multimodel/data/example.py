"""Raw examples and splits: what corpora produce and the input pipeline consumes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence, overload

import numpy as np


@dataclass
class Example:
    """One raw example, before tokenisation.

    ``inputs``: text (str), an image (float32 array (C, H, W) in [0, 1]) or audio features
    (float32 array (T_frames, n_mels)) or a waveform (float32 array (T_samples,)).
    ``target``: text (str) or a class index (int).
    ``references``: all acceptable targets for evaluation (e.g. several captions); defaults to
    ``[target]``.
    """

    inputs: Any
    target: Any
    references: list[Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Split:
    """The examples of one split of a task, with what was skipped while reading them."""

    examples: Sequence[Example]
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()


class LazyExamples(Sequence[Example]):
    """Examples decoded one at a time when indexed, for corpora too large to hold decoded.

    A reader keeps what is cheap (paths, transcripts, labels; or a memory-mapped Arrow table)
    and decodes an image or audio file only when a batch asks for its example. What only needs
    the cheap part (the vocabulary's texts, input length checks, length buckets) uses
    :meth:`peek` and :attr:`lengths`, so it decodes nothing.

    Args:
        size: number of examples.
        read: ``read(i)`` -> example ``i`` with its inputs decoded.
        peek: ``peek(i)`` -> example ``i`` without decoding an image or audio input (its
            ``inputs`` is None then; text inputs are given); default ``read``.
        lengths: each example's bucketing length (:func:`multimodel.data.batching.example_length`
            of the decoded example: characters of a text, samples of a waveform, 0 for an
            image), when the reader knows it without decoding; None = computed from ``peek``.
    """

    def __init__(self, size: int, read: Callable[[int], Example], *,
                 peek: Callable[[int], Example] | None = None, lengths: Sequence[int] | None = None):
        self._read = read
        self._peek = peek or read
        self._positions: np.ndarray | range = range(size)
        self._lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        if self._lengths is not None and len(self._lengths) != size:
            raise ValueError(f"lengths has {len(self._lengths)} entries for {size} examples")

    @classmethod
    def deferred(cls, light: Sequence[Example], load_inputs: Callable[[Example], Any], *,
                 lengths: Sequence[int] | None = None) -> "LazyExamples":
        """Examples whose ``inputs`` are None until read: ``load_inputs(light[i])`` decodes them
        (from e.g. ``light[i].meta["path"]``)."""
        return cls(len(light), lambda i: replace(light[i], inputs=load_inputs(light[i])),
                   peek=light.__getitem__, lengths=lengths)

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> "LazyExamples": ...

    def __getitem__(self, index: int | slice) -> "Example | LazyExamples":
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        return self._read(int(self._positions[index]))

    def peek(self, index: int) -> Example:
        """Example ``index`` without decoding an image or audio input (``inputs`` None then)."""
        return self._peek(int(self._positions[index]))

    @property
    def lengths(self) -> np.ndarray | None:
        """The bucketing length of each example, when known without decoding; else None."""
        return None if self._lengths is None else self._lengths[np.asarray(self._positions, dtype=np.int64)]

    def subset(self, positions: Sequence[int]) -> "LazyExamples":
        """The examples at ``positions`` (a view; nothing is decoded)."""
        view = copy.copy(self)
        view._positions = np.asarray(self._positions, dtype=np.int64)[np.asarray(positions, dtype=np.int64)]
        return view


def peek_examples(examples: Sequence[Example]) -> Iterator[Example]:
    """Every example, without decoding images or audio where the examples are lazy
    (:meth:`LazyExamples.peek`): what reads only texts, targets or lengths iterates this."""
    if isinstance(examples, LazyExamples):
        return (examples.peek(i) for i in range(len(examples)))
    return iter(examples)

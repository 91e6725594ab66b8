"""Raw examples and splits: what corpora produce and the input pipeline consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


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

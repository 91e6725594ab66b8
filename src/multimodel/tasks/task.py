"""A task is data: what goes in, what comes out, which token asks for it, how it is scored.

Tasks name their modalities by string ("text", "image", "audio", "class_label:10"); the model
looks them up in its catalogue (``multimodel.modalities``). The task token (e.g. "To-English")
is the decoder's first input; classification tasks have none and skip the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from multimodel.config import TaskSpec
from multimodel.data.example import Example, Split

__all__ = ["Example", "Split", "Task"]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task of the mix.

    Args:
        name: unique name, used on the command line and in logs.
        description: one line for ``multimodel tasks``.
        paper_task: which task of the paper it mirrors.
        input_modality: modality spec of the inputs.
        target_modality: modality spec of the targets.
        task_token: decoder task token, or None for classification.
        metrics: metric names reported by evaluation (first = headline metric).
        load: ``load(data_dir, split, size, seed, skip_bad) -> Split`` for split in
            {"train", "test"}; generates (and caches) or reads the data.
        available: ``available(data_dir) -> str | None``: None when the data can be had,
            else a message saying what is missing and how to get it.
        labels: class names of a classification task (index → name).
        input_shape: the fixed (C, H, W) of image inputs, so `predict` can resize user images.
        report_by: ``meta`` fields of the held-out examples by whose values evaluation also
            scores a decoded task separately (speech: by voice and by kind of utterance).
        spec: for a task declared in a config (:mod:`multimodel.tasks.spec`), its spec with
            everything read from the data filled in (labels, modalities, metrics): what a saved
            model stores to rebuild the task without the config or the data. None for the
            catalogue's tasks.
    """

    name: str
    description: str
    paper_task: str
    input_modality: str
    target_modality: str
    task_token: str | None
    metrics: tuple[str, ...]
    load: Callable[..., Split]
    available: Callable[[Path], str | None]
    labels: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None
    report_by: tuple[str, ...] = ()
    spec: TaskSpec | None = None

    @property
    def model_kwargs(self) -> dict[str, str | None]:
        """The keyword arguments that tell MultiModel.forward/generate which task a batch is."""
        return {"input_modality": self.input_modality, "target_modality": self.target_modality,
                "task_token": self.task_token}

    @property
    def is_classification(self) -> bool:
        return self.target_modality.startswith("class_label")

    @property
    def num_classes(self) -> int | None:
        """C of a ``class_label:C`` target; None for other targets (or a spec without C)."""
        _, _, count = self.target_modality.partition(":")
        return int(count) if self.is_classification and count.isdigit() else None

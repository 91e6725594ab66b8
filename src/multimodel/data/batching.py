"""Turning examples into padded batches, one task per batch, in a resumable order.

The order of every task's examples is a pure function of (seed, task, epoch): a stream's
whole state is two integers (epoch, cursor), so a checkpoint stores it exactly and a resumed
run sees the same batches as an uninterrupted one. Within a window of batches, examples are
grouped by length (length buckets, as tensor2tensor did) so little compute goes to padding.

Dimensions: B batch, T sequence length, C channels, H height, W width, F mel bands.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from multimodel.data.example import Example, LazyExamples, peek_examples
from multimodel.data.tokenizer import EOS, PAD, Tokenizer
from multimodel.errors import UserError


@dataclass
class Batch:
    """One task's batch (see docs/CONTRACTS.md).

    Args:
        task: task name.
        inputs: (B, T) ids, (B, C, H, W) images, (B, T, F) audio features or (B, T) waveforms.
        input_mask: (B, T) bool, True = real; None for images.
        targets: (B, T) ids ending in EOS, or (B,) class indices.
        target_mask: (B, T) bool; None for class labels.
        references: per example, every acceptable target (for evaluation), or None.
        input_padded, target_padded: whether the input / target mask may mark padding. False is
            a promise, made by the :class:`Collator` on the host when every example of the batch
            has the same length (and for images): in training the body then skips its masking
            work on that side (``MultiModel.forward``'s hints of the same names). True is
            always safe.
    """

    task: str
    inputs: torch.Tensor
    input_mask: torch.Tensor | None
    targets: torch.Tensor
    target_mask: torch.Tensor | None
    references: list[list[Any]] | None = None
    input_padded: bool = True
    target_padded: bool = True

    @property
    def size(self) -> int:
        return int(self.targets.shape[0])

    def num_target_tokens(self) -> int:
        return self.size if self.target_mask is None else int(self.target_mask.sum())

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(self.task, move(self.inputs), move(self.input_mask), move(self.targets),
                     move(self.target_mask), self.references, self.input_padded, self.target_padded)

    def shard(self, rank: int, world_size: int) -> "Batch":
        """Rows rank, rank + world_size, ... (each rank of a distributed run takes one shard)."""

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rank::world_size]

        refs = None if self.references is None else self.references[rank::world_size]
        # A shard of a batch without padding has none; of one with padding, it may have some.
        return Batch(self.task, take(self.inputs), take(self.input_mask), take(self.targets),
                     take(self.target_mask), refs, self.input_padded, self.target_padded)


def example_length(example: Example) -> int:
    """A length used to bucket examples (text: characters; arrays: first axis)."""
    x = example.inputs
    if isinstance(x, str):
        return len(x)
    return int(np.asarray(x).shape[0]) if np.asarray(x).ndim in (1, 2) else 0


def example_lengths(examples: Sequence[Example]) -> np.ndarray:
    """:func:`example_length` of every example; lazy examples give theirs without decoding
    (:attr:`~multimodel.data.example.LazyExamples.lengths`, else from what ``peek`` shows)."""
    if isinstance(examples, LazyExamples) and examples.lengths is not None:
        return examples.lengths
    return np.asarray([example_length(e) for e in peek_examples(examples)], dtype=np.int64)


def _pad_stack(seqs: Sequence[np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad arrays of shape (T_i, ...) to (B, T_max, ...) with zeros; return mask (B, T_max)."""
    lengths = [len(s) for s in seqs]
    t_max = max(lengths)
    tail = np.asarray(seqs[0]).shape[1:]
    out = torch.zeros((len(seqs), t_max, *tail), dtype=dtype)
    mask = torch.zeros((len(seqs), t_max), dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(np.asarray(s), dtype=dtype)
        mask[i, : len(s)] = True
    return out, mask


def any_padding(mask: torch.Tensor | None) -> bool:
    """Whether a host (B, T) mask marks padding; None (images, class labels) marks none."""
    return mask is not None and not bool(mask.all())


class Collator:
    """Tokenises, pads and stacks the examples of one task, and checks what the model takes on
    trust in training (where a check would read the device): every example has at least one
    real input and target position, and class labels lie in [0, ``num_classes``). Text ids come
    from ``tokenizer``, so they lie in its vocabulary.

    Args:
        task_name: the task the examples belong to.
        classification: targets are class indices (else text).
        tokenizer: the shared subword vocabulary.
        max_target_length: longer targets are truncated (counted in ``truncated``).
        num_classes: C of a classification task (labels outside [0, C) are refused); None
            leaves labels unchecked.
    """

    def __init__(self, task_name: str, classification: bool, tokenizer: Tokenizer, max_target_length: int = 256,
                 num_classes: int | None = None):
        self.task_name = task_name
        self.classification = classification
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.num_classes = num_classes
        self.truncated = 0
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text)
            if len(self._cache) < 200_000:
                self._cache[text] = ids
        return ids

    def __call__(self, examples: Sequence[Example]) -> Batch:
        if not examples:
            raise ValueError(f"task {self.task_name}: cannot build an empty batch")
        inputs, input_mask = self._inputs([e.inputs for e in examples])
        if self.classification:
            labels = [int(e.target) for e in examples]
            bad = [label for label in labels if label < 0 or (self.num_classes is not None and label >= self.num_classes)]
            if bad:
                raise UserError(f"task {self.task_name}: class label {bad[0]} is outside [0, {self.num_classes});"
                                " the labels of a class_label:C task must be 0 … C-1")
            targets = torch.tensor(labels, dtype=torch.long)
            target_mask = None
        else:
            ids = []
            for e in examples:
                seq = self.encode(str(e.target))[: self.max_target_length - 1]
                if len(seq) == self.max_target_length - 1:
                    self.truncated += 1
                ids.append(np.asarray(seq + [EOS], dtype=np.int64))
            targets, target_mask = _pad_stack(ids, torch.long)
        refs = [list(e.references) if e.references else [e.target] for e in examples]
        # Whether a mask marks padding, read here on the host where the batch is built, so that
        # the training step needs no such read (see Batch).
        return Batch(self.task_name, inputs, input_mask, targets, target_mask, refs,
                     input_padded=any_padding(input_mask), target_padded=any_padding(target_mask))

    def _inputs(self, raw: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        first = raw[0]
        if isinstance(first, str):
            seqs = []
            for text in raw:
                ids = self.encode(text) or [PAD]  # an empty sentence still has one position
                seqs.append(np.asarray(ids, dtype=np.int64))
            ids_t, mask = _pad_stack(seqs, torch.long)
            # An empty sentence keeps its single (PAD) position marked real, so no row is empty.
            return ids_t, mask
        arrays = [np.asarray(x, dtype=np.float32) for x in raw]
        if arrays[0].ndim == 3:  # images (C, H, W): all the same size within a task
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise ValueError(f"task {self.task_name}: images of different sizes in one batch: {sorted(shapes)}")
            return torch.from_numpy(np.stack(arrays)), None
        empty = [i for i, a in enumerate(arrays) if len(a) == 0]
        if empty:
            raise UserError(f"task {self.task_name}: an example with no input frames or samples (batch row"
                            f" {empty[0]}); remove empty recordings from the data")
        return _pad_stack(arrays, torch.float32)  # audio (T, F) or waveform (T,)


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class TaskStream:
    """An endless, resumable stream of batches of one task.

    The examples of epoch ``e`` come in a permutation seeded by (seed, task, e); within each
    window of ``bucket_batches`` batches they are sorted by length so each batch holds
    similar lengths, then the batches of the window are shuffled.

    Args:
        task_name: the task's name.
        examples: its training examples.
        collate: turns a list of examples into a Batch.
        batch_size: examples per batch (the global batch in a distributed run).
        seed: data-order seed.
        bucket_batches: batches per length-sorting window (1 = no bucketing).
    """

    def __init__(self, task_name: str, examples: Sequence[Example], collate: Collator, batch_size: int,
                 seed: int, bucket_batches: int = 20):
        if not examples:
            raise ValueError(f"task {task_name} has no training examples")
        self.task_name = task_name
        self.examples = examples
        self.collate = collate
        self.batch_size = min(batch_size, len(examples))
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.epoch = 0
        self.cursor = 0  # index of the next batch within the epoch
        self._epoch_batches: list[list[int]] | None = None
        self._lengths = example_lengths(examples)

    def _batches_of_epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(_stable_seed(self.seed, self.task_name, epoch))
        order = rng.permutation(len(self.examples))
        n_batches = len(order) // self.batch_size  # the ragged tail waits for the next epoch
        window = self.batch_size * max(1, self.bucket_batches)
        batches: list[list[int]] = []
        for start in range(0, n_batches * self.batch_size, window):
            chunk = order[start : min(start + window, n_batches * self.batch_size)]
            chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            group = [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
            rng.shuffle(group)
            batches.extend(group)
        return batches

    def next_batch(self) -> Batch:
        if self._epoch_batches is None:
            self._epoch_batches = self._batches_of_epoch(self.epoch)
        if self.cursor >= len(self._epoch_batches):
            self.epoch += 1
            self.cursor = 0
            self._epoch_batches = self._batches_of_epoch(self.epoch)
        indices = self._epoch_batches[self.cursor]
        self.cursor += 1
        return self.collate([self.examples[i] for i in indices])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._epoch_batches = None


def eval_batches(examples: Sequence[Example], collate: Collator, batch_size: int) -> list[tuple[list[int], Batch]]:
    """Fixed, length-sorted batches of held-out examples, each with its example indices."""
    lengths = example_lengths(examples)
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [(chunk, collate([examples[i] for i in chunk])) for chunk in chunks]

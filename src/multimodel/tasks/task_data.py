"""From task names to ready-to-batch data: load every split, train or load the shared vocabulary.

All text of all selected tasks (inputs and targets of the training splits) goes into one
sentencepiece vocabulary, as in the paper ("one shared subword vocabulary"). The vocabulary
is saved with every checkpoint, so a model is never separated from its tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from multimodel.config import Config, ConfigError
from multimodel.data.batching import Collator
from multimodel.data.example import Example, LazyExamples, peek_examples
from multimodel.data.tokenizer import Tokenizer
from multimodel.tasks import Task
from multimodel.tasks.spec import known_task_names, resolve_task


@dataclass
class TaskData:
    """One task's examples and its collator."""

    task: Task
    train: Sequence[Example]
    test: Sequence[Example]
    collate: Collator | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_reasons: list[str] = field(default_factory=list)


def task_train_size(cfg: Config, name: str) -> int:
    return int(cfg.data.task_sizes.get(name, cfg.data.train_size))


def task_eval_size(cfg: Config, name: str) -> int:
    """Held-out examples of ``name`` to load: ``data.eval_sizes``, else ``data.eval_size`` (0 = all)."""
    return int(cfg.data.eval_sizes.get(name, cfg.data.eval_size))


def task_data_dir(cfg: Config, task: Task) -> Path:
    """Where ``task``'s data is: ``data.data_dir``, else ``data.corpora_dir`` (real corpora kept
    read-only elsewhere); raise FileNotFoundError saying what is missing when neither has it."""
    data_dir = Path(cfg.data.data_dir)
    missing = task.available(data_dir)
    if not missing:
        return data_dir
    if cfg.data.corpora_dir:
        if not task.available(Path(cfg.data.corpora_dir)):
            return Path(cfg.data.corpora_dir)
        missing += f" (also not in data.corpora_dir={cfg.data.corpora_dir!r})"
    raise FileNotFoundError(f"task {task.name}: {missing}")


@dataclass(frozen=True)
class TaskStatus:
    """Whether a task of a config can be trained here (a row of ``multimodel tasks``).

    Args:
        name: the task's name.
        task: the task; None when its declared spec is in error.
        state: ``"ok"`` (its data is found), ``"missing"`` (not found) or ``"error"`` (its spec
            cannot work, or its data lacks a column the spec names).
        problem: what is missing or wrong, one line; None when ``state`` is ``"ok"``.
        declared: declared in the config (``data.declared_tasks``) rather than built in.
    """

    name: str
    task: Task | None
    state: str
    problem: str | None = None
    declared: bool = False


def task_statuses(cfg: Config) -> list[TaskStatus]:
    """Every built-in task, then every task ``cfg`` declares, each with whether its data is in
    ``data.data_dir`` or ``data.corpora_dir``. Nothing is read but what a spec needs checked
    (class folders, a manifest's first record); a spec in error is its task's status, not an
    exception, so one bad spec does not hide the others."""
    from multimodel.tasks import TASKS
    from multimodel.tasks.spec import build_task, check_data

    out = []
    for task in TASKS.values():
        try:
            task_data_dir(cfg, task)
            out.append(TaskStatus(task.name, task, "ok"))
        except FileNotFoundError as err:
            out.append(TaskStatus(task.name, task, "missing", str(err)))
    for spec in cfg.data.declared_tasks:
        try:
            task = build_task(spec, cfg)
        except ConfigError as err:
            out.append(TaskStatus(spec.name, None, "error", str(err), declared=True))
            continue
        try:
            root = task_data_dir(cfg, task)
        except FileNotFoundError as err:
            out.append(TaskStatus(spec.name, task, "missing", str(err), declared=True))
            continue
        try:
            check_data(task, root, cfg)
        except ConfigError as err:
            out.append(TaskStatus(spec.name, task, "error", str(err), declared=True))
            continue
        out.append(TaskStatus(spec.name, task, "ok", declared=True))
    return out


def task_weights(cfg: Config) -> dict[str, float]:
    """``train.task_weights`` of the selected tasks: a preset's weights may name tasks a run does
    not select (they are dropped); a name neither the catalogue nor the config declares is an error."""
    return _selected(cfg, "train.task_weights", cfg.train.task_weights)


def loss_multipliers(cfg: Config) -> dict[str, float]:
    """``train.loss_multipliers`` of the selected tasks, each selected task's factor (1 when
    unlisted); names checked as :func:`task_weights` checks them."""
    listed = _selected(cfg, "train.loss_multipliers", cfg.train.loss_multipliers)
    return {name: listed.get(name, 1.0) for name in cfg.data.tasks}


def task_batch_sizes(cfg: Config) -> dict[str, int]:
    """Each selected task's examples per batch and rank: ``data.task_batch_sizes`` where it
    names the task, else ``data.batch_size``; names checked as :func:`task_weights` checks them."""
    listed = _selected(cfg, "data.task_batch_sizes", cfg.data.task_batch_sizes)
    return {name: int(listed.get(name, cfg.data.batch_size)) for name in cfg.data.tasks}


def describe_batch_sizes(sizes: dict[str, int]) -> str:
    """``"batch 32"``, or ``"batches fashion_mnist 96, speech_numbers 32"`` when the tasks'
    sizes (from :func:`task_batch_sizes`) differ."""
    if len(set(sizes.values())) <= 1:
        return f"batch {next(iter(sizes.values()), 0)}"
    return "batches " + ", ".join(f"{name} {size}" for name, size in sizes.items())


def _selected(cfg: Config, key: str, per_task: dict[str, float]) -> dict[str, float]:
    """The entries of ``per_task`` (the config's ``key``) that name selected tasks."""
    known = known_task_names(cfg)
    unknown = sorted(set(per_task) - set(cfg.data.tasks) - known)
    if unknown:
        raise ConfigError(f"{key} names unknown tasks {unknown}; known tasks: {', '.join(sorted(known))}")
    return {name: w for name, w in per_task.items() if name in cfg.data.tasks}


def load_task_data(
    cfg: Config,
    names: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "test"),
    log: Callable[[str], None] = print,
) -> dict[str, TaskData]:
    """Load (generating and caching built-ins when needed) the splits of the selected tasks:
    built-in ones and those ``data.declared_tasks`` declares (:mod:`multimodel.tasks.spec`)."""
    names = list(names if names is not None else cfg.data.tasks)
    # A preset's per-task sizes may name tasks a run does not select (`data.tasks=...` picks a
    # subset of the demo's eight): those are ignored. A name no catalogue knows is a typo.
    known = known_task_names(cfg)
    for key, sizes in (("data.task_sizes", cfg.data.task_sizes), ("data.eval_sizes", cfg.data.eval_sizes)):
        unknown = sorted(set(sizes) - set(cfg.data.tasks) - known)
        if unknown:
            raise ConfigError(f"{key} names unknown tasks {unknown}; known tasks: {', '.join(sorted(known))}")
    tasks = [resolve_task(name, cfg) for name in names]  # every spec checked before any data is read
    out: dict[str, TaskData] = {}
    for name, task in zip(names, tasks):
        root = task_data_dir(cfg, task)
        loaded: dict[str, Sequence[Example]] = {"train": [], "test": []}
        td = TaskData(task=task, train=[], test=[])
        for split in splits:
            size = task_train_size(cfg, name) if split == "train" else task_eval_size(cfg, name)
            result = task.load(root, split, size, cfg.data.seed, cfg.data.skip_bad)
            loaded[split] = result.examples
            if result.skipped:
                td.skipped[split] = result.skipped
                td.skipped_reasons.extend(result.skipped_reasons)
                log(f"task {name} {split}: skipped {result.skipped} bad records"
                    f" (first: {'; '.join(result.skipped_reasons[:3])})")
        td.train, td.test = loaded["train"], loaded["test"]
        log(f"task {name}: {len(td.train)} train / {len(td.test)} test examples")
        out[name] = td
    return out


def vocabulary_texts(task_data: dict[str, TaskData]) -> list[str]:
    """Every text of the training splits (inputs and targets, references included); images and
    audio of lazily read corpora are not decoded for it."""
    texts: list[str] = []
    for td in task_data.values():
        for ex in peek_examples(td.train):
            if isinstance(ex.inputs, str):
                texts.append(ex.inputs)
            if isinstance(ex.target, str):
                texts.append(ex.target)
            for ref in ex.references or []:
                if isinstance(ref, str) and ref != ex.target:
                    texts.append(ref)
    return texts


def build_tokenizer(cfg: Config, task_data: dict[str, TaskData]) -> Tokenizer:
    texts = vocabulary_texts(task_data)
    if not texts:
        texts = ["."]  # classification-only mixes still get a (trivial) vocabulary
    return Tokenizer.train(texts, vocab_size=cfg.data.vocab_size)


def input_length(inputs: object, tokenizer: Tokenizer) -> int | None:
    """Length of a raw input as ``data.max_input_length`` counts it: subwords of a text, frames
    of log-mel features (T, F); None for inputs without one (images, class targets)."""
    if isinstance(inputs, str):
        return len(tokenizer.encode(inputs))
    shape = getattr(inputs, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0])
    return None


def drop_long_inputs(name: str, td: TaskData, limit: int, tokenizer: Tokenizer, skip: bool,
                     log: Callable[[str], None] = print) -> None:
    """Refuse inputs longer than ``limit`` (a 2,000-word line would otherwise train, and cost,
    like any other), naming the first; with ``skip`` (``data.skip_bad``) leave them out instead,
    counted in ``td.skipped`` and reported."""
    for split in ("train", "test"):
        examples = getattr(td, split)
        lengths = [input_length(ex.inputs, tokenizer) for ex in peek_examples(examples)]
        too_long = [i for i, n in enumerate(lengths) if n is not None and n > limit]
        if too_long and not skip:
            first = too_long[0]
            raise ConfigError(
                f"task {name} {split}: example {first} has an input of length {lengths[first]} (and"
                f" {len(too_long) - 1} more over the limit), longer than data.max_input_length={limit};"
                " raise the limit, or set data.skip_bad=true to leave such examples out (counted)")
        keep = [i for i, n in enumerate(lengths) if n is None or n <= limit]
        dropped = len(examples) - len(keep)
        if dropped:
            kept = examples.subset(keep) if isinstance(examples, LazyExamples) else [examples[i] for i in keep]
            setattr(td, split, kept)
            td.skipped[split] = td.skipped.get(split, 0) + dropped
            reason = f"{dropped} inputs longer than data.max_input_length={limit}"
            td.skipped_reasons.append(reason)
            log(f"task {name} {split}: left out {reason} ({len(kept)} kept); raise the limit to keep them")


def attach_collators(cfg: Config, task_data: dict[str, TaskData], tokenizer: Tokenizer,
                     log: Callable[[str], None] = print) -> None:
    """Give every task its collator, first checking inputs against ``data.max_input_length``."""
    for name, td in task_data.items():
        drop_long_inputs(name, td, cfg.data.max_input_length, tokenizer, cfg.data.skip_bad, log)
        td.collate = Collator(name, td.task.is_classification, tokenizer, cfg.model.max_target_length,
                              num_classes=td.task.num_classes)


def modality_specs(tasks: Sequence[Task]) -> list[str]:
    """The modality nets a set of tasks needs (sorted, so the model layout is stable)."""
    return sorted({t.input_modality for t in tasks} | {t.target_modality for t in tasks})

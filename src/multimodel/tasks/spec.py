"""Tasks declared in a config (``data.declared_tasks``) beside the built-in catalogue.

A :class:`~multimodel.config.TaskSpec` names a reader (:mod:`multimodel.tasks.readers`) and
its paths; :func:`build_task` turns it into the same :class:`~multimodel.tasks.task.Task` the
catalogue holds, so the trainer, evaluation, prediction and serving treat both alike.
:func:`resolve_task` and :func:`all_tasks` look names up in both.

Building a task fills in what the spec leaves to the reader or the data: the modalities, the
task token, the metrics, the source's split names, and the class names of a classification
task (the image folder's class folders, a dataset's ClassLabel). The filled-in spec is kept on
the task (``Task.spec``): a saved model stores it (:func:`task_specs`, :func:`complete_declared_tasks`)
so the task can be rebuilt without the config's data (:func:`tasks_from_specs`).

Every problem is one line naming the field, ``data.declared_tasks.<name>.<field>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from multimodel.config import TASK_METRICS, TASK_SPLITS, Config, ConfigError, TaskSpec, from_dict, to_dict
from multimodel.corpora.hf_dataset import FILE_FORMATS, expand, fetch_hint
from multimodel.data.example import Split
from multimodel.tasks import TASKS, UnknownTaskError
from multimodel.tasks.readers import READERS, Reader, ReadRequest
from multimodel.tasks.task import Task

__all__ = ["build_task", "check_data", "declared_tasks", "resolve_task", "all_tasks", "task_specs",
           "tasks_from_specs", "complete_declared_tasks"]

HF_CACHE = "hf_cache"
"""Folder under ``data.data_dir`` where Parquet/JSON/CSV datasets are kept in Arrow form."""


def _key(spec: TaskSpec, name: str) -> str:
    return f"data.declared_tasks.{spec.name}.{name}"


def _fail(spec: TaskSpec, name: str, problem: str) -> ConfigError:
    return ConfigError(f"{_key(spec, name)} {problem}")


def _resolve(path: str, root: Path) -> Path:
    """``path`` as given if absolute, else under ``root`` (``~`` expanded)."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else Path(root) / expanded


def _missing(spec: TaskSpec, root: Path) -> str | None:
    """None when every path of the spec exists under ``root``; else what is missing and how to get it."""
    for split in TASK_SPLITS:
        for path in spec.paths[split]:
            found = _resolve(path, root)
            if not (found.exists() or "*" in path and expand(found)):
                message = f"{_key(spec, 'paths.' + split)}: {str(found)!r} not found"
                looks_like_hub_name = (spec.reader == "hf_dataset" and "*" not in path
                                       and Path(path).suffix.lower() not in FILE_FORMATS)
                if looks_like_hub_name:
                    message += f"; if {path!r} names a dataset of the Hugging Face hub, {fetch_hint(path)}"
                return message
    return None


def _source_split(spec: TaskSpec, reader: Reader, split: str) -> str:
    """The data's own name of ``split``: the spec's, else the reader's default. PTB reads every
    tree of a path the other split does not share (the user split it by folder)."""
    if split in spec.splits:
        return spec.splits[split]
    if spec.reader == "ptb" and spec.paths["train"] != spec.paths["test"]:
        return "all"
    return reader.splits.get(split, split)


def _request(spec: TaskSpec, reader: Reader, root: Path, split: str, limit: int, skip_bad: bool,
             cache_dir: Path | None) -> ReadRequest:
    return ReadRequest(spec=spec, split=split, paths=[_resolve(p, root) for p in spec.paths[split]],
                       source_split=_source_split(spec, reader, split), limit=limit, skip_bad=skip_bad,
                       cache_dir=cache_dir)


def _data_root(spec: TaskSpec, cfg: Config) -> Path | None:
    """``data.data_dir`` or ``data.corpora_dir``, whichever holds the spec's data; None if neither."""
    roots = [Path(cfg.data.data_dir)] + ([Path(cfg.data.corpora_dir)] if cfg.data.corpora_dir else [])
    return next((root for root in roots if _missing(spec, root) is None), None)


def complete_spec(spec: TaskSpec, cfg: Config) -> TaskSpec:
    """``spec`` checked against its reader and the catalogue, with the reader's defaults and the
    class names read from the data filled in (the data is read only for class names the spec
    does not give, and only if it is there; they stay empty otherwise).

    Raises:
        ConfigError: naming the field, for a built-in task's name, a modality or number of paths
            the reader cannot take, a missing column mapping or task token, or metrics of the
            wrong kind.
    """
    if spec.name in TASKS:
        raise _fail(spec, "name", f"is {spec.name!r}, a built-in task's name; choose another")
    reader = READERS[spec.reader]
    for split in TASK_SPLITS:
        count = len(spec.paths[split])
        if reader.files and count != reader.files:
            want = "one path" if reader.files == 1 else f"{reader.files} paths (source file, target file)"
            raise _fail(spec, f"paths.{split}", f"must be {want} for reader {spec.reader}, got {count}")
    for role in spec.columns:
        if role not in reader.columns:
            raise _fail(spec, f"columns.{role}", f"is not read by reader {spec.reader} (it takes no columns)")
    columns = {role: spec.columns.get(role, default) for role, default in reader.columns.items()}
    for role, column in columns.items():
        if column is None:
            raise _fail(spec, "columns", f"must name the {role!r} column for reader {spec.reader}, got {spec.columns}")
    modalities = {}
    for side, fixed in (("input", reader.input_modality), ("target", reader.target_modality)):
        given = getattr(spec, f"{side}_modality")
        if fixed is None and not given:
            raise _fail(spec, f"{side}_modality", f"must be set for reader {spec.reader} (e.g. "
                        + ("'image', 'audio' or 'text')" if side == "input" else "'text' or 'class_label')"))
        if fixed is not None and given and given.partition(":")[0] != fixed:
            raise _fail(spec, f"{side}_modality", f"must be {fixed!r} for reader {spec.reader}, got {given!r}")
        modalities[side] = given or fixed
    classify = modalities["target"].startswith("class_label")
    token = spec.task_token if spec.task_token is not None or classify else reader.task_token
    if not classify and not token:
        raise _fail(spec, "task_token", "must be set for a text target (one of model.task_tokens, e.g. 'To-English')")
    if token is not None and token not in cfg.model.task_tokens:
        raise _fail(spec, "task_token", f"must be one of model.task_tokens ({', '.join(cfg.model.task_tokens)};"
                    f" add a new one there), got {token!r}")
    if classify and spec.task_token is not None:
        raise _fail(spec, "task_token", f"must be None for a classification target (it skips the decoder),"
                    f" got {spec.task_token!r}")
    if modalities["input"] == "audio" and spec.sample_rate != cfg.model.audio_sample_rate:
        raise _fail(spec, "sample_rate", f"must be model.audio_sample_rate ({cfg.model.audio_sample_rate}),"
                    f" got {spec.sample_rate}")
    kind = "class_label" if classify else "text"
    wrong = [m for m in spec.metrics if m not in TASK_METRICS[kind]]
    if wrong:
        raise _fail(spec, "metrics", f"must be among {', '.join(TASK_METRICS[kind])} for a {kind} target, got {wrong}")
    if classify:
        metrics = spec.metrics or TASK_METRICS["class_label"]
    elif spec.metrics:
        metrics = spec.metrics
    else:
        metrics = reader.metrics or (("wer",) if modalities["input"] == "audio" else ("bleu",))
    splits = {split: _source_split(spec, reader, split) for split in TASK_SPLITS}
    done = dataclasses.replace(spec, columns={k: v for k, v in columns.items() if v is not None},
                               input_modality=modalities["input"], target_modality=modalities["target"],
                               task_token=token, metrics=tuple(metrics), splits=splits)
    if classify and not done.labels:
        if reader.labels is None:
            raise _fail(spec, "labels", f"must name the classes for reader {spec.reader}")
        root = _data_root(spec, cfg)
        if root is not None:
            labels = reader.labels(_request(done, reader, root, "train", 0, False, _cache_dir(cfg)))
            if len(labels) < 2:
                raise _fail(spec, "labels", f"must be two or more classes; the train data has {list(labels)}")
            done = dataclasses.replace(done, labels=labels)
    if classify and done.labels:
        declared = done.target_modality.partition(":")[2]
        if declared and int(declared) != len(done.labels):
            raise _fail(spec, "target_modality", f"says {declared} classes but the data has {len(done.labels)}")
        done = dataclasses.replace(done, target_modality=f"class_label:{len(done.labels)}")
    return done


def _cache_dir(cfg: Config) -> Path:
    return Path(cfg.data.data_dir) / HF_CACHE


def build_task(spec: TaskSpec, cfg: Config) -> Task:
    """The :class:`Task` a declared spec describes (see :func:`complete_spec` for the checks)."""
    spec = complete_spec(spec, cfg)
    reader = READERS[spec.reader]
    cache_dir = _cache_dir(cfg)

    def available(root: Path) -> str | None:
        return _missing(spec, Path(root))

    def load(root: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
        del seed  # the data defines its own order
        if spec.target_modality == "class_label":
            raise _fail(spec, "labels", "are unknown: the train data was not found when the task was built")
        request = _request(spec, reader, Path(root), split, size, skip_bad, cache_dir)
        if reader.check is not None:
            reader.check(request)
        return reader.read(request)

    image = spec.input_modality == "image"
    return Task(
        name=spec.name,
        description=spec.description or f"{reader.description}: {', '.join(spec.paths['train'])}",
        paper_task=f"declared ({spec.reader})",
        input_modality=spec.input_modality,
        target_modality=spec.target_modality,
        task_token=spec.task_token,
        metrics=spec.metrics,
        load=load,
        available=available,
        labels=spec.labels,
        input_shape=(3, *spec.image_size) if image else None,
        spec=spec,
    )


def check_data(task: Task, root: Path, cfg: Config) -> None:
    """Check a declared task's data under ``root`` against its spec as far as its reader can
    without reading it (a manifest's keys on its first record); nothing for a built-in task.

    Raises:
        ConfigError: naming the field, for a column the spec names that the data lacks.
    """
    if task.spec is None:
        return
    reader = READERS[task.spec.reader]
    if reader.check is not None:
        reader.check(_request(task.spec, reader, Path(root), "train", 0, False, _cache_dir(cfg)))


def declared_tasks(cfg: Config) -> dict[str, Task]:
    """The tasks ``cfg.data.declared_tasks`` declares, by name, each checked and completed."""
    return {spec.name: build_task(spec, cfg) for spec in cfg.data.declared_tasks}


def all_tasks(cfg: Config) -> dict[str, Task]:
    """Every task a run of ``cfg`` can name: the catalogue's, then the declared ones."""
    return {**TASKS, **declared_tasks(cfg)}


def resolve_task(name: str, cfg: Config | None = None) -> Task:
    """The task called ``name``: a built-in one, or one ``cfg`` declares (built only when asked
    for, so a problem in one declared task does not stop a run that does not use it).

    Raises:
        UnknownTaskError: neither knows ``name``; the message lists every known task.
        ConfigError: the declared task's spec is wrong (see :func:`complete_spec`).
    """
    for spec in cfg.data.declared_tasks if cfg is not None else ():
        if spec.name in TASKS:
            raise _fail(spec, "name", f"is {spec.name!r}, a built-in task's name; choose another")
    if name in TASKS:
        return TASKS[name]
    for spec in cfg.data.declared_tasks if cfg is not None else ():
        if spec.name == name:
            return build_task(spec, cfg)
    declared = [spec.name for spec in cfg.data.declared_tasks] if cfg is not None else []
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join([*TASKS, *declared])}"
                           + ("" if declared else " (declare your own in data.declared_tasks)"))


def known_task_names(cfg: Config) -> set[str]:
    """Names of every built-in and declared task (without building the declared ones)."""
    return set(TASKS) | {spec.name for spec in cfg.data.declared_tasks}


def complete_declared_tasks(cfg: Config) -> Config:
    """``cfg`` with every declared spec completed (:func:`complete_spec`): the config a trained
    model should store, so its tasks are rebuilt with the same labels and modalities without
    their data."""
    specs = tuple(complete_spec(spec, cfg) for spec in cfg.data.declared_tasks)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, declared_tasks=specs))


def task_specs(tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """The specs of the declared tasks among ``tasks``, as plain dicts (JSON-ready): what a saved
    model stores (``task_specs``) to rebuild them with :func:`tasks_from_specs`."""
    return {task.name: to_dict(task.spec) for task in tasks if task.spec is not None}


def tasks_from_specs(specs: dict[str, dict[str, Any]], cfg: Config) -> dict[str, Task]:
    """Rebuild declared tasks from :func:`task_specs` output (unknown keys raise, naming them)."""
    tasks = {}
    for name, data in specs.items():
        spec = from_dict(TaskSpec, data, prefix=f"task_specs.{name}.")
        tasks[name] = build_task(spec, cfg)
    return tasks

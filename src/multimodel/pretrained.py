"""A trained MultiModel as one directory, in Hugging Face's ``save_pretrained`` layout.

::

    config.json           format version, the model config, vocabulary size, modality specs
    model.safetensors     the weights                          (both: MultiModel.save_pretrained)
    tokenizer.model       the shared subword vocabulary        (Tokenizer.save_pretrained)
    training_config.json  the rest of the run's Config (every section but ``model``), the
                          task list and the specs of tasks declared in the config
    README.md             a short model card
    manifest.json         size and SHA-256 of each file above, written last

A training checkpoint (``<run>/checkpoints/step-*/``, :mod:`multimodel.training.checkpoint`)
is such a directory plus the trainer's ``meta.json`` and ``training.pt``, under one manifest.
:func:`load_pretrained` therefore reads a saved model, a checkpoint, or a run directory (its
newest checkpoint) without importing the training loop: ``predict``, ``serve``, ``eval`` and
the experiments load models through it. Checkpoints of formats 1 and 2, which kept the config,
vocabulary size, modality specs and tasks in ``meta.json``, load too.

Every load checks the files against the manifest (:func:`verify`), so flipped bytes are an
error naming the file, not a silently different model; directories written before manifests
existed load without the hash check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multimodel.config import Config, ConfigError, config_from_dict, to_dict, upgrade_model_dict
from multimodel.data.tokenizer import TOKENIZER_FILE, Tokenizer
from multimodel.errors import CheckpointError
from multimodel.model.multimodel import (
    CONFIG_FILE,
    FORMAT_VERSION,
    LEGACY_META_FILE,
    WEIGHTS_FILE,
    MultiModel,
    check_format_version,
    read_json,
    read_model_config,
)
from multimodel.tasks import Task, get_task
from multimodel.tasks.spec import tasks_from_specs

TRAINING_CONFIG_FILE = "training_config.json"
CARD_FILE = "README.md"
MANIFEST = "manifest.json"
CHECKPOINT_PREFIX = "step-"
"""Checkpoints of a run are ``<run>/checkpoints/step-NNNNNNN/``."""


@dataclass
class Pretrained:
    """A loaded model with everything saved beside it.

    Args:
        model: the network, in eval mode.
        tokenizer: its vocabulary.
        config: the full config of the run that trained it.
        tasks: the names of the tasks it was trained on, in the run's order.
        task_specs: name → spec dict of the tasks declared in the config rather than in the
            built-in catalogue (empty when every task is built in).
        directory: the directory loaded (a ``checkpoints/step-*`` one when given a run).
        meta: everything the directory says about itself: ``format_version``, ``config`` (a
            dict), ``vocab_size``, ``modality_specs``, ``tasks``, and for a training
            checkpoint ``step``, ``streams`` and ``task_steps``.
    """

    model: MultiModel
    tokenizer: Tokenizer
    config: Config
    tasks: list[str]
    task_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    directory: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        """The training step of a checkpoint; None for an exported model."""
        step = self.meta.get("step")
        return None if step is None else int(step)

    def get_tasks(self) -> list[Task]:
        """The :class:`~multimodel.tasks.Task` of each name in :attr:`tasks`."""
        return resolve_tasks(self.tasks, self.task_specs, self.config)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write this model as a saved-model directory (without any training state)."""
        return save_pretrained(directory, self.model, self.tokenizer, self.config, self.tasks, self.task_specs)


def resolve_tasks(names: list[str], task_specs: dict[str, dict[str, Any]] | None, config: Config) -> list[Task]:
    """The tasks a saved model was trained on. Built-in tasks resolve by name in the catalogue;
    a task declared in the config is rebuilt from its spec in ``task_specs`` (no data needed)."""
    specs = task_specs or {}
    declared = tasks_from_specs({name: specs[name] for name in names if name in specs}, config)
    return [declared[name] if name in declared else get_task(name, config) for name in names]


# ----------------------------------------------------------------------------------------
# Writing.


def save_pretrained(directory: str | Path, model: MultiModel, tokenizer: Tokenizer, config: Config,
                    tasks: list[str] | None = None, task_specs: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write ``model``, its vocabulary and the run's config as a saved-model directory.

    Args:
        directory: where to write (created if needed; files of an earlier save are replaced).
        model: the network.
        tokenizer: its vocabulary.
        config: the run's full config.
        tasks: the tasks it was trained on (default: ``config.data.tasks``).
        task_specs: name → spec dict of tasks declared in the config (see :class:`Pretrained`).
    """
    directory = Path(directory)
    write_pretrained_files(directory, model, tokenizer.to_bytes(), to_dict(config),
                           list(tasks if tasks is not None else config.data.tasks), task_specs)
    write_manifest(directory)
    return directory


def write_pretrained_files(directory: Path, model: MultiModel, tokenizer_bytes: bytes, config: dict[str, Any],
                           tasks: list[str], task_specs: dict[str, dict[str, Any]] | None = None) -> None:
    """The files of a saved model, without the manifest (a checkpoint adds its own files first)."""
    from multimodel import __version__

    model.save_pretrained(directory)
    (directory / TOKENIZER_FILE).write_bytes(tokenizer_bytes)
    run_config = {
        "format_version": FORMAT_VERSION,
        "config": {section: values for section, values in config.items() if section != "model"},
        "tasks": list(tasks),
        "task_specs": dict(task_specs or {}),
        "multimodel_version": __version__,
    }
    (directory / TRAINING_CONFIG_FILE).write_text(json.dumps(run_config, indent=2, sort_keys=True))
    (directory / CARD_FILE).write_text(_model_card(model, tasks, __version__))


def _model_card(model: MultiModel, tasks: list[str], version: str) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    return (
        "# MultiModel\n\n"
        "A MultiModel (Kaiser et al. 2017, \"One Model To Learn Them All\") trained jointly on"
        f" {', '.join(tasks)}; modalities {', '.join(model.modality_specs)};"
        f" {parameters:,d} parameters; written by multimodel {version}.\n\n"
        "```python\n"
        "from multimodel.pretrained import load_pretrained\n\n"
        "loaded = load_pretrained(\"path/to/this/directory\")  # .model, .tokenizer, .config, .tasks\n"
        "```\n\n"
        "Or from the command line: `multimodel predict path/to/this/directory --text \"...\" --to german`.\n"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Write ``manifest.json``: the size and SHA-256 of every other file in ``directory``."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.name != MANIFEST)
    manifest = {f.name: {"size": f.stat().st_size, "sha256": sha256(f)} for f in files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def verify(directory: Path) -> None:
    """Check every file of ``directory`` against its manifest (size, then SHA-256).

    Raises:
        CheckpointError: a file is missing, has another size or another hash, naming the file
            and the directory. A directory without a manifest (written before they existed)
            passes: its loaders still refuse files they cannot parse.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err}); use an earlier checkpoint") from None
    for name, expected in sorted(manifest.items()):
        path = directory / name
        if not path.is_file():
            problem = "missing"
        elif path.stat().st_size != expected["size"]:
            problem = f"{path.stat().st_size} bytes where the manifest says {expected['size']}"
        elif sha256(path) != expected["sha256"]:
            problem = "its SHA-256 differs from the manifest's (the file was changed or damaged)"
        else:
            continue
        raise CheckpointError(f"{path}: {problem}; checkpoint {directory.name} is damaged, use an earlier one")


# ----------------------------------------------------------------------------------------
# Finding and reading.


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints ``step-*`` under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a saved-model or checkpoint directory, a run directory or its ``checkpoints/`` folder;
    return the directory to load (a run's newest checkpoint)."""
    path = Path(path)
    if (path / LEGACY_META_FILE).is_file() or (path / WEIGHTS_FILE).is_file():
        return path
    for candidate in (path / "checkpoints", path):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(
        f"{path}: no checkpoint found (expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE}, a"
        f" checkpoint with meta.json, or a run directory with checkpoints/step-*/); train first or give the"
        " right path")


def read_meta(directory: Path) -> dict[str, Any]:
    """What a saved model or checkpoint says about itself, in one dict (see :attr:`Pretrained.meta`).

    The model config inside ``config`` is upgraded to this format's fields. Raises
    CheckpointError naming the file that is missing, unparsable or of an unknown format version.
    """
    directory = Path(directory)
    meta_path = directory / LEGACY_META_FILE
    trainer: dict[str, Any] = {}
    if meta_path.is_file() or not (directory / CONFIG_FILE).is_file():
        trainer = read_json(meta_path)
        version = check_format_version(trainer, meta_path)
        if version < 3:  # formats 1-2: meta.json held everything
            if isinstance(trainer.get("config"), dict) and isinstance(trainer["config"].get("model"), dict):
                trainer["config"]["model"] = upgrade_model_dict(trainer["config"]["model"], version)
            return {"task_specs": {}, **trainer}
    model = read_model_config(directory)
    run_path = directory / TRAINING_CONFIG_FILE
    run = read_json(run_path)
    check_format_version(run, run_path)
    if not isinstance(run.get("config"), dict) or not isinstance(run.get("tasks"), list):
        raise CheckpointError(f"{run_path}: lacks config or tasks; not a saved multimodel")
    return {
        **trainer,
        "format_version": model["format_version"],
        "config": {"model": model["model"], **run["config"]},
        "vocab_size": model["vocab_size"],
        "modality_specs": model["modality_specs"],
        "tasks": run["tasks"],
        "task_specs": run.get("task_specs", {}),
        "multimodel_version": run.get("multimodel_version"),
    }


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Load a saved model, a training checkpoint or a run's newest checkpoint (see the module docstring).

    Raises:
        CheckpointError: nothing to load at ``path``, or a file that is missing, damaged (its
            manifest says so), of an unknown format version or does not fit this multimodel.
    """
    directory = resolve_checkpoint(Path(path))
    verify(directory)
    meta = read_meta(directory)
    try:
        config = config_from_dict(meta["config"])
    except ConfigError as err:
        run_config = directory / TRAINING_CONFIG_FILE
        source = run_config if run_config.is_file() else directory / LEGACY_META_FILE
        raise CheckpointError(f"{source}: the config does not fit this multimodel ({err})") from None
    tokenizer = Tokenizer.from_pretrained(directory)
    model = MultiModel.from_pretrained(directory, device=device)
    return Pretrained(model, tokenizer, config, list(meta["tasks"]), dict(meta.get("task_specs") or {}),
                      directory, meta)


__all__ = ["Pretrained", "load_pretrained", "save_pretrained", "read_meta", "resolve_checkpoint",
           "list_checkpoints", "verify", "write_manifest", "CheckpointError", "MANIFEST"]

"""Training checkpoints: a saved model (:mod:`multimodel.pretrained`) plus what resuming needs.

A checkpoint is a directory ``<run>/checkpoints/step-NNNNNNN/`` holding

* the saved model's files — ``config.json``, ``model.safetensors``, ``tokenizer.model``,
  ``training_config.json``, ``README.md`` — which ``predict``, ``serve``, ``eval`` and the
  experiments load with :func:`multimodel.pretrained.load_pretrained`, without this module;
* ``meta.json`` — format version, step, the data-stream positions, batches drawn per task;
* ``training.pt`` — optimiser and scheduler state, RNG states, routing totals, skipped steps;
* ``manifest.json`` — the size and SHA-256 of each of the files above, written last.

It is written into a temporary directory and renamed into place, so a crash (even SIGKILL)
leaves either the previous checkpoint or the new one, never half of one; the temporary
directories such a crash leaves are removed when the run starts again
(:func:`remove_stale_temporaries`). Every load checks the files against the manifest
(:func:`verify`), so flipped bytes are an error naming the file, not a silently different
model. Old checkpoints beyond ``keep`` are removed only after the new one has been read back
and verified. Resuming takes the newest checkpoint that verifies (:func:`newest_intact`); a
damaged one is set aside as ``damaged-step-*`` with a warning. Checkpoints of formats 1 and 2
(config, vocabulary size, modality specs and tasks in ``meta.json``) still load and resume;
those written before manifests existed load without the hash check.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from multimodel.errors import CheckpointError
from multimodel.model.multimodel import FORMAT_VERSION, LEGACY_META_FILE, WEIGHTS_FILE
from multimodel.model.multimodel import load_weights as _load_weights_file
from multimodel.pretrained import (
    CHECKPOINT_PREFIX,
    MANIFEST,
    list_checkpoints,
    read_meta,
    resolve_checkpoint,
    verify,
    write_manifest,
    write_pretrained_files,
)

PREFIX = CHECKPOINT_PREFIX
DAMAGED_PREFIX = "damaged-"
SUPERSEDED_PREFIX = "superseded-"
TMP_PREFIX = f".tmp-{PREFIX}"
TRAINING_STATE_FILE = "training.pt"
SAVED_MODEL_KEYS = ("config", "tasks", "task_specs", "modality_specs", "vocab_size", "multimodel_version")
"""Keys of ``save_checkpoint``'s ``meta`` that the saved model's own files hold (the model knows
its modality specs and vocabulary size itself); the rest go to ``meta.json``."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: Path,
    step: int,
    *,
    model: torch.nn.Module,
    meta: dict[str, Any],
    tokenizer_bytes: bytes,
    training_state: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write checkpoint ``step`` atomically under ``directory``; keep the newest ``keep`` (0 = all).

    Args:
        model: the network (a :class:`~multimodel.model.multimodel.MultiModel`, unwrapped).
        meta: the run's ``config`` (a dict), its ``tasks`` (and ``task_specs``), which go to the
            saved model's files, and the trainer's state (``streams``, ``task_steps``), which
            goes to ``meta.json`` with the step.
        tokenizer_bytes: the serialised vocabulary.
        training_state: optimiser, scheduler, RNG and other state for ``training.pt``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step:07d}"
    tmp = directory / f"{TMP_PREFIX}{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_files(tmp, step, model, meta, tokenizer_bytes, training_state)
    except OSError as err:  # e.g. a full disk: the previous checkpoint is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{directory}: could not write checkpoint {final.name} ({err}); the checkpoints before it are"
            " intact: free some space, then continue with --resume") from err
    if final.exists():  # the same step saved twice (e.g. Ctrl-C right after a save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(directory)
    if keep > 0:
        verify(final)  # what is on disk, read back: never delete an intact older one for a bad new one
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_files(tmp: Path, step: int, model: torch.nn.Module, meta: dict[str, Any], tokenizer_bytes: bytes,
                 training_state: dict[str, Any] | None) -> None:
    """The saved model's files, the trainer's, then their manifest, into ``tmp``; all fsynced."""
    write_pretrained_files(tmp, model, tokenizer_bytes, meta["config"], list(meta["tasks"]), meta.get("task_specs"))
    trainer = {k: v for k, v in meta.items() if k not in SAVED_MODEL_KEYS}
    (tmp / LEGACY_META_FILE).write_text(
        json.dumps({"format_version": FORMAT_VERSION, "step": step, **trainer}, indent=2, sort_keys=True))
    if training_state is not None:
        torch.save(training_state, tmp / TRAINING_STATE_FILE)
    write_manifest(tmp)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def newest_intact(directory: Path, warn: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint under ``directory`` that verifies and whose meta reads; each newer
    damaged one is renamed ``damaged-step-*`` (kept for inspection, out of resumption and
    retention) with a warning. None when there is no intact one."""
    for candidate in reversed(list_checkpoints(directory)):
        try:
            verify(candidate)
            read_meta(candidate)
        except CheckpointError as err:
            aside = candidate.with_name(DAMAGED_PREFIX + candidate.name)
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(candidate, aside)
            warn(f"warning: {err}; set aside as {aside.name}, trying the checkpoint before it")
            continue
        return candidate
    return None


def branch_from(directory: Path, chosen: Path, warn: Callable[[str], None] = print) -> Path:
    """Make checkpoint ``chosen`` of ``directory`` the newest, for resuming from it: verify it and
    rename every newer one ``superseded-step-*`` (kept, out of resumption and retention)."""
    chosen = Path(chosen)
    if chosen.resolve().parent != Path(directory).resolve() or not chosen.name.startswith(PREFIX):
        raise CheckpointError(
            f"{chosen}: not a checkpoint of this run; give one of {directory}/step-* (to start a new run"
            " from another run's weights, train a fresh run from it instead)")
    if not chosen.is_dir():
        raise CheckpointError(f"{chosen}: no such checkpoint; the run has "
                              + (", ".join(p.name for p in list_checkpoints(directory)) or "none"))
    verify(chosen)
    read_meta(chosen)
    step = int(chosen.name[len(PREFIX):])
    for newer in [p for p in list_checkpoints(directory) if int(p.name[len(PREFIX):]) > step]:
        aside = newer.with_name(SUPERSEDED_PREFIX + newer.name)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(newer, aside)
        warn(f"set {newer.name} aside as {aside.name}: the run continues from {chosen.name}")
    return chosen


def damaged_checkpoints(directory: Path) -> list[Path]:
    """The checkpoints :func:`newest_intact` set aside under ``directory``."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(DAMAGED_PREFIX + PREFIX))


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the half-written checkpoint folders an interrupted save left; return them."""
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(TMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    """Load the checkpoint's ``model.safetensors`` into ``model``; mismatches and corruption raise CheckpointError."""
    _load_weights_file(model, Path(ckpt) / WEIGHTS_FILE)


def load_training_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / TRAINING_STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; this checkpoint holds weights only and cannot resume") from None
    except Exception as err:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"{path}: corrupt training state ({err}); use an earlier checkpoint") from None


__all__ = ["CheckpointError", "save_checkpoint", "newest_intact", "branch_from", "damaged_checkpoints",
           "remove_stale_temporaries", "list_checkpoints", "resolve_checkpoint", "read_meta", "verify",
           "load_weights", "load_training_state", "rng_state", "set_rng_state", "MANIFEST", "PREFIX"]

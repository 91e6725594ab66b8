"""Checkpoints: everything needed to resume a run exactly, or to use the model later.

A checkpoint is a directory ``<run>/checkpoints/step-NNNNNNN/`` holding

* ``model.safetensors`` — the weights;
* ``meta.json`` — format version, step, the full config, the modality specs, the task list,
  the data-stream positions;
* ``tokenizer.model`` — the shared sentencepiece vocabulary;
* ``training.pt`` — optimiser and scheduler state, RNG states, running statistics.

* ``manifest.json`` — the size and SHA-256 of each of the files above, written last.

It is written into a temporary directory and renamed into place, so a crash (even SIGKILL)
leaves either the previous checkpoint or the new one, never half of one; the temporary
directories such a crash leaves are removed when the run starts again
(:func:`remove_stale_temporaries`). Every load checks the files against the manifest
(:func:`verify`), so flipped bytes are an error naming the file, not a silently different
model. Old checkpoints beyond ``keep`` are removed only after the new one has been read back
and verified. Resuming takes the newest checkpoint that verifies (:func:`newest_intact`); a
damaged one is set aside as ``damaged-step-*`` with a warning. Checkpoints written before
manifests existed load without the hash check.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from multimodel.config import upgrade_model_dict

FORMAT_VERSION = 2
"""2: the paper's self-attention, encoder timing signal and class-label net; version 1
checkpoints still load (their model config is upgraded, ``config.upgrade_model_dict``)."""
READABLE_VERSIONS = (1, 2)
PREFIX = "step-"
MANIFEST = "manifest.json"
DAMAGED_PREFIX = "damaged-"
SUPERSEDED_PREFIX = "superseded-"
TMP_PREFIX = f".tmp-{PREFIX}"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and what to do."""


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
    """Write checkpoint ``step`` atomically under ``directory``; keep the newest ``keep`` (0 = all)."""
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
    """The checkpoint's files, then their manifest, into ``tmp``; all fsynced."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "tokenizer.model").write_bytes(tokenizer_bytes)
    full_meta = {"format_version": FORMAT_VERSION, "step": step, **meta}
    (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True))
    if training_state is not None:
        torch.save(training_state, tmp / "training.pt")
    manifest = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(ckpt: Path) -> None:
    """Check every file of checkpoint ``ckpt`` against its manifest (size, then SHA-256).

    Raises:
        CheckpointError: a file is missing, has another size or another hash, naming the file
            and the checkpoint. A checkpoint without a manifest (written before they existed)
            passes: its loaders still refuse files they cannot parse.
    """
    manifest_path = ckpt / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err}); use an earlier checkpoint") from None
    for name, expected in sorted(manifest.items()):
        path = ckpt / name
        if not path.is_file():
            problem = "missing"
        elif path.stat().st_size != expected["size"]:
            problem = f"{path.stat().st_size} bytes where the manifest says {expected['size']}"
        elif _sha256(path) != expected["sha256"]:
            problem = "its SHA-256 differs from the manifest's (the file was changed or damaged)"
        else:
            continue
        raise CheckpointError(f"{path}: {problem}; checkpoint {ckpt.name} is damaged, use an earlier one")


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


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints under ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_checkpoint(path: Path) -> Path:
    """Accept a checkpoint directory, a run directory or its checkpoints/ folder."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    for candidate in (path / "checkpoints", path):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(
        f"{path}: no checkpoint found (expected a directory with meta.json, or a run directory"
        " with checkpoints/step-*/); train first or give the right path")


def read_meta(ckpt: Path) -> dict[str, Any]:
    meta_path = ckpt / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; not a multimodel checkpoint") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: corrupt JSON ({err}); use an earlier checkpoint") from None
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{meta_path}: checkpoint format version {version!r}, this multimodel reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))}; use the multimodel release that wrote it")
    if version < FORMAT_VERSION and isinstance(meta.get("config", {}).get("model"), dict):
        meta["config"]["model"] = upgrade_model_dict(meta["config"]["model"], version)
    return meta


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    """Load ``model.safetensors`` into ``model``; mismatches and corruption raise CheckpointError."""
    weights_path = ckpt / "model.safetensors"
    try:
        state = load_file(str(weights_path))
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path}: corrupt weights ({err}); use an earlier checkpoint") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{weights_path}: does not fit the model built from its config (missing {missing[:3]},"
            f" unexpected {unexpected[:3]}, shape mismatch {bad_shapes[:3]}); was the config changed?")
    model.load_state_dict(state)


def load_training_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "training.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; this checkpoint holds weights only and cannot resume") from None
    except Exception as err:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"{path}: corrupt training state ({err}); use an earlier checkpoint") from None

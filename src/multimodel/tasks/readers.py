"""The readers a declared task can name (``TaskSpec.reader``): each corpus format of
:mod:`multimodel.corpora`, and what a task over it is by default.

One :class:`Reader` per format, in one explicit dictionary, :data:`READERS` (its keys are
:data:`multimodel.config.TASK_READERS`). A reader's ``read`` gets the spec, the split's paths
(already found on disk), the data's own name of the split, a size limit and ``skip_bad``, and
returns a :class:`~multimodel.data.example.Split`; its ``check`` finds a column the spec names
that the data lacks before anything is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from multimodel.config import ConfigError, TaskSpec
from multimodel.corpora import coco, hf_dataset, image_folder, librispeech, manifest, parallel_text, ptb
from multimodel.data.example import Split

__all__ = ["READERS", "Reader", "ReadRequest"]


@dataclass(frozen=True, kw_only=True)
class ReadRequest:
    """What a reader is asked for: one split of one declared task.

    Args:
        spec: the task's spec (completed: modalities, labels and columns filled in).
        split: the task's split, ``"train"`` or ``"test"``.
        paths: the split's paths, found on disk (absolute, or under the data folder).
        source_split: the data's own name of the split (``TaskSpec.splits``, else the reader's default).
        limit: at most this many examples (0 = all).
        skip_bad: skip and count bad records instead of raising.
        cache_dir: where a reader may keep a converted form of the data (Hugging Face's Arrow cache).
    """

    spec: TaskSpec
    split: str
    paths: list[Path]
    source_split: str
    limit: int
    skip_bad: bool
    cache_dir: Path | None = None


@dataclass(frozen=True, kw_only=True)
class Reader:
    """A corpus format a declared task can read.

    Args:
        name: the value of ``TaskSpec.reader``.
        description: one line: the layout it reads.
        input_modality: what its inputs are; None = the spec says (hf_dataset).
        target_modality: what its targets are (``"text"`` or ``"class_label"``); None = the spec says.
        task_token: the usual task token of a text target, used when the spec gives none.
        metrics: the usual metrics of a text target.
        files: paths per split: 1, 2 (parallel_text: source, target) or 0 (one or more).
        columns: the roles of ``TaskSpec.columns`` it reads, with their default names (None = required).
        splits: the data's own split names by default (``{"test": "val"}`` for COCO); unlisted = same name.
        read: ``read(request) -> Split``.
        labels: ``labels(request) -> class names`` read from the train split, for a
            classification task whose spec gives none; None = the spec must give them.
        check: ``check(request) -> None``: raise :class:`ConfigError` naming the field for a column the
            data lacks; None = nothing to check.
    """

    name: str
    description: str
    input_modality: str | None
    target_modality: str | None
    read: Callable[[ReadRequest], Split]
    task_token: str | None = None
    metrics: tuple[str, ...] = ()
    files: int = 1
    columns: dict[str, str | None] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    labels: Callable[[ReadRequest], tuple[str, ...]] | None = None
    check: Callable[[ReadRequest], None] | None = None


def _field(spec: TaskSpec, name: str) -> str:
    return f"data.declared_tasks.{spec.name}.{name}"


# -- text ----------------------------------------------------------------------------------

def _read_parallel(r: ReadRequest) -> Split:
    source, target = r.paths
    return parallel_text.read_parallel(source, target, limit=r.limit, skip_bad=r.skip_bad)


def _read_ptb(r: ReadRequest) -> Split:
    split = None if r.source_split == "all" else r.source_split
    return ptb.read_ptb(r.paths[0], skip_bad=r.skip_bad, split=split, limit=r.limit)


# -- images --------------------------------------------------------------------------------

def _read_coco(r: ReadRequest) -> Split:
    return coco.read_coco_captions(r.paths[0], split=r.source_split, size=r.spec.image_size, limit=r.limit,
                                   skip_bad=r.skip_bad, per_caption=r.spec.per_caption and r.split == "train",
                                   lazy=r.spec.lazy)


def _read_image_folder(r: ReadRequest) -> Split:
    return image_folder.read_image_folder(r.paths[0], size=r.spec.image_size, limit=r.limit, skip_bad=r.skip_bad,
                                          lazy=r.spec.lazy, classes=r.spec.labels or None)


def _image_folder_labels(r: ReadRequest) -> tuple[str, ...]:
    return tuple(image_folder.class_names(r.paths[0]))


# -- audio ---------------------------------------------------------------------------------

def _read_librispeech(r: ReadRequest) -> Split:
    return librispeech.read_librispeech(r.paths[0], limit=r.limit, skip_bad=r.skip_bad,
                                        sample_rate=r.spec.sample_rate, lazy=r.spec.lazy)


def _manifest_keys(r: ReadRequest) -> tuple[str, str]:
    return r.spec.columns.get("input", "audio"), r.spec.columns.get("target", "text")


def _read_manifest(r: ReadRequest) -> Split:
    audio_key, text_key = _manifest_keys(r)
    return manifest.read_manifest(r.paths[0], limit=r.limit, skip_bad=r.skip_bad, sample_rate=r.spec.sample_rate,
                                  lazy=r.spec.lazy, audio_key=audio_key, text_key=text_key)


def _check_manifest(r: ReadRequest) -> None:
    """The keys the spec names must be on the manifest's first record (a typo fails every line)."""
    try:
        with open(r.paths[0], encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
        record = json.loads(first) if first else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # the reader reports an unreadable file, naming the line
    if not isinstance(record, dict):
        return
    for role, key in zip(("input", "target"), _manifest_keys(r)):
        if key not in record:
            raise ConfigError(f"{_field(r.spec, 'columns.' + role)}: key {key!r} is not in {r.paths[0]}'s first"
                              f" record (its keys: {', '.join(record)})")


# -- Hugging Face datasets -----------------------------------------------------------------

def _open_hf(r: ReadRequest) -> Any:
    return hf_dataset.open_hf_dataset(r.paths, r.source_split, r.cache_dir)


def _check_hf_columns(r: ReadRequest, dataset: Any) -> None:
    for role in ("input", "target"):
        column = r.spec.columns[role]
        try:
            hf_dataset.split_column(dataset, column)
        except KeyError:
            raise ConfigError(f"{_field(r.spec, 'columns.' + role)}: no column {column!r} in"
                              f" {', '.join(map(str, r.paths))} (its columns: {', '.join(dataset.column_names)})") from None


def _read_hf(r: ReadRequest) -> Split:
    dataset = _open_hf(r)
    _check_hf_columns(r, dataset)
    return hf_dataset.hf_examples(
        dataset, source=r.paths[0], input_column=r.spec.columns["input"], target_column=r.spec.columns["target"],
        input_modality=r.spec.input_modality, target_modality=r.spec.target_modality, labels=r.spec.labels,
        image_size=r.spec.image_size, sample_rate=r.spec.sample_rate, limit=r.limit)


def _hf_labels(r: ReadRequest) -> tuple[str, ...]:
    dataset = _open_hf(r)
    _check_hf_columns(r, dataset)
    return hf_dataset.class_names(dataset, r.spec.columns["target"], r.paths[0])


# -- the catalogue -------------------------------------------------------------------------

_readers = [
    Reader(name="parallel_text", description="two aligned text files, one sentence a line (plain or gzip)",
           input_modality="text", target_modality="text", metrics=("bleu",), files=2, read=_read_parallel),
    Reader(name="ptb", description="Penn Treebank .mrg trees (folder, .mrg file or NLTK treebank.zip)"
           " -> linearised trees", input_modality="text", target_modality="text", task_token="To-Parse-Tree",
           metrics=("bracket_f1",), read=_read_ptb),
    Reader(name="coco_captions", description="COCO folder: annotations/captions_<split><year>.json + images",
           input_modality="image", target_modality="text", task_token="To-English", metrics=("caption_bleu",),
           splits={"test": "val"}, read=_read_coco),
    Reader(name="image_folder", description="ImageNet-style root/<class>/<image> folders",
           input_modality="image", target_modality="class_label", read=_read_image_folder,
           labels=_image_folder_labels),
    Reader(name="librispeech", description="one LibriSpeech subset: <speaker>/<chapter>/*.flac + *.trans.txt",
           input_modality="audio", target_modality="text", task_token="To-English", metrics=("wer",),
           read=_read_librispeech),
    Reader(name="audio_manifest", description="JSONL lines of audio path (relative to the file) and transcript",
           input_modality="audio", target_modality="text", task_token="To-English", metrics=("wer",),
           columns={"input": "audio", "target": "text"}, read=_read_manifest, check=_check_manifest),
    Reader(name="hf_dataset", description="a local Hugging Face dataset (save_to_disk folder, Parquet/Arrow/"
           "JSON/CSV files), columns mapped to input and target", input_modality=None, target_modality=None,
           files=0, columns={"input": None, "target": None}, read=_read_hf, labels=_hf_labels),
]

#: Every reader, by name.
READERS: dict[str, Reader] = {reader.name: reader for reader in _readers}

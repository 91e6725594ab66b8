"""The one catalogue of tasks: every task multimodel knows, in one explicit dictionary.

Built-in tasks (generated offline, cached under ``data_dir/builtin``) mirror the paper's eight:

============================  ==========================  ===========================
task                          mirrors (paper)             input → output, token
============================  ==========================  ===========================
fashion_mnist                 ImageNet classification     image → class label
fashion_captions              COCO captioning             image → text, To-English
speech_numbers                WSJ speech recognition      audio → text, To-English
grammar_parsing               WSJ constituency parsing    text → tree, To-Parse-Tree
numbers_en_de / _de_en        WMT EN→DE / DE→EN           text → text, To-German / To-English
numbers_en_fr / _fr_en        WMT EN→FR / FR→EN           text → text, To-French / To-English
============================  ==========================  ===========================

Real-corpus tasks read standard formats from ``data_dir`` (``multi30k/``, ``ptb_sample/``
or ``treebank/``); ``digits`` (sklearn's 8×8 digits) serves fast tests.

To add a task over your own data, declare it in a config instead of editing this file: a
:class:`~multimodel.config.TaskSpec` in ``data.declared_tasks`` names a reader and its paths
(:mod:`multimodel.tasks.spec`; :func:`get_task` with the config finds both kinds). To add a
built-in task: write a loader returning :class:`~multimodel.data.example.Split`, then add a
:class:`Task` entry below. Nothing registers itself by being imported.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from multimodel.config import Config
from multimodel.corpora import captions, fashion_mnist, grammar, numbers, speech
from multimodel.corpora.parallel_text import multi30k_split
from multimodel.corpora.ptb import read_ptb
from multimodel.data.example import Split
from multimodel.errors import UserError
from multimodel.tasks.task import Example, Task

__all__ = ["TASKS", "BUILTIN_TASKS", "Task", "Example", "Split", "UnknownTaskError", "get_task"]


# -- real corpora --------------------------------------------------------------------------

def _multi30k_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "multi30k"


def _multi30k_available(data_dir: Path) -> str | None:
    root = _multi30k_dir(data_dir)
    if (root / "train.en.gz").is_file() or (root / "train.en").is_file():
        return None
    return (f"Multi30k not found in {root}; put train/val/test_2016_flickr.{{en,de,fr}}(.gz) there"
            " (github.com/multi30k/dataset, data/task1/raw) or set data.data_dir")


def _multi30k_load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False, *,
                   src: str, tgt: str) -> Split:
    del seed  # the corpus defines its own order
    return multi30k_split(_multi30k_dir(data_dir), src, tgt, split, limit=size, skip_bad=skip_bad)


def _ptb_path(data_dir: Path) -> Path | None:
    for candidate in (Path(data_dir) / "ptb_sample" / "treebank.zip", Path(data_dir) / "treebank.zip",
                      Path(data_dir) / "treebank"):
        if candidate.exists():
            return candidate
    return None


def _ptb_available(data_dir: Path) -> str | None:
    if _ptb_path(data_dir) is not None:
        return None
    return (f"Penn Treebank .mrg files not found under {data_dir} (looked for ptb_sample/treebank.zip,"
            " treebank.zip, treebank/); the NLTK 10% sample is nltk_data's packages/corpora/treebank.zip")


def _ptb_load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    del seed
    path = _ptb_path(data_dir)
    if path is None:
        raise FileNotFoundError(_ptb_available(data_dir))
    return read_ptb(path, skip_bad=skip_bad, split=split, limit=size)


def _always(_data_dir: Path) -> None:
    return None


# -- the catalogue -------------------------------------------------------------------------

_TRANSLATION = {
    ("en", "de"): "To-German",
    ("de", "en"): "To-English",
    ("en", "fr"): "To-French",
    ("fr", "en"): "To-English",
}
_LANG = {"en": "EN", "de": "DE", "fr": "FR"}

_builtin: list[Task] = [
    Task(
        name="fashion_mnist",
        description="Fashion-MNIST 28×28 clothing images → one of 10 classes",
        paper_task="ImageNet",
        input_modality="image",
        target_modality="class_label:10",
        task_token=None,
        metrics=("accuracy", "top5"),
        load=fashion_mnist.load,
        available=fashion_mnist.available,
        labels=tuple(fashion_mnist.CLASS_NAMES),
        input_shape=(1, 28, 28),
    ),
    Task(
        name="fashion_captions",
        description="64×64 canvases of 2–4 Fashion-MNIST items → an English caption",
        paper_task="COCO captioning",
        input_modality="image",
        target_modality="text",
        task_token="To-English",
        metrics=("item_f1", "caption_bleu"),  # item F1: the items named and where; BLEU beside it
        load=captions.load,
        available=captions.available,
        input_shape=(1, captions.CANVAS, captions.CANVAS),
    ),
    Task(
        name="speech_numbers",
        description="espeak-ng speech (held-out voices and speeds at test) → English transcript",
        paper_task="WSJ speech",
        input_modality="audio",
        target_modality="text",
        task_token="To-English",
        metrics=("wer",),
        load=speech.load,
        available=speech.available,
        report_by=("voice", "kind"),  # test voices are held-out accents and variants
    ),
    Task(
        name="grammar_parsing",
        description="English sentences from a hand-written grammar → linearised constituency tree",
        paper_task="WSJ parsing",
        input_modality="text",
        target_modality="text",
        task_token="To-Parse-Tree",
        metrics=("bracket_f1",),
        load=grammar.load,
        available=grammar.available,
    ),
]
for (_src, _tgt), _token in _TRANSLATION.items():
    _builtin.append(Task(
        name=f"numbers_{_src}_{_tgt}",
        description=f"number, ordinal, year and date expressions, {_LANG[_src]} → {_LANG[_tgt]}",
        paper_task=f"WMT {_LANG[_src]}→{_LANG[_tgt]}",
        input_modality="text",
        target_modality="text",
        task_token=_token,
        metrics=("bleu",),
        load=numbers.load_pair(_src, _tgt),
        available=numbers.available,
    ))

_extra: list[Task] = [
    Task(
        name="digits",
        description="sklearn's 8×8 handwritten digits → one of 10 classes (fast tests)",
        paper_task="ImageNet (tiny)",
        input_modality="image",
        target_modality="class_label:10",
        task_token=None,
        metrics=("accuracy", "top5"),
        load=fashion_mnist.load_digits_split,
        available=fashion_mnist.digits_available,
        labels=tuple(str(i) for i in range(10)),
        input_shape=(1, 8, 8),
    ),
    Task(
        name="ptb_parsing",
        description="Penn Treebank WSJ trees (.mrg) → linearised tree (Vinyals et al. 2015)",
        paper_task="WSJ parsing",
        input_modality="text",
        target_modality="text",
        task_token="To-Parse-Tree",
        metrics=("bracket_f1",),
        load=_ptb_load,
        available=_ptb_available,
    ),
]
for (_src, _tgt), _token in _TRANSLATION.items():
    _extra.append(Task(
        name=f"multi30k_{_src}_{_tgt}",
        description=f"Multi30k image descriptions, {_LANG[_src]} → {_LANG[_tgt]} (29,000 training pairs)",
        paper_task=f"WMT {_LANG[_src]}→{_LANG[_tgt]}",
        input_modality="text",
        target_modality="text",
        task_token=_token,
        metrics=("bleu",),
        load=partial(_multi30k_load, src=_src, tgt=_tgt),
        available=_multi30k_available,
    ))

#: The built-in eight, in the paper's order of presentation.
BUILTIN_TASKS: tuple[str, ...] = tuple(t.name for t in _builtin)

#: Every task, by name.
TASKS: dict[str, Task] = {t.name: t for t in _builtin + _extra}


class UnknownTaskError(UserError, ValueError):
    """A task name that is not in the catalogue."""


def get_task(name: str, cfg: Config | None = None) -> Task:
    """The task called ``name``: the catalogue's, else one ``cfg.data.declared_tasks`` declares
    (:func:`multimodel.tasks.spec.resolve_task`); unknown names raise with the list of known ones."""
    if name in TASKS:
        return TASKS[name]
    from multimodel.tasks.spec import resolve_task  # spec.py imports this module's catalogue

    return resolve_task(name, cfg)

"""Typed configuration: dataclasses with one documented field each, presets, overrides.

A run is described by one :class:`Config`, made of a :class:`ModelConfig` (with its
:class:`MoEConfig`), a :class:`DataConfig` and a :class:`TrainConfig`. Presets live as
Python files in the package's ``configs/`` folder (``multimodel/configs/demo.py``, named on
the command line as ``--config demo``) or anywhere else, each defining a module-level
``CONFIG``; command-line overrides
are ``section.field=value`` strings (``model.moe.num_experts=32``). Every unknown key raises
:class:`ConfigError` listing the valid ones, so a typo never passes silently (the original
tensor2tensor hparams accepted any name).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import re
import traceback
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multimodel.errors import UserError

#: Special ids of the shared subword vocabulary, one source for the tokenizer, the text modality,
#: the model and decoding: padding, end of sequence, unknown piece. There is no BOS: the decoder's
#: first input is the task token.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value."""


def _require(ok: bool, key: str, requirement: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``ok``: "data.batch_size must be >= 1, got 0"."""
    if not ok:
        raise ConfigError(f"{key} must be {requirement}, got {value!r}")


def _require_all(values: Any, key: str, requirement: str, check: Any) -> None:
    for value in values:
        _require(check(value), key, requirement, value)


MIXING_STRATEGIES = ("proportional", "uniform", "temperature", "weights")
"""Values of ``train.mixing`` (:mod:`multimodel.data.mixture` implements them)."""
SHARDING = ("none", "fsdp")
"""Values of ``train.shard`` (:mod:`multimodel.training.layout` implements them)."""
PRECISIONS = ("float32", "bf16")
"""Values of ``train.precision``."""
LR_DECAYS = ("rsqrt", "none")
"""Values of ``train.lr_decay`` (:mod:`multimodel.training.optim` implements them)."""

TASK_READERS = ("parallel_text", "ptb", "coco_captions", "image_folder", "librispeech", "audio_manifest",
                "hf_dataset")
"""Values of ``TaskSpec.reader`` (:mod:`multimodel.tasks.readers` implements them)."""

TASK_INPUT_MODALITIES = ("text", "image", "audio")
"""Input modalities a declared task may name (the modality catalogue, :mod:`multimodel.modalities`)."""

TASK_METRICS = {"text": ("bleu", "caption_bleu", "wer", "bracket_f1"), "class_label": ("accuracy", "top5")}
"""Metrics a declared task may report, by target modality (:mod:`multimodel.evaluation` computes them)."""

TASK_SPLITS = ("train", "test")
"""The splits every task has: training data and held-out evaluation data."""


@dataclass(kw_only=True)
class MoEConfig:
    """Sparsely-gated mixture of experts (Shazeer et al. 2017; MultiModel section 2.3)."""

    num_experts: int = 16
    """Number of feed-forward experts (paper: 240 joint, 60 single-task)."""
    top_k: int = 2
    """Experts each token is routed to (paper: 4; released code: 2)."""
    expert_hidden_size: int = 512
    """Hidden width of each expert's ReLU feed-forward net."""
    noisy_gating: bool = True
    """Add N(0,1)·softplus(x W_noise) to the gate logits during training (never at eval)."""
    aux_loss_coef: float = 1e-2
    """Weight of CV²(importance) + CV²(load) in the total loss."""
    capacity_factor: float | None = None
    """GShard-style per-expert capacity (tokens dropped past it); None = dropless (default)."""
    parallel_experts: bool = True
    """On a multi-core CPU, run different experts on different cores (each expert's matmuls on
    one core) when they get few tokens each; same results to rounding, faster with many experts."""

    def __post_init__(self) -> None:
        _require(self.num_experts >= 1, "model.moe.num_experts", ">= 1", self.num_experts)
        _require(1 <= self.top_k <= self.num_experts, "model.moe.top_k",
                 f"between 1 and num_experts ({self.num_experts})", self.top_k)
        _require(self.expert_hidden_size >= 1, "model.moe.expert_hidden_size", ">= 1", self.expert_hidden_size)
        _require(self.aux_loss_coef >= 0, "model.moe.aux_loss_coef", ">= 0", self.aux_loss_coef)
        _require(self.capacity_factor is None or self.capacity_factor > 0, "model.moe.capacity_factor",
                 "> 0 (or None: dropless)", self.capacity_factor)


@dataclass(kw_only=True)
class ModelConfig:
    """The MultiModel network: modality nets, encoder, I/O mixer, decoder (section 2)."""

    hidden_size: int = 256
    """Width D of the shared representation."""
    num_heads: int = 8
    """Heads of the multi-head dot-product attention in the attention blocks."""
    dropout: float = 0.1
    """Dropout after each conv block and on attention outputs (training only)."""
    encoder_blocks: int = 6
    """Non-causal conv blocks in the encoder; the MoE layer sits after the middle one."""
    mixer_blocks: int = 2
    """Causal conv blocks in the I/O mixer, after its attention block."""
    decoder_blocks: int = 4
    """Decoder blocks (causal conv block + attention to the encoder); MoE in the middle."""
    conv_kernel_sizes: tuple[int, ...] = (3, 3, 15, 15)
    """Kernel size of each of the four ConvSteps of a conv block."""
    conv_dilations: tuple[int, ...] = (1, 1, 1, 8)
    """Dilation of each of the four ConvSteps of a conv block."""
    attention_kernel_size: int = 5
    """Kernel of the two conv steps (dilations 1 and 4) inside an attention block."""
    use_attention: bool = True
    """False removes the attention blocks (paper Table 4 ablation)."""
    self_attention: bool = True
    """Masked multi-head self-attention of the mixed targets inside each attention block, before
    the attention to the memory (paper §2.2); False = the released code's attention-to-memory
    only ("simple" attention)."""
    self_attention_residual: bool = False
    """Add the self-attention's input to its output before the attention to the memory (as a
    Transformer decoder does); False = the paper's chain, where the self-attention's output
    alone is the query."""
    encoder_timing_signal: bool = True
    """Add the sinusoidal timing signal to the encoder's input (the released code's encoder
    does), so that the memory's keys carry each input position."""
    use_moe: bool = True
    """False removes the MoE layers (paper Table 4 ablation)."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """Mixture-of-experts settings."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy of every output modality."""
    tie_text_embeddings: bool = False
    """Share the text input embedding with the text output projection."""
    image_channels: int = 3
    """Channels the image net expects; grayscale input is repeated to this many."""
    image_entry_filters: tuple[int, ...] = (32, 64)
    """Filters of the two first ConvSteps of the image entry flow (paper: 32, 64)."""
    audio_mels: int = 80
    """Mel bands of the audio spectrogram features."""
    audio_sample_rate: int = 16000
    """Sample rate of raw waveforms given to the audio net's front end."""
    audio_frequency_patch: int = 16
    """Adjacent mel bands folded into channels before the audio net's 2-D convs (space-to-depth
    over frequency, ~20x cheaper on CPU); 1 = the paper's one-channel spectrogram."""
    audio_time_strides: int = 2
    """Number of stride-2 residual blocks over time in the audio net (each halves T), after an
    entry ConvStep, each with ``image_entry_filters[1]`` filters. Ignored when
    ``audio_block_filters`` is set."""
    audio_block_filters: tuple[int, ...] = ()
    """The paper's audio net when set: one stride-2 residual block over time per entry, with that
    many filters, and no entry ConvStep (paper: l_i = ConvRes(l_(i-1), 2^i), i = 1..8, i.e.
    2, 4, ..., 256). Empty = the ``audio_time_strides`` net above."""
    audio_normalize: bool = False
    """Normalise each utterance's log-mel features to mean 0 and variance 1 per mel band over its
    real frames (CMVN, layers/utterance_norm.py) before the audio net. Not in the paper's
    release (the later tensor2tensor speech modality normalises per band over time too);
    False = the paper."""
    audio_frequency_masks: int = 0
    """SpecAugment in training (Park et al. 2019; not in the paper): bands of adjacent mel bands
    blanked per utterance (to its mean feature); 0 = none. layers/spec_augment.py. A regulariser
    for long runs: with 2 bands and 2 spans the demo model had not learned to read speech after
    1,500 steps (docs/results.md, "What limits learning per step")."""
    audio_frequency_mask_width: int = 15
    """Widest such band, in mel bands (each width is uniform in 0 .. this)."""
    audio_time_masks: int = 0
    """SpecAugment in training: spans of frames blanked per utterance; 0 = none."""
    audio_time_mask_fraction: float = 0.1
    """Widest such span, as a fraction of the utterance's real frames."""
    class_label_net: str = "downsample"
    """Class-label output net: 'downsample' = the released code's downsampling conv block
    (strided residual, two ConvSteps + max-pool, ConvSteps widening, ReLU, mean pool, linear);
    'convstep' = the earlier narrow net (ConvStep + stride-2 subsampling per block, mean pool)."""
    class_label_blocks: int = 1
    """Downsampling blocks of the class-label output net before global pooling."""
    class_label_widths: tuple[float, float, float] = (1.25, 2.0, 2.5)
    """Widths of the 'downsample' net as multiples of hidden_size: its residual and pooled
    ConvSteps, then its last two (released code: 1.25, 2, 2.5; the first ConvStep keeps D)."""
    class_label_kernel_size: int = 3
    """Kernel of the 'downsample' net's ConvSteps and max-pool over the memory sequence."""
    task_tokens: tuple[str, ...] = ("To-English", "To-German", "To-French", "To-Parse-Tree")
    """Task tokens the decoder knows; a task's token must be one of these."""
    max_target_length: int = 256
    """Longest target (in subwords) the model accepts and decodes."""

    def __post_init__(self) -> None:
        m = "model."
        _require(self.hidden_size >= 1, m + "hidden_size", ">= 1", self.hidden_size)
        _require(self.num_heads >= 1 and self.hidden_size % self.num_heads == 0, m + "num_heads",
                 f">= 1 and divide hidden_size ({self.hidden_size})", self.num_heads)
        _require(0 <= self.dropout < 1, m + "dropout", "in [0, 1)", self.dropout)
        _require(0 <= self.label_smoothing < 1, m + "label_smoothing", "in [0, 1)", self.label_smoothing)
        for name in ("encoder_blocks", "mixer_blocks", "decoder_blocks", "audio_time_strides", "class_label_blocks",
                     "audio_frequency_masks", "audio_frequency_mask_width", "audio_time_masks"):
            _require(getattr(self, name) >= 0, m + name, ">= 0", getattr(self, name))
        for name in ("conv_kernel_sizes", "conv_dilations"):
            _require(len(getattr(self, name)) == 4, m + name, "4 values (one per ConvStep of a conv block)",
                     getattr(self, name))
            _require_all(getattr(self, name), m + name, "made of values >= 1", lambda v: v >= 1)
        for name in ("attention_kernel_size", "image_channels", "audio_mels", "audio_sample_rate",
                     "audio_frequency_patch", "max_target_length"):
            _require(getattr(self, name) >= 1, m + name, ">= 1", getattr(self, name))
        _require(0 <= self.audio_time_mask_fraction <= 1, m + "audio_time_mask_fraction", "in [0, 1]",
                 self.audio_time_mask_fraction)
        _require(len(self.image_entry_filters) == 2, m + "image_entry_filters", "2 values", self.image_entry_filters)
        _require_all(self.image_entry_filters, m + "image_entry_filters", "made of values >= 1", lambda v: v >= 1)
        _require_all(self.audio_block_filters, m + "audio_block_filters", "made of values >= 1", lambda v: v >= 1)
        _require(self.class_label_net in ("downsample", "convstep"), m + "class_label_net",
                 "'downsample' or 'convstep'", self.class_label_net)
        _require_all(self.class_label_widths, m + "class_label_widths", "made of values > 0", lambda v: v > 0)
        _require(self.class_label_kernel_size >= 1 and self.class_label_kernel_size % 2 == 1,
                 m + "class_label_kernel_size", "odd and >= 1", self.class_label_kernel_size)
        _require(len(self.task_tokens) >= 1 and len(set(self.task_tokens)) == len(self.task_tokens),
                 m + "task_tokens", "a non-empty list of distinct tokens", self.task_tokens)


@dataclass(kw_only=True)
class TaskSpec:
    """A task declared in a config: a reader over the user's own files and what the model does
    with them. :mod:`multimodel.tasks.spec` turns it into a :class:`~multimodel.tasks.task.Task`
    like the built-in ones; put it in ``data.declared_tasks`` and its name in ``data.tasks``.

    Checks that need only the spec happen here; those that need the reader, the catalogue or
    the files (a modality the reader cannot give, a name a built-in task has, a missing path,
    a column the data lacks) when the task is resolved (:func:`multimodel.tasks.spec.resolve_task`).
    Every error names the field as ``data.declared_tasks.<name>.<field>``.
    """

    name: str
    """Unique task name (command line, logs, ``data.task_sizes``); not a built-in task's name."""
    reader: str
    """Format of the data: 'parallel_text' (two aligned files, plain or gzip), 'ptb' (Penn
    Treebank .mrg files, a folder or NLTK's treebank.zip), 'coco_captions' (COCO folder with
    annotations/), 'image_folder' (ImageNet-style root/<class>/<image>), 'librispeech' (one
    subset folder), 'audio_manifest' (JSONL of audio path + transcript), 'hf_dataset' (a local
    Hugging Face dataset: a ``save_to_disk`` folder or Parquet/Arrow/JSON/CSV files)."""
    paths: dict[str, tuple[str, ...]]
    """The data of each split, ``{"train": ..., "test": ...}``: one path, two for parallel_text
    (source file, target file), one or more files (shards) for hf_dataset. Relative paths are
    under ``data.data_dir``, else ``data.corpora_dir``."""
    splits: dict[str, str] = field(default_factory=dict)
    """The data's own name of a split where one path holds several: COCO 'train'/'val', PTB
    'train'/'valid'/'test', a saved Hugging Face DatasetDict's split names. Unset = the reader's
    default (the same name; COCO's test split = 'val')."""
    columns: dict[str, str] = field(default_factory=dict)
    """Where each role is, ``{"input": ..., "target": ...}``: dataset columns (hf_dataset) or JSON
    keys (audio_manifest, default ``{"input": "audio", "target": "text"}``); other readers take none."""
    input_modality: str = ""
    """'text', 'image' or 'audio'; empty = what the reader gives (required for hf_dataset)."""
    target_modality: str = ""
    """'text', or 'class_label' / 'class_label:N' for N classes (N from ``labels`` when left
    out); empty = what the reader gives (required for hf_dataset)."""
    task_token: str | None = None
    """Decoder task token of a text target, one of ``model.task_tokens``; None = the reader's
    usual one (To-English: coco_captions, librispeech, audio_manifest; To-Parse-Tree: ptb; the
    others have none and need it set). Always None for a classification target (it skips the
    decoder)."""
    metrics: tuple[str, ...] = ()
    """Metrics evaluation reports, headline first (text: bleu, caption_bleu, wer, bracket_f1;
    class labels: accuracy, top5); empty = the reader's usual ones."""
    labels: tuple[str, ...] = ()
    """Class names of a classification task (index -> name); empty = the image folder's class
    folders, or the dataset's ClassLabel names / distinct values, read from the train split."""
    image_size: tuple[int, int] = (224, 224)
    """(H, W) every image input is resized to (shorter side first, then centre-cropped)."""
    sample_rate: int = 16000
    """Sample rate audio must have (it is not resampled); equals ``model.audio_sample_rate``."""
    per_caption: bool = False
    """coco_captions: one training example per caption instead of one per image (the test split
    keeps one per image, every caption a reference)."""
    lazy: bool = True
    """Decode images and audio when a batch needs them instead of all at load time, so memory
    stays flat on large corpora (files are listed and checked to exist at load time; a file
    that cannot be decoded stops the run naming itself, even with ``data.skip_bad``). False =
    decode all at load (bad files are then skipped and counted with ``data.skip_bad``).
    hf_dataset is always read lazily from its memory-mapped Arrow files."""
    description: str = ""
    """One line for ``multimodel tasks``; empty = made from the reader and the paths."""

    def __post_init__(self) -> None:
        _require(bool(re.fullmatch(r"[A-Za-z0-9_-]+", self.name)), "data.declared_tasks.name",
                 "letters, digits, '_' or '-'", self.name)
        k = f"data.declared_tasks.{self.name}."
        # A spec built in Python (not read through from_dict) may give one path as a string.
        self.paths = {split: (p,) if isinstance(p, str) else tuple(p) for split, p in self.paths.items()}
        _require(self.reader in TASK_READERS, k + "reader", "one of " + ", ".join(TASK_READERS), self.reader)
        _require(set(self.paths) == set(TASK_SPLITS), k + "paths",
                 "a mapping with the keys 'train' and 'test'", self.paths)
        for split, paths in self.paths.items():
            _require(len(paths) >= 1 and all(paths), f"{k}paths.{split}", "one or more non-empty paths", paths)
        for name in ("splits", "columns"):
            allowed = TASK_SPLITS if name == "splits" else ("input", "target")
            for key, value in getattr(self, name).items():
                _require(key in allowed, f"{k}{name}.{key}", "a key among " + ", ".join(allowed), key)
                _require(bool(value), f"{k}{name}.{key}", "non-empty", value)
        _require(self.input_modality in ("",) + TASK_INPUT_MODALITIES, k + "input_modality",
                 "one of " + ", ".join(TASK_INPUT_MODALITIES) + " (or empty: the reader's)", self.input_modality)
        kind, _, classes = self.target_modality.partition(":")
        _require(self.target_modality in ("", "text", "class_label") or (kind == "class_label" and classes.isdigit()
                 and int(classes) >= 2), k + "target_modality",
                 "'text', 'class_label' or 'class_label:N' with N >= 2 (or empty: the reader's)", self.target_modality)
        if kind == "class_label":
            _require(self.task_token is None, k + "task_token",
                     "None for a classification target (it skips the decoder)", self.task_token)
        if self.labels:
            _require(kind in ("", "class_label"), k + "labels", f"empty for a {kind} target", self.labels)
            _require(len(set(self.labels)) == len(self.labels) and len(self.labels) >= 2, k + "labels",
                     "two or more distinct class names", self.labels)
            _require(not classes or int(classes) == len(self.labels), k + "labels",
                     f"{classes} names, as target_modality says", self.labels)
        known = TASK_METRICS.get(kind, sum(TASK_METRICS.values(), ()))
        _require_all(self.metrics, k + "metrics", "one of " + ", ".join(known), lambda m: m in known)
        _require(len(self.image_size) == 2, k + "image_size", "(H, W)", self.image_size)
        _require_all(self.image_size, k + "image_size", "made of values >= 1", lambda v: v >= 1)
        _require(self.sample_rate >= 1, k + "sample_rate", ">= 1", self.sample_rate)


@dataclass(kw_only=True)
class DataConfig:
    """Which tasks to train on and how their data is produced and batched."""

    tasks: tuple[str, ...] = (
        "fashion_mnist",
        "fashion_captions",
        "speech_numbers",
        "grammar_parsing",
        "numbers_en_de",
        "numbers_de_en",
        "numbers_en_fr",
        "numbers_fr_en",
    )
    """Task names from the catalogue (``multimodel tasks`` lists them)."""
    data_dir: str = "data"
    """Where built-in corpora are cached and real corpora are looked for."""
    corpora_dir: str = ""
    """A second, possibly read-only, place for real corpora (e.g. ``../shared/corpora``): a task
    whose data is not under ``data_dir`` is looked for here. Empty = ``data_dir`` only."""
    seed: int = 1234
    """Seed of corpus generation and of the data order."""
    vocab_size: int = 1000
    """Size of the shared sentencepiece vocabulary over all selected tasks' text."""
    train_size: int = 4000
    """Training examples generated per built-in task (real corpora: a cap; 0 = all)."""
    eval_size: int = 200
    """Held-out examples per task used by evaluation (0 = the task's whole test split; a
    built-in corpus's natural test size)."""
    eval_sizes: dict[str, int] = field(default_factory=dict)
    """Per-task override of ``eval_size`` (0 = the task's whole test split, e.g. all 10,000
    Fashion-MNIST test images), used by the evaluation after training and ``multimodel eval``;
    evaluation during training (``train.eval_every``) keeps to the first ``eval_size``."""
    task_sizes: dict[str, int] = field(default_factory=dict)
    """Per-task override of ``train_size`` (e.g. keep parsing data-scarce); tasks not selected in
    ``tasks`` are ignored, names no catalogue knows are an error."""
    batch_size: int = 32
    """Examples per batch (one task per batch), per rank."""
    task_batch_sizes: dict[str, int] = field(default_factory=dict)
    """Per-task override of ``batch_size``, per rank (e.g. more of the cheap 28×28 images per
    Fashion-MNIST batch than utterances per speech batch: a classification image is 4 positions
    for the body, an utterance of ~280 frames ~70); tasks not selected in ``tasks`` are ignored,
    names no catalogue knows are an error. The single-task baselines train on the same batches."""
    max_input_length: int = 512
    """Inputs longer than this (log-mel frames or subwords) are refused, naming the first; with
    ``skip_bad`` they are left out of training and evaluation, counted and reported (the built-in
    tasks' longest: 451 frames)."""
    skip_bad: bool = False
    """Skip unreadable records (counted and reported) instead of stopping with an error."""
    declared_tasks: tuple[TaskSpec, ...] = ()
    """Tasks over the user's own data, declared here instead of in the package's catalogue
    (:class:`TaskSpec`); a run trains on those named in ``tasks``, beside built-in ones."""

    def __post_init__(self) -> None:
        _require(len(self.tasks) >= 1, "data.tasks", "at least one task", self.tasks)
        _require(self.vocab_size >= 4, "data.vocab_size", ">= 4 (PAD, EOS, UNK and one piece)", self.vocab_size)
        for name in ("train_size", "eval_size"):
            _require(getattr(self, name) >= 0, "data." + name, ">= 0 (0 = all)", getattr(self, name))
        for name in ("task_sizes", "eval_sizes"):
            for task, size in getattr(self, name).items():
                _require(size >= 0, f"data.{name}.{task}", ">= 0 (0 = all)", size)
        _require(self.batch_size >= 1, "data.batch_size", ">= 1", self.batch_size)
        for task, size in self.task_batch_sizes.items():
            _require(size >= 1, f"data.task_batch_sizes.{task}", ">= 1", size)
        _require(self.max_input_length >= 1, "data.max_input_length", ">= 1", self.max_input_length)
        names = [spec.name for spec in self.declared_tasks]
        _require(len(set(names)) == len(names), "data.declared_tasks", "tasks with distinct names", names)


@dataclass(kw_only=True)
class TrainConfig:
    """The training loop: task mixing, optimiser, schedule, logging, checkpoints."""

    steps: int = 1000
    """Optimiser steps (one task per step)."""
    mixing: str = "temperature"
    """Task sampling: 'proportional', 'uniform', 'temperature' or 'weights'."""
    temperature: float = 2.0
    """T of temperature-scaled mixing: p_i ∝ n_i^(1/T)."""
    task_weights: dict[str, float] = field(default_factory=dict)
    """Sampling weights for mixing='weights' (unlisted tasks get 0)."""
    loss_multipliers: dict[str, float] = field(default_factory=dict)
    """Per task, a factor on its loss before the backward (unlisted tasks get 1). The code
    released with the paper had such per-problem multipliers (e.g. ImageNet 0.7, audio 2.0).
    Adam divides every update by a running root-mean-square of the gradients that parameter
    has seen from all tasks, so a task whose gradients are large slows the shared layers'
    learning of the others; a multiplier below 1 tempers it. The logs' ``grad_norm/<task>``
    shows each task's scale. With ``normalize_gradients`` every step's gradient is rescaled to
    norm 1 anyway, and a multiplier only moves its task's share against the MoE balancing loss."""
    learning_rate: float = 1e-3
    """Peak learning rate reached at the end of warm-up."""
    warmup_steps: int = 200
    """Linear warm-up steps, then ``lr_decay``."""
    lr_decay: str = "none"
    """After the warm-up: 'none' (the default) holds the learning rate at its peak, the shape of
    the schedule released with the paper (which warmed up exponentially, then stayed roughly
    constant); 'rsqrt' lowers it with the inverse square root of the step ('noam', tensor2tensor's
    later ``multimodel_base``). Either is multiplied by the ``cooldown_fraction`` cool-down."""
    cooldown_fraction: float = 0.0
    """Over the last fraction of training, lower the learning rate linearly to zero (0 = no
    cool-down, the paper's schedule). The end is ``steps`` or, when ``time_budget_minutes`` is
    set, whichever comes first (the budget is read from the clock after every step, at log lines
    in a data-parallel run so that its ranks agree)."""
    adam_betas: tuple[float, float] = (0.85, 0.997)
    """Adam betas (paper code)."""
    adam_eps: float = 1e-6
    """Adam epsilon (paper code)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); 0 = plain Adam. (The code released with the paper set
    tensor2tensor's weight decay to 3.0, a different formulation; not reproduced.)"""
    grad_clip: float = 2.0
    """Clip the global gradient norm to this (paper code: 2.0)."""
    normalize_gradients: bool = False
    """Rescale every step's gradient to global norm 1 (instead of clipping it at ``grad_clip``,
    which is then unused), so that each task, whatever the scale of its gradients, weighs the
    same in Adam's running statistics of the shared layers. Off = the paper's clipping. One task per step makes this a per-task
    balance: a classification loss on one label per example gives several times the gradient
    norm of a per-token sequence loss (``grad_norm/<task>`` in the logs) and, left alone, slows
    the sequence tasks' learning in every layer they share (docs/results.md, "Gradient scale").
    The flip side: a task that has converged, whose gradients have shrunk to noise, is scaled up
    to full-size steps too; over an hour of the built-in tasks that slowed speech (docs/results.md,
    "One-hour run"), so use it while every task is still learning."""
    time_budget_minutes: float = 0.0
    """Stop (with a checkpoint) once training has run this long; 0 = no limit. `make demo` uses
    it so the run fits its time on any machine; the steps reached are reported."""
    max_bad_steps: int = 10
    """Stop after this many consecutive steps skipped for a non-finite loss or gradient (checked
    at each log line, where the step's device-side statistics are read)."""
    log_every: int = 25
    """Steps between log lines (JSONL, TensorBoard, progress bar)."""
    checkpoint_every: int = 200
    """Steps between checkpoints."""
    eval_every: int = 0
    """Steps between evaluations of every task on its held-out examples during training, logged
    as ``eval/<task>/<metric>`` (JSONL, TensorBoard); 0 = evaluate only after training. The time
    counts towards ``time_budget_minutes``; training itself is unaffected (same steps, same RNG)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest removed)."""
    beam_size: int = 4
    """Beam size at evaluation (1 = greedy). 4, with α = 0.6, is the released code's decoding,
    and what ``multimodel predict`` uses; on two one-hour checkpoints it cut speech WER from
    49.2 to 36.8 and from 47.9 to 38.2 against greedy (docs/results.md, "One-hour run")."""
    length_penalty: float = 0.6
    """Beam-search length penalty α (GNMT style)."""
    threads: int = 0
    """torch intra-op threads; 0 = leave PyTorch's default."""
    device: str = "auto"
    """'cpu', 'cuda', or 'auto' (CUDA when available)."""
    seed: int = 1234
    """Seed of parameter initialisation, dropout and MoE noise."""
    expert_parallel: int = 1
    """Ranks that share one copy of the experts (torchrun runs only): each of them holds
    ``moe.num_experts / expert_parallel`` experts of every MoE layer and tokens travel to their
    experts' ranks and back with an all-to-all; the ranks' data shards and the dense parameters
    are as in plain data parallelism. 1 = every rank holds every expert. Must divide both the
    world size and ``moe.num_experts`` (checked when the run starts). docs/scaling.md."""
    shard: str = "none"
    """How the dense (non-expert) parameters, their gradients and Adam's moments are placed:
    'none' = a full copy on every rank (DistributedDataParallel); 'fsdp' = sharded over all
    ranks with FSDP2 (``torch.distributed.fsdp.fully_shard``), gathered block by block for
    the forward and backward. Combines with ``expert_parallel``. docs/scaling.md."""
    precision: str = "float32"
    """'float32', or 'bf16': the forward pass under bfloat16 autocast (weights, gradients and
    Adam's moments stay float32; the MoE gate's maths and the balancing loss stay float32; the
    experts run in bfloat16)."""
    activation_checkpointing: bool = False
    """Keep only each body block's input for the backward and recompute the block there
    (``torch.utils.checkpoint``, non-reentrant): less activation memory for a second forward
    of the conv and attention blocks. Gradients are unchanged (bit for bit)."""

    def __post_init__(self) -> None:
        t = "train."
        _require(self.expert_parallel >= 1, t + "expert_parallel", ">= 1", self.expert_parallel)
        _require(self.shard in SHARDING, t + "shard", "one of " + ", ".join(map(repr, SHARDING)), self.shard)
        _require(self.precision in PRECISIONS, t + "precision", "one of " + ", ".join(map(repr, PRECISIONS)),
                 self.precision)
        for name in ("steps", "max_bad_steps", "log_every", "checkpoint_every", "keep_checkpoints", "beam_size"):
            _require(getattr(self, name) >= 1, t + name, ">= 1", getattr(self, name))
        for name in ("warmup_steps", "eval_every", "threads"):
            _require(getattr(self, name) >= 0, t + name, ">= 0", getattr(self, name))
        _require(self.mixing in MIXING_STRATEGIES, t + "mixing", "one of " + ", ".join(MIXING_STRATEGIES),
                 self.mixing)
        _require(self.temperature > 0, t + "temperature", "> 0", self.temperature)
        for task, weight in self.task_weights.items():
            _require(weight >= 0, f"train.task_weights.{task}", ">= 0", weight)
        for task, factor in self.loss_multipliers.items():
            _require(factor > 0, f"train.loss_multipliers.{task}", "> 0", factor)
        for name in ("learning_rate", "adam_eps", "grad_clip"):
            _require(getattr(self, name) > 0, t + name, "> 0", getattr(self, name))
        _require_all(self.adam_betas, t + "adam_betas", "made of values in [0, 1)", lambda b: 0 <= b < 1)
        for name in ("weight_decay", "time_budget_minutes", "length_penalty"):
            _require(getattr(self, name) >= 0, t + name, ">= 0", getattr(self, name))
        _require(0 <= self.cooldown_fraction <= 1, t + "cooldown_fraction", "in [0, 1]", self.cooldown_fraction)
        _require(self.lr_decay in LR_DECAYS, t + "lr_decay", "one of " + ", ".join(map(repr, LR_DECAYS)),
                 self.lr_decay)
        _require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), t + "device",
                 "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device)


@dataclass(kw_only=True)
class Config:
    """Everything that defines a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """Tasks and data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""

    def __post_init__(self) -> None:
        for spec in self.data.declared_tasks:
            k = f"data.declared_tasks.{spec.name}."
            _require(spec.task_token is None or spec.task_token in self.model.task_tokens, k + "task_token",
                     f"one of model.task_tokens ({', '.join(self.model.task_tokens)}; add a new one there)",
                     spec.task_token)
            _require(spec.input_modality != "audio" or spec.sample_rate == self.model.audio_sample_rate,
                     k + "sample_rate", f"model.audio_sample_rate ({self.model.audio_sample_rate})", spec.sample_rate)


# ----------------------------------------------------------------------------------------
# Conversion to and from plain dictionaries (checkpoints store the config as JSON).


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert ``value`` to ``annotation``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} does not fit {annotation}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis and not isinstance(value, (list, tuple, dict)):
            value = [value]  # `data.tasks=digits` means a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            if dataclasses.is_dataclass(args[0]):  # name the element: data.declared_tasks[1].reader
                return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build config dataclass ``cls`` from a nested dict; unknown keys raise."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys of {prefix or 'the config'}"
            f" are: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    """Parse an override's right-hand side: Python literal if possible, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if "," in text and not text.startswith(("(", "[")):
            return [_parse_value(part) for part in text.split(",")]
        return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied (unknown keys raise)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node: Any = data
        cls: Any = Config
        for depth, part in enumerate(parts):
            valid = [f.name for f in dataclasses.fields(cls)]
            if part not in valid:
                where = ".".join(parts[:depth]) or "the config"
                raise ConfigError(
                    f"unknown config key {dotted!r}: {where} has no {part!r};"
                    f" valid: {', '.join(valid)}"
                )
            hint = _field_types(cls)[part]
            if depth == len(parts) - 1:
                node[part] = _parse_value(raw.strip())
            else:
                if not dataclasses.is_dataclass(hint):
                    raise ConfigError(f"unknown config key {dotted!r}: {part!r} is not a section")
                node, cls = node[part], hint
    return from_dict(Config, data)


#: Model settings that a saved model of an earlier format version was built with, for fields
#: that format did not store (their defaults have changed since). Format 1 (before the paper's
#: self-attention, encoder timing signal and class-label net) built the model these describe.
LEGACY_MODEL_FIELDS: dict[int, dict[str, Any]] = {
    1: {"self_attention": False, "encoder_timing_signal": False, "class_label_net": "convstep"},
}


def upgrade_model_dict(model: dict[str, Any], format_version: int) -> dict[str, Any]:
    """A saved ``ModelConfig`` dict of ``format_version`` with the fields it predates filled in
    with the values its model was built with (see :data:`LEGACY_MODEL_FIELDS`)."""
    filled = dict(model)
    for version, fields in LEGACY_MODEL_FIELDS.items():
        if format_version <= version:
            for key, value in fields.items():
                filled.setdefault(key, value)
    return filled


#: Training settings whose default has changed, with the value every saved config that lacks
#: the key was trained with: runs written before ``train.lr_decay`` existed followed noam.
LEGACY_TRAIN_FIELDS: dict[str, Any] = {"lr_decay": "rsqrt"}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`to_dict` output (e.g. a checkpoint). A saved
    ``train`` section that predates a key of :data:`LEGACY_TRAIN_FIELDS` gets the value its run
    used, so resuming or re-scoring an old run keeps its schedule."""
    if isinstance(data.get("train"), dict):
        data = {**data, "train": {**LEGACY_TRAIN_FIELDS, **data["train"]}}
    return from_dict(Config, data)


PRESETS_DIR = Path(__file__).resolve().with_name("configs")
"""The presets shipped inside the package: ``tiny.py`` (tests), ``demo.py`` (the CPU main job),
``hour.py`` (the demo for an hour, on larger built-in data), ``paper.py`` (the paper's sizes),
and ``examples/*.py``: one worked example of a task declared over the user's own data per kind
of reader (``--config examples/image_folder``)."""

EXAMPLES_DIR = PRESETS_DIR / "examples"


def preset_names() -> list[str]:
    """Names of the shipped presets (``["demo", "hour", "paper", "tiny"]``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.py") if not p.name.startswith("_"))


def example_names() -> list[str]:
    """Names of the shipped worked examples of declared tasks, as ``--config`` takes them
    (``["examples/audio_manifest", ...]``)."""
    return sorted(f"examples/{p.stem}" for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))


def preset_path(name: str | Path) -> Path:
    """The file a ``--config`` value names: an existing file as given, else a shipped preset.

    ``demo`` and ``demo.py`` name the shipped preset when no such file exists, and
    ``examples/image_folder`` (or ``examples/image_folder.py``) a shipped worked example when
    there is no such file; so does ``configs/demo.py`` when there is no ``configs/`` folder there
    (the presets' place in the repository before they moved into the package, which recorded
    commands still name).
    """
    path = Path(name)
    if path.is_file():
        return path
    old_place = len(path.parts) >= 2 and path.parent.name == "configs" and not path.parent.is_dir()
    if path.suffix in ("", ".py") and (len(path.parts) == 1 or old_place):
        candidate = PRESETS_DIR / f"{path.stem}.py"
        if candidate.is_file() and candidate.stem in preset_names():
            return candidate
    if path.suffix in ("", ".py") and len(path.parts) == 2 and path.parts[0] == "examples":
        candidate = EXAMPLES_DIR / f"{path.stem}.py"
        if f"examples/{path.stem}" in example_names():
            return candidate
    raise ConfigError(f"config file {str(path)!r} not found; give a preset ({', '.join(preset_names())}),"
                      f" a worked example ({', '.join(example_names())}) or the path of a Python file that"
                      " defines CONFIG")


_CONSTRUCTOR_ERROR = re.compile(r"(\w+)\.__init__\(\) (.*)")


def _constructor_error(err: TypeError, path: Path) -> ConfigError | None:
    """A one-line :class:`ConfigError` for a preset that builds a config dataclass with a keyword it
    does not have (or without a required one), naming the file, the line and the valid fields;
    None for any other TypeError, which stays as it is."""
    found = _CONSTRUCTOR_ERROR.fullmatch(str(err))
    classes = {cls.__name__: cls for cls in (Config, ModelConfig, MoEConfig, DataConfig, TrainConfig, TaskSpec)}
    if found is None or found.group(1) not in classes:
        return None
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else str(path)
    name, problem = found.groups()
    fields = [f.name for f in dataclasses.fields(classes[name])]
    hint = ""
    unknown = re.fullmatch(r"got an unexpected keyword argument '(\w+)'", problem)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: {name}() {problem}{hint}; the fields of {name} are: {', '.join(fields)}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a preset (a name such as ``demo`` or ``examples/image_folder``, or a Python file defining
    ``CONFIG``) and apply overrides.

    Raises:
        ConfigError: one line, for a preset that cannot be found, does not define ``CONFIG``,
            gives a config dataclass a keyword it lacks (naming the file, the line and the valid
            fields), or holds a value a field cannot take. Other errors of the preset's code
            propagate unchanged.
    """
    path = preset_path(path)
    spec = importlib.util.spec_from_file_location(f"multimodel_preset_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except TypeError as err:
        problem = _constructor_error(err, path)
        if problem is None:
            raise
        raise problem from None
    cfg = getattr(module, "CONFIG", None)
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: a preset must define CONFIG = multimodel.config.Config(...)")
    # Round-trip through a dict so presets get the same type checks as overrides.
    cfg = config_from_dict(to_dict(cfg))
    return apply_overrides(cfg, list(overrides or []))

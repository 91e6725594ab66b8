"""Single-task baselines: a standard model per task, the comparison of the paper's Table 1.

The paper compares MultiModel trained jointly with the best single-task models of the time.
At our scale the comparison is with a standard, small, single-task model of each kind, trained
on the same data for the same number of batches (``multimodel experiment baselines``):

==================  ==================================================  ============================
input → target      baseline                                            file
==================  ==================================================  ============================
image → class       CNN: conv 32 → conv 64 → max-pool → FC 128 → C      classifier.py
text → text         Transformer encoder-decoder (translation, parsing)  seq2seq.py (TextSource)
audio → text        stride-2 convs over time + Transformer              seq2seq.py (AudioSource)
image → text        CNN grid of features + Transformer decoder          seq2seq.py (ImageGridSource)
==================  ==================================================  ============================

A baseline is chosen by the task's (input modality, target modality) kinds, never by its
name: :data:`BASELINES` is the one catalogue, keyed by the kinds before any ``:argument``
(``class_label:10`` → ``class_label``). Nothing registers itself by being imported.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from multimodel.baselines.base import BaselineConfig, BaselineOutput
from multimodel.baselines.classifier import ImageClassifierCNN
from multimodel.baselines.seq2seq import AudioSource, ImageGridSource, Seq2SeqTransformer, TextSource

__all__ = ["BASELINES", "BaselineConfig", "BaselineOutput", "build_baseline", "baseline_kind"]

#: A builder's arguments: config, vocabulary size V, the target modality's argument (the
#: number of classes of ``class_label:N``, else None), and the shape of one input example
#: ((C, H, W) for images, (T, F) for speech features, (S,) for text).
Builder = Callable[[BaselineConfig, int, "str | None", "tuple[int, ...]"], nn.Module]


def _classifier(config: BaselineConfig, vocab_size: int, arg: str | None, shape: tuple[int, ...]) -> nn.Module:
    if arg is None or not arg.isdigit():
        raise ValueError(f"class_label needs a number of classes, got {arg!r}")
    if len(shape) != 3:
        raise ValueError(f"image classifier needs (C, H, W) images, got an example of shape {shape}")
    return ImageClassifierCNN(config, (shape[0], shape[1], shape[2]), int(arg))


def _text_to_text(config: BaselineConfig, vocab_size: int, arg: str | None, shape: tuple[int, ...]) -> nn.Module:
    return Seq2SeqTransformer(config, TextSource(config, vocab_size), vocab_size, config.encoder_layers)


def _audio_to_text(config: BaselineConfig, vocab_size: int, arg: str | None, shape: tuple[int, ...]) -> nn.Module:
    return Seq2SeqTransformer(config, AudioSource(config), vocab_size, config.encoder_layers)


def _image_to_text(config: BaselineConfig, vocab_size: int, arg: str | None, shape: tuple[int, ...]) -> nn.Module:
    if len(shape) != 3:
        raise ValueError(f"caption baseline needs (C, H, W) images, got an example of shape {shape}")
    return Seq2SeqTransformer(config, ImageGridSource(config, shape[0]), vocab_size, 0)


#: (input kind, target kind) → (short description, builder).
BASELINES: dict[tuple[str, str], tuple[str, Builder]] = {
    ("image", "class_label"): ("CNN classifier", _classifier),
    ("text", "text"): ("Transformer seq2seq", _text_to_text),
    ("audio", "text"): ("strided conv + Transformer", _audio_to_text),
    ("image", "text"): ("CNN grid + Transformer decoder", _image_to_text),
}


def _kind(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    return name, (arg or None)


def baseline_kind(input_modality: str, target_modality: str) -> str:
    """The description of the baseline a (input, target) modality pair gets; raises if none."""
    key = (_kind(input_modality)[0], _kind(target_modality)[0])
    if key not in BASELINES:
        known = ", ".join(f"{a} → {b}" for a, b in BASELINES)
        raise ValueError(f"no baseline for {input_modality} → {target_modality}; baselines exist for {known}")
    return BASELINES[key][0]


def build_baseline(input_modality: str, target_modality: str, config: BaselineConfig, vocab_size: int,
                   input_shape: tuple[int, ...]) -> nn.Module:
    """The baseline for a task with these modality specs (e.g. ``"image"``, ``"class_label:10"``).

    Args:
        input_modality: the task's input modality spec.
        target_modality: the task's target modality spec.
        config: baseline sizes and settings.
        vocab_size: V of the shared subword vocabulary (text sources and targets).
        input_shape: shape of one input example, e.g. (1, 28, 28) for an image.
    """
    baseline_kind(input_modality, target_modality)  # raises for an unknown pair
    (in_kind, _), (out_kind, out_arg) = _kind(input_modality), _kind(target_modality)
    return BASELINES[(in_kind, out_kind)][1](config, vocab_size, out_arg, tuple(input_shape))

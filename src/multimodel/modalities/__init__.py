"""The modality catalogue: one explicit dict from a modality name to its builder.

A modality spec is a name with an optional argument: ``"text"``, ``"image"``, ``"audio"``,
``"class_label:N"`` (N classes). Tasks name their modalities by spec; the model builds one
shared instance per spec with :func:`build_modality`. Adding a modality = adding one entry to
``MODALITIES`` (the tests are parametrised over it).
"""

from __future__ import annotations

from collections.abc import Callable

from multimodel.config import ModelConfig
from multimodel.modalities.audio import AudioModality
from multimodel.modalities.base import LossOutput, Modality, ModalityError, label_smoothed_loss
from multimodel.modalities.class_label import ClassLabelModality
from multimodel.modalities.image import ImageModality
from multimodel.modalities.text import TextModality


def _no_argument(name: str, arg: str | None) -> None:
    if arg is not None:
        raise ModalityError(f"modality {name!r} takes no argument, got {name}:{arg}")


def _build_text(config: ModelConfig, vocab_size: int, arg: str | None) -> Modality:
    _no_argument("text", arg)
    return TextModality(config, vocab_size)


def _build_image(config: ModelConfig, vocab_size: int, arg: str | None) -> Modality:
    _no_argument("image", arg)
    return ImageModality(config)


def _build_audio(config: ModelConfig, vocab_size: int, arg: str | None) -> Modality:
    _no_argument("audio", arg)
    return AudioModality(config)


def _build_class_label(config: ModelConfig, vocab_size: int, arg: str | None) -> Modality:
    if arg is None or not arg.isdigit():
        raise ModalityError(f"class_label needs a number of classes, e.g. 'class_label:10', got {arg!r}")
    return ClassLabelModality(config, int(arg))


#: name -> builder(config, vocab_size, argument after ':' or None).
MODALITIES: dict[str, Callable[[ModelConfig, int, str | None], Modality]] = {
    "text": _build_text,
    "image": _build_image,
    "audio": _build_audio,
    "class_label": _build_class_label,
}

#: One valid spec per catalogue entry (used by error messages and tests).
EXAMPLE_SPECS: dict[str, str] = {
    "text": "text",
    "image": "image",
    "audio": "audio",
    "class_label": "class_label:10",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"class_label:10"`` -> ``("class_label", "10")``; unknown names raise ModalityError."""
    if not isinstance(spec, str):
        raise ModalityError(f"a modality spec is a string such as 'text', got {spec!r}")
    name, sep, arg = spec.partition(":")
    if name not in MODALITIES:
        raise ModalityError(
            f"unknown modality {spec!r}; valid modalities: {', '.join(EXAMPLE_SPECS.values())}"
        )
    return name, (arg if sep else None)


def build_modality(spec: str, config: ModelConfig, vocab_size: int) -> Modality:
    """Build the modality net named by ``spec`` (``"text"``, ``"image"``, ``"audio"``, ``"class_label:N"``)."""
    name, arg = parse_spec(spec)
    return MODALITIES[name](config, vocab_size, arg)


__all__ = [
    "EXAMPLE_SPECS",
    "MODALITIES",
    "AudioModality",
    "ClassLabelModality",
    "ImageModality",
    "LossOutput",
    "Modality",
    "ModalityError",
    "TextModality",
    "build_modality",
    "label_smoothed_loss",
    "parse_spec",
]

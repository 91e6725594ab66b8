"""Local Hugging Face datasets: where COCO, LibriSpeech, WMT and ImageNet are kept today (section 4's corpora).

Two ways a dataset sits on disk, both read without a network:

* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``state.json`` or
  ``dataset_dict.json`` beside Arrow files), opened with ``datasets.load_from_disk``;
* data files: ``.arrow`` files are memory-mapped as they are (``Dataset.from_file``);
  ``.parquet``, ``.json``/``.jsonl`` and ``.csv`` files go through
  ``datasets.load_dataset(<format>, data_files=...)``, which converts them once into Arrow files
  under ``cache_dir`` and memory-maps those.

Nothing is fetched: ``HF_DATASETS_OFFLINE=1`` is set before ``datasets`` is used. A dataset of the
hub is fetched beforehand, on a machine with a network, and saved to a folder::

    python -c "import datasets; datasets.load_dataset('librispeech_asr', 'clean').save_to_disk('data/librispeech_asr')"

Examples are never held in a Python list: :func:`hf_examples` indexes the memory-mapped table
(:class:`~multimodel.data.example.LazyExamples`) and decodes one row when a batch asks for it.
The rows are read in Arrow form, so ``datasets``' own decoders (which need torchcodec for
audio) are not used: images are decoded with Pillow, audio with soundfile, as the other readers do.

Values a column may hold, by modality:

* image: an ``Image`` feature (encoded bytes or a file path), or an array (H, W) or (H, W, C) of
  uint8 (or floats in [0, 1]); resized and centre-cropped to ``image_size`` as
  :func:`~multimodel.corpora.image_folder.fit_image` does, float32 (3, H, W).
* audio: an ``Audio`` feature (encoded bytes or a file path), a ``{"array", "sampling_rate"}``
  struct, or a plain list of samples (taken to be at ``sample_rate``); float32 mono (T,), at
  ``sample_rate`` Hz (not resampled: another rate is an error).
* text: a string (whitespace collapsed; transcripts of audio lower-cased, as the speech readers do).
* class label: a ``ClassLabel`` or integer column (the index), or strings among ``labels``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from multimodel.corpora.errors import CorpusError
from multimodel.corpora.image_folder import fit_image
from multimodel.corpora.librispeech import normalise_transcript
from multimodel.data.example import Example, LazyExamples, Split
from multimodel.errors import MissingExtraError

FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
"""Data-file suffixes read as a dataset, and the ``datasets`` builder of each."""

SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""Files ``save_to_disk`` writes: a DatasetDict's split list, a Dataset's state."""

EXTRA = "hf"
"""The optional dependency group that installs ``datasets``: ``pip install 'multimodel[hf]'``."""


def import_datasets() -> Any:
    """The ``datasets`` module, offline (``HF_DATASETS_OFFLINE=1``: nothing is downloaded)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError as error:
        raise MissingExtraError("reading Hugging Face datasets", EXTRA, error) from error
    datasets.config.HF_DATASETS_OFFLINE = True  # when it was imported before the variable was set
    datasets.config.HF_HUB_OFFLINE = True
    return datasets


def fetch_hint(name: str, target: str = "data/<name>") -> str:
    """How to get hub dataset ``name`` onto disk for this reader (the reader never downloads)."""
    return (f"a hub dataset must be fetched beforehand, on a machine with a network: python -c \"import datasets;"
            f" datasets.load_dataset('{name}').save_to_disk('{target}')\", then point the task's paths at that"
            " folder (relative paths are under data.data_dir)")


def is_saved_dataset(path: Path) -> bool:
    """True for a folder ``save_to_disk`` wrote."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def expand(path: str | Path) -> list[Path]:
    """``path``, or the sorted paths its ``*`` wildcards match (``wmt14/de-en/train-*.parquet``)."""
    path = Path(path)
    if "*" not in str(path):
        return [path]
    anchor = next(i for i, part in enumerate(path.parts) if "*" in part)
    return sorted(Path(*path.parts[:anchor]).glob(str(Path(*path.parts[anchor:]))))


def data_files(path: Path) -> list[Path]:
    """The data files of ``path``: itself if it is one, else the files of a known format under it."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_FORMATS)


def split_column(dataset: Any, column: str) -> tuple[str, str | None]:
    """``"translation.de"`` -> ``("translation", "de")`` when ``translation`` is a struct column
    with a field ``de`` (WMT on the hub keeps both sides of a pair in one column); a column of
    that exact name -> ``(column, None)``.

    Raises:
        KeyError: the dataset has no such column or field.
    """
    if column in dataset.column_names:
        return column, None
    base, _, sub = column.partition(".")
    feature = dataset.features.get(base) if sub else None
    if isinstance(feature, dict) and sub in feature:
        return base, sub
    if feature is not None and sub in getattr(feature, "languages", ()):  # datasets.Translation
        return base, sub
    raise KeyError(column)


def open_hf_dataset(paths: Sequence[str | Path], split: str, cache_dir: str | Path | None = None) -> Any:
    """Open a local dataset as a memory-mapped ``datasets.Dataset``.

    Args:
        paths: one ``save_to_disk`` folder, or data files (or folders of them) of one format;
            ``*`` wildcards are expanded.
        split: the split to take from a saved DatasetDict (a saved Dataset or data files hold one).
        cache_dir: where ``load_dataset`` writes the Arrow form of Parquet/JSON/CSV files
            (None = the ``datasets`` default, ``~/.cache/huggingface/datasets``).

    Raises:
        CorpusError: a path is missing, holds no data, mixes formats, or lacks ``split``.
    """
    datasets = import_datasets()
    for path in map(Path, paths):
        if not expand(path):
            raise CorpusError(path, "dataset not found", fetch_hint(path.name, str(path)))
    paths = [found for path in paths for found in expand(path)]
    if len(paths) == 1 and is_saved_dataset(paths[0]):
        loaded = datasets.load_from_disk(str(paths[0]))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise CorpusError(paths[0], f"saved DatasetDict has no split {split!r} (its splits:"
                                  f" {', '.join(loaded)})", "name one of them in the task's splits")
            return loaded[split]
        return loaded
    files = [file for path in paths for file in data_files(path)]
    if not files:
        raise CorpusError(paths[0], "no dataset here: neither a save_to_disk folder nor files ending in "
                          + ", ".join(FILE_FORMATS), "save it with Dataset.save_to_disk, or give data files")
    formats = {FILE_FORMATS.get(f.suffix.lower()) for f in files}
    if None in formats or len(formats) > 1:
        raise CorpusError(files[0], f"data files of several or unknown formats ({', '.join(sorted(map(str, formats)))})",
                          "give files of one format: " + ", ".join(FILE_FORMATS))
    (kind,) = formats
    if kind == "arrow":  # already Arrow: memory-map the files themselves
        parts = [datasets.Dataset.from_file(str(f)) for f in files]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    try:
        return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train",
                                     cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as error:  # pyarrow and datasets raise many types for a malformed file
        raise CorpusError(files[0], f"cannot read the {kind} files ({type(error).__name__}: {error})",
                          "repair or re-export them") from error


def class_names(dataset: Any, column: str, source: str | Path) -> tuple[str, ...]:
    """The class names of a label column: a ClassLabel's names, else its sorted distinct values
    (strings), else ``"0"`` ... ``"max"`` (integers)."""
    feature = dataset.features[column]
    names = getattr(feature, "names", None)
    if names:
        return tuple(names)
    values = dataset.with_format("arrow").select_columns([column])[:][column].unique().to_pylist()
    values = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in values):
        return tuple(sorted(values))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return tuple(str(i) for i in range(max(values) + 1))
    raise CorpusError(source, f"column {column!r} holds neither class names nor class indices",
                      "give the task's labels and an integer or string column")


def _decode_image(value: Any, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        with Image.open(source) as image:
            image.load()
            return fit_image(image, size)
    pixels = np.asarray(value)
    if pixels.ndim not in (2, 3):
        raise ValueError(f"expected encoded image bytes or an (H, W[, C]) array, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:  # floats in [0, 1]
        pixels = np.clip(np.rint(pixels.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    return fit_image(Image.fromarray(pixels if pixels.ndim == 2 or pixels.shape[2] != 1 else pixels[..., 0]), size)


def _decode_audio(value: Any, sample_rate: int) -> np.ndarray:
    import soundfile

    rate = sample_rate
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)  # (T, channels)
        samples = samples.mean(axis=1)
    elif isinstance(value, dict) and "array" in value:
        samples, rate = np.asarray(value["array"], dtype=np.float32), int(value.get("sampling_rate") or sample_rate)
    else:
        samples = np.asarray(value, dtype=np.float32)
    if samples.ndim == 2:  # (channels, T) arrays: average to mono
        samples = samples.mean(axis=0)
    if rate != sample_rate:
        raise ValueError(f"audio is at {rate} Hz, expected {sample_rate} Hz (it is not resampled); resample the"
                         " dataset beforehand, e.g. dataset.cast_column(column, datasets.Audio(sampling_rate=...))")
    if samples.ndim != 1 or samples.shape[0] == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=np.float32)  # (T,)


def _audio_length(value: Any) -> int:
    """Samples of an audio value, from the file header where it is encoded (nothing decoded)."""
    import soundfile

    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        return int(soundfile.info(source).frames)
    if isinstance(value, dict) and "array" in value:
        return len(value["array"])
    return len(value)


def _text(value: Any, transcript: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return normalise_transcript(value) if transcript else " ".join(value.split())


def hf_examples(
    dataset: Any,
    *,
    source: str | Path,
    input_column: str,
    target_column: str,
    input_modality: str,
    target_modality: str,
    labels: Sequence[str] = (),
    image_size: tuple[int, int] = (224, 224),
    sample_rate: int = 16_000,
    limit: int = 0,
) -> Split:
    """The rows of ``dataset`` as lazily decoded examples (see the module docstring).

    Args:
        dataset: a ``datasets.Dataset`` (:func:`open_hf_dataset`).
        source: where it was read from, named in errors.
        input_column: the column of the inputs, or ``column.field`` of a struct column.
        target_column: the column of the targets, likewise (``translation.de``).
        input_modality: ``"text"``, ``"image"`` or ``"audio"``.
        target_modality: ``"text"`` or ``"class_label..."``.
        labels: class names (index order) of a class-label target; string labels are looked up here.
        image_size: (H, W) of image inputs.
        sample_rate: the rate audio must have.
        limit: the first this many rows (0 = all).

    Returns:
        A :class:`Split` of :class:`~multimodel.data.example.LazyExamples`: ``inputs`` as the other
        readers give them, ``target`` a string or class index, ``references = [target]``,
        ``meta = {"row": i}``. A row that cannot be decoded raises :class:`CorpusError` naming
        the row and column when it is read.
    """
    size = len(dataset) if not limit else min(limit, len(dataset))
    (input_base, input_field), (target_base, target_field) = (split_column(dataset, input_column),
                                                              split_column(dataset, target_column))
    table = dataset.with_format("arrow").select_columns(list(dict.fromkeys([input_base, target_base])))
    classify = target_modality.startswith("class_label")
    label_index = {name: i for i, name in enumerate(labels)}
    transcript = input_modality == "audio"
    decoders: dict[str, Callable[[Any], Any]] = {
        "image": lambda v: _decode_image(v, image_size),
        "audio": lambda v: _decode_audio(v, sample_rate),
        "text": lambda v: _text(v, transcript=False),
    }

    def fail(row: int, column: str, error: Exception) -> CorpusError:
        return CorpusError(source, f"row {row}, column {column!r}: {error}",
                           "repair the dataset or leave the row out (dataset.filter) before saving it")

    def target_of(row: int, value: Any) -> Any:
        try:
            if not classify:
                text = _text(value, transcript)
                if not text:
                    raise ValueError("empty text")
                return text
            if isinstance(value, str) and value in label_index:
                return label_index[value]
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < max(len(labels), 1):
                return value
            raise ValueError(f"{value!r} is not a class index below {len(labels)} nor one of the labels")
        except ValueError as error:
            raise fail(row, target_column, error) from error

    def row_values(i: int) -> tuple[Any, Any]:
        part = table[i]  # a one-row pyarrow Table: nothing decoded
        raw_input, raw_target = part.column(input_base)[0].as_py(), part.column(target_base)[0].as_py()
        return (raw_input if input_field is None else (raw_input or {}).get(input_field),
                raw_target if target_field is None else (raw_target or {}).get(target_field))

    def peek(i: int) -> Example:
        raw_input, raw_target = row_values(i)
        target = target_of(i, raw_target)
        inputs = decoders["text"](raw_input) if input_modality == "text" else None
        return Example(inputs=inputs, target=target, references=[target], meta={"row": i})

    def read(i: int) -> Example:
        raw_input, raw_target = row_values(i)
        target = target_of(i, raw_target)
        try:
            inputs = decoders[input_modality](raw_input)
        except Exception as error:  # Pillow, soundfile and numpy raise many types for bad data
            raise fail(i, input_column, error) from error
        return Example(inputs=inputs, target=target, references=[target], meta={"row": i})

    lengths = None
    if input_modality == "image":
        lengths = [0] * size  # images have no bucketing length
    elif input_modality == "audio":
        lengths, chunk = [], 1024
        for start in range(0, size, chunk):
            values = table[start : min(size, start + chunk)].column(input_base).to_pylist()
            for offset, value in enumerate(values):
                try:
                    lengths.append(_audio_length(value))
                except Exception as error:
                    raise fail(start + offset, input_column, error) from error
    return Split(examples=LazyExamples(size, read, peek=peek, lengths=lengths))

"""Held-out examples for the page: a few of each task's TEST split, with their references.

The examples are the first ``per_task`` of each task's test split, loaded as evaluation loads
them (:func:`~multimodel.tasks.task_data.load_task_data` with ``splits=("test",)`` and the
checkpoint's own config: the same data directory, eval size and seed), so they are among the
examples ``eval.json`` scored, and never training data. A task whose data cannot be had here
(no Fashion-MNIST files, a generator that fails) is listed with the reason instead.

What the page shows of an input: an image as a PNG; a sentence as itself; speech as a WAV when
one can be had. The built-in speech corpus stores log-mel features, not audio, but each
utterance keeps its text, voice, speed and pitch, so espeak-ng can say it again: the WAV is served
only when its features equal the stored ones (the same espeak-ng release made both), so what
plays is what the model hears. Without espeak-ng the utterance can still be run, with its
reference transcript shown instead of audio.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from multimodel.config import Config
from multimodel.corpora import speech
from multimodel.corpora.audio_features import TARGET_SAMPLE_RATE
from multimodel.corpora.trees import delinearize, pretty
from multimodel.data.example import Example
from multimodel.tasks import Task
from multimodel.tasks.task_data import load_task_data

EXAMPLES_PER_TASK = 4
FEATURE_TOLERANCE = 0.05  # log-mel units; the stored features are float16 (steps of 0.008 near 10)


class ExampleNotFound(LookupError):
    """No such held-out example here (unknown task or index, data not available); ``str`` says why."""


@dataclass
class HeldOutTask:
    """One task's held-out examples, or why there are none."""

    task: Task
    examples: list[Example] = field(default_factory=list)
    unavailable: str | None = None


class HeldOutExamples:
    """The first few test examples of each of a checkpoint's tasks, loaded once, on first use.

    Args:
        config: the checkpoint's training config (None: examples are unavailable, and say so).
        tasks: the checkpoint's tasks.
        per_task: examples to offer per task.
        log: where the loader's progress lines go.
    """

    def __init__(self, config: Config | None, tasks: list[Task], *, per_task: int = EXAMPLES_PER_TASK,
                 log: Callable[[str], None] = lambda message: None):
        self.config = config
        self.tasks = list(tasks)
        self.per_task = per_task
        self.log = log
        self._lock = threading.Lock()
        self._loaded: dict[str, HeldOutTask] | None = None
        self._media: dict[tuple[str, int], tuple[bytes, str]] = {}

    def load(self) -> dict[str, HeldOutTask]:
        """Task name → its examples; the first call reads the test splits (other callers wait)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = {task.name: self._load_task(task) for task in self.tasks}
            return self._loaded

    def _load_task(self, task: Task) -> HeldOutTask:
        if self.config is None:
            return HeldOutTask(task, unavailable="the checkpoint's training config is not known")
        try:
            data = load_task_data(self.config, [task.name], splits=("test",), log=self.log)[task.name]
        except Exception as err:  # noqa: BLE001 - whatever keeps the data away, the page says it and goes on
            return HeldOutTask(task, unavailable=f"its test split cannot be loaded here: {err}")
        examples = list(data.test[: self.per_task])
        return HeldOutTask(task, examples, None if examples else "its test split is empty")

    # -- looking examples up ----------------------------------------------------------------

    def get(self, name: str, index: int) -> tuple[Task, Example]:
        """Example ``index`` of task ``name``; raises :class:`ExampleNotFound` saying what exists."""
        held = self.load().get(name)
        if held is None:
            raise ExampleNotFound(f"this checkpoint has no task {name!r}; its tasks:"
                                  f" {', '.join(t.name for t in self.tasks)}")
        if held.unavailable:
            raise ExampleNotFound(f"no held-out examples of {name} on this server: {held.unavailable}")
        if not 0 <= index < len(held.examples):
            raise ExampleNotFound(f"{name} has {len(held.examples)} held-out examples here (index 0 to"
                                  f" {len(held.examples) - 1}); there is no example {index}")
        return held.task, held.examples[index]

    def listing(self) -> list[dict[str, Any]]:
        """Every task with its examples (``HeldOutTaskOut`` of the API)."""
        return [{"task": name, "input_modality": held.task.input_modality, "unavailable": held.unavailable,
                 "examples": [describe(held.task, i, ex) for i, ex in enumerate(held.examples)]}
                for name, held in self.load().items()]

    def media(self, name: str, index: int) -> tuple[bytes, str]:
        """The input of an image or speech example as a file: (bytes, media type)."""
        task, example = self.get(name, index)
        key = (name, index)
        if key not in self._media:
            self._media[key] = _media(task, example)
        return self._media[key]


# -- what the API says about an example -------------------------------------------------------

def references(task: Task, example: Example) -> list[str]:
    """Every acceptable answer as text (a classifier's label name), the main one first."""
    if task.is_classification:
        target = int(example.target)
        return [task.labels[target] if task.labels and 0 <= target < len(task.labels) else str(target)]
    refs = [str(example.target)] + [str(r) for r in example.references or [] if str(r) != str(example.target)]
    return refs


def reference_tree(task: Task, example: Example) -> str | None:
    """A parse task's reference drawn as the page draws a predicted tree; None for other tasks."""
    if task.task_token != "To-Parse-Tree" or not isinstance(example.inputs, str):
        return None
    try:
        return pretty(delinearize(str(example.target)), example.inputs.split())
    except ValueError:
        return None


def matches(output: str, refs: list[str]) -> bool:
    """Whether ``output`` is one of the references, spacing aside."""
    said = " ".join(output.split())
    return any(said == " ".join(ref.split()) for ref in refs)


def describe(task: Task, index: int, example: Example) -> dict[str, Any]:
    """An example as the API lists it (``ExampleOut``)."""
    url = f"/api/examples/{task.name}/{index}/input"
    inputs, meta = example.inputs, example.meta or {}
    text, has_media = None, False
    if isinstance(inputs, str):
        text, what = inputs, "a test sentence"
    elif task.input_modality == "image":
        has_media = True
        number = f" #{meta['index']}" if isinstance(meta.get("index"), int) else ""
        what = f"test image{number} ({'×'.join(map(str, np.shape(inputs)))})"
    elif np.ndim(inputs) == 1:  # a waveform
        has_media = True
        what = f"a held-out recording ({len(inputs) / TARGET_SAMPLE_RATE:.1f} s)"
    else:
        spoken = _speakable(task, example)
        said = (f"{meta['duration_s']:.1f} s, voice {meta['voice']}, {meta['speed']} words a minute"
                if spoken else f"{np.shape(inputs)[0]} frames")
        what = f"a held-out utterance ({said})"
        if spoken and speech.espeak_version() is not None:
            has_media = True
        else:
            text = references(task, example)[0]
            what += "; no audio to play: the corpus keeps log-mel features only" + (
                ", and espeak-ng is not installed here to say it again" if spoken else "")
    return {"task": task.name, "index": index, "input_text": text, "input_url": url if has_media else None,
            "input_description": what, "reference": references(task, example)[0]}


# -- the input as a file ----------------------------------------------------------------------

def _speakable(task: Task, example: Example) -> bool:
    """Whether the example is an utterance of the built-in speech corpus, so espeak-ng can say it again."""
    meta = example.meta or {}
    return task.load is speech.load and all(k in meta for k in ("voice", "speed", "pitch", "kind", "duration_s"))


def _media(task: Task, example: Example) -> tuple[bytes, str]:
    inputs = example.inputs
    if isinstance(inputs, str):
        raise ExampleNotFound(f"{task.name} reads text: its example is the sentence itself (input_text in"
                              " /api/examples), not a file")
    if task.input_modality == "image":
        return png(np.asarray(inputs)), "image/png"
    if np.ndim(inputs) == 1:
        return wav(np.asarray(inputs, dtype=np.float32), TARGET_SAMPLE_RATE), "audio/wav"
    if not _speakable(task, example):
        raise ExampleNotFound(f"{task.name} keeps audio features only; there is no audio of this example to play")
    if speech.espeak_version() is None:
        raise ExampleNotFound(f"{task.name} keeps log-mel features only, and espeak-ng is not installed here to"
                              f" say the utterance again ({speech.INSTALL_HINT})")
    meta = example.meta
    utterance = speech.Utterance(str(example.target), meta["kind"], meta["voice"], int(meta["speed"]),
                                 int(meta["pitch"]))
    try:
        audio, rate = speech.synthesize(utterance)
    except RuntimeError as err:  # espeak-ng failed (GenerationError)
        raise ExampleNotFound(f"espeak-ng could not say the utterance again: {err}") from None
    audio = speech.trim_silence(audio, rate)
    heard = speech.features(audio, rate)  # (T_frames, 80)
    stored = np.asarray(example.inputs, dtype=np.float32)
    if heard.shape != stored.shape or float(np.abs(heard - stored).max()) > FEATURE_TOLERANCE:
        raise ExampleNotFound("espeak-ng says this utterance differently from the release that made the corpus;"
                              " its audio would not be what the model hears")
    return wav(audio, rate), "audio/wav"


def png(pixels: np.ndarray) -> bytes:
    """(C, H, W) pixels in [0, 1] (C = 1 or 3) as a PNG file."""
    from PIL import Image

    values = np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    channels = values.shape[0]
    if channels == 1:
        image = Image.fromarray(values[0], "L")
    else:
        image = Image.fromarray(np.ascontiguousarray(values[:3].transpose(1, 2, 0)), "RGB")  # (H, W, 3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def wav(samples: np.ndarray, rate: int) -> bytes:
    """A mono waveform as a 16-bit WAV file."""
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()

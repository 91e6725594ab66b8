"""Use a trained model on one input: an image, an audio file or a sentence.

The checkpoint knows its tasks; each input is sent to every task that accepts its modality
(an image gets a class from the classification task and a caption from the captioning
task). Text goes to the task whose token matches ``--to`` ("german" → "To-German"); ``--task``
picks one task of the checkpoint instead (a task declared in its config, say). Text tasks
that share a token (numbers_de_en and numbers_fr_en both decode "To-English") are one and the
same computation, since the model sees only the input text and the token; such an answer names
the token and all those tasks ("To-English (numbers_de_en, numbers_fr_en)"), not one of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multimodel.config import Config, TrainConfig
from multimodel.corpora.trees import delinearize, pretty
from multimodel.data.batching import Collator
from multimodel.data.tokenizer import Tokenizer
from multimodel.errors import UserError
from multimodel.model.multimodel import MultiModel
from multimodel.pretrained import load_pretrained
from multimodel.tasks import Task

TARGETS = {"english": "To-English", "german": "To-German", "french": "To-French", "parse-tree": "To-Parse-Tree"}


def target_token(to: str) -> str:
    """The task token a ``to`` names: ``german`` → To-German, ``parse-tree`` → To-Parse-Tree,
    ``spanish`` → To-Spanish (a token a config added to ``model.task_tokens``); a token as itself."""
    return to if to.startswith("To-") else TARGETS.get(to, f"To-{to.strip().title()}")


def target_name(token: str) -> str:
    """The ``to`` that names ``token`` (the inverse of :func:`target_token`): To-Spanish → spanish."""
    return token[len("To-"):].lower() if token.startswith("To-") else token


class PredictError(UserError, ValueError):
    """An input the model cannot take (wrong kind of file, no task for it, empty text)."""


@dataclass
class Prediction:
    """One answer: which task and token produced it, the output, and how long it took.

    Args:
        task: the checkpoint's task that answered; when several text tasks share the task token
            (the same computation), the token and all their names: "To-English (numbers_de_en,
            numbers_fr_en)".
        task_token: the decoder's task token; None for a classifier.
        output: class label, caption, transcript, translation or linearised tree.
        seconds: decoding time.
        extra: more keys for the JSON answer (``top``, ``tree``, ...).
        tasks: every checkpoint task this answer stands for (just ``task`` when None).
    """

    task: str
    task_token: str | None
    output: Any
    seconds: float
    extra: dict[str, Any] | None = None
    tasks: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "tasks": self.tasks or [self.task], "task_token": self.task_token,
                "output": self.output, "seconds": self.seconds, **(self.extra or {})}


class Predictor:
    """A loaded model ready to answer single inputs.

    Args:
        model: the trained network (eval mode).
        tokenizer: its vocabulary.
        tasks: the tasks it was trained on.
        config: the training config (where its data is, how many held-out examples it scored);
            None when not known.
        checkpoint_dir: the directory it was loaded from (a run's ``checkpoints/step-*``); None when not known.
    """

    def __init__(self, model: MultiModel, tokenizer: Tokenizer, tasks: list[Task], config: Config | None = None,
                 checkpoint_dir: Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.length_penalty = (TrainConfig() if config is None else config.train).length_penalty
        """Beam search's length penalty α: the run's own (``train.length_penalty``, what its
        evaluation used), else the default (0.6, the paper's code's)."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "Predictor":
        """Load a saved model, a training checkpoint or a run directory's newest checkpoint
        (:func:`multimodel.pretrained.load_pretrained`)."""
        loaded = load_pretrained(Path(path), device=device)
        return cls(loaded.model, loaded.tokenizer, loaded.get_tasks(), loaded.config, loaded.directory)

    # -- helpers ----------------------------------------------------------------------------

    def _task(self, name: str) -> Task:
        task = next((t for t in self.tasks if t.name == name), None)
        if task is None:
            raise PredictError(f"this checkpoint has no task {name}; its tasks:"
                               f" {', '.join(t.name for t in self.tasks)}")
        return task

    def _tasks_for(self, modality: str, name: str | None = None) -> list[Task]:
        """The tasks that read ``modality``; only task ``name`` when given (it must read it)."""
        if name is not None:
            task = self._task(name)
            if task.input_modality != modality:
                raise PredictError(f"task {name} reads {task.input_modality}, not {modality}")
            return [task]
        found = [t for t in self.tasks if t.input_modality == modality]
        if not found:
            raise PredictError(f"this checkpoint has no task that reads {modality}; its tasks:"
                               f" {', '.join(t.name for t in self.tasks)}")
        return found

    @torch.no_grad()
    def _run(self, task: Task, raw_input: Any, beam_size: int, top: int = 5) -> Prediction:
        start = time.time()
        collate = Collator(task.name, task.is_classification, self.tokenizer, self.model.config.max_target_length)
        from multimodel.data.example import Example

        dummy_target = 0 if task.is_classification else ""
        batch = collate([Example(raw_input, dummy_target)])
        device = next(self.model.parameters()).device
        batch = batch.to(device)
        if task.is_classification:
            logits = self.model.classify(batch.inputs, batch.input_mask, input_modality=task.input_modality,
                                         target_modality=task.target_modality)[0]
            probs = torch.softmax(logits.float(), dim=-1)
            values, indices = probs.topk(min(top, probs.numel()))
            names = [task.labels[i] if task.labels else str(i) for i in indices.tolist()]
            output = names[0]
            extra = {"top": [{"label": n, "probability": float(p)} for n, p in zip(names, values.tolist())]}
        else:
            ids = self.model.generate(batch.inputs, batch.input_mask, max_length=self.model.config.max_target_length,
                                      beam_size=beam_size, length_penalty=self.length_penalty,
                                      **task.model_kwargs)[0]
            output = self.tokenizer.decode(ids)
            extra = None
        return Prediction(task.name, task.task_token, output, time.time() - start, extra)

    def _check_length(self, sentence: str) -> None:
        ids = self.tokenizer.encode(sentence)
        if len(ids) > self.model.config.max_target_length * 4:
            raise PredictError(f"the sentence is too long ({len(ids)} subwords; at most"
                               f" {self.model.config.max_target_length * 4})")

    @staticmethod
    def _add_tree(p: Prediction, sentence: str) -> None:
        """A parse's ``tree`` (drawn with the sentence's words), or ``tree_error`` saying why there is none."""
        try:
            p.extra = {"tree": pretty(delinearize(p.output), sentence.split())}
        except ValueError as err:
            p.extra = {"tree": None, "tree_error": str(err)}

    # -- public API -------------------------------------------------------------------------

    def image(self, pixels_or_path: Any, beam_size: int = 4, task: str | None = None) -> list[Prediction]:
        """Every image task's answer (class with top-5, caption) for one image; only ``task``'s when given.
        A path is decoded at each task's own image size, as its data was."""
        from multimodel.corpora.image_folder import load_image

        out = []
        for task in self._tasks_for("image", task):
            shape = task.input_shape or (3, 64, 64)
            if isinstance(pixels_or_path, (str, Path)):
                pixels = load_image(pixels_or_path, (shape[1], shape[2]))  # (3, H, W)
            else:
                pixels = np.asarray(pixels_or_path, dtype=np.float32)
            if shape[0] == 1 and pixels.shape[0] == 3:
                pixels = pixels.mean(axis=0, keepdims=True)  # (1, H, W) grayscale like the task's data
            out.append(self._run(task, pixels, beam_size))
        return out

    def describe_image(self, path: str | Path, beam_size: int = 4, task: str | None = None) -> list[str]:
        lines = []
        for p in self.image(path, beam_size, task):
            if p.extra and "top" in p.extra:
                top = ", ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in p.extra["top"])
                lines.append(f"[{p.task}] class: {p.output}   (top-5: {top})")
            else:
                lines.append(f"[{p.task}, {p.task_token}] caption: {p.output}")
        return lines

    def audio(self, path_or_wave: Any, sample_rate: int | None = None, beam_size: int = 4,
              task: str | None = None) -> Prediction:
        """Transcript of one audio file (any sample rate; resampled) or waveform, by the
        checkpoint's first audio task, or by ``task`` when given."""
        from multimodel.corpora.speech import features as audio_features
        from multimodel.corpora.speech import read_audio_file

        if isinstance(path_or_wave, (str, Path)):
            wave, rate = read_audio_file(Path(path_or_wave))
        else:
            if sample_rate is None:
                raise PredictError("a raw waveform needs its sample_rate")
            wave, rate = np.asarray(path_or_wave, dtype=np.float32), sample_rate
        if wave.size == 0:
            raise PredictError("the audio has no samples")
        features = audio_features(wave, rate)  # (T_frames, n_mels), as the speech task's data
        return self._run(self._tasks_for("audio", task)[0], features, beam_size)

    def transcribe(self, path: str | Path, beam_size: int = 4, task: str | None = None) -> str:
        p = self.audio(path, beam_size=beam_size, task=task)
        return f"[{p.task}, {p.task_token}] {p.output}"

    def text(self, sentence: str, to: str, beam_size: int = 4, task: str | None = None) -> Prediction:
        """Translate ``sentence`` (to='english'|'german'|'french', or another token's language) or
        parse it (to='parse-tree'); with ``task``, that text task's answer whatever ``to`` says
        (a declared text classifier's class, say)."""
        sentence = sentence.strip()
        if not sentence:
            raise PredictError("the sentence is empty")
        if task is not None:
            candidates = self._tasks_for("text", task)
            token = candidates[0].task_token
        else:
            token = target_token(to)
            candidates = [t for t in self._tasks_for("text") if t.task_token == token]
        if not candidates:
            have = sorted({target_name(t.task_token) for t in self.tasks
                           if t.input_modality == "text" and t.task_token})
            raise PredictError(f"this checkpoint has no text task with token {token}; --to can be {', '.join(have)}")
        self._check_length(sentence)
        p = self._run(candidates[0], sentence, beam_size)
        if len(candidates) > 1:  # the model cannot tell them apart: claim none of them in particular
            p.tasks = [t.name for t in candidates]
            p.task = f"{token} ({', '.join(p.tasks)})"
        if token == "To-Parse-Tree":
            self._add_tree(p, sentence)
        return p

    def run_task(self, name: str, raw_input: Any, beam_size: int = 4) -> Prediction:
        """Task ``name``'s answer for one input in the form the task's data gives it (an
        :class:`~multimodel.data.example.Example`'s ``inputs``: pixels, audio features, a sentence)."""
        task = self._task(name)
        if isinstance(raw_input, str):
            self._check_length(raw_input)
        p = self._run(task, raw_input, beam_size)
        if task.task_token == "To-Parse-Tree" and isinstance(raw_input, str):
            self._add_tree(p, raw_input)
        return p

    def from_text(self, sentence: str, to: str, beam_size: int = 4, task: str | None = None) -> str:
        p = self.text(sentence, to, beam_size, task)
        if p.extra and "top" in p.extra:  # a text classifier
            top = ", ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in p.extra["top"])
            return f"[{p.task}] class: {p.output}   (top-5: {top})"
        head = f"[{p.task}]" if p.tasks else f"[{p.task}, {p.task_token}]"  # a shared-token task names its token
        if p.extra and p.extra.get("tree"):
            return f"{head}\n{p.extra['tree']}"
        return f"{head} {p.output}"

"""Per-task evaluation with the metrics people report, plus the paper's Table 2 columns.

For every task: teacher-forced per-token accuracy and log-perplexity (the paper's Table 2),
then the task's own metrics on decoded outputs — top-1/top-5 accuracy for classification,
BLEU (sacrebleu) for translation, item F1 (the items named and their positions) and BLEU for
the built-in captions, WER (jiwer) for speech, labelled bracket F1 for parsing. Evaluation
runs in eval mode (no dropout, no MoE noise), so it is deterministic.

A task that names ``report_by`` fields of its examples' ``meta`` (speech: ``voice``, ``kind``)
is also scored on each value's examples alone (:attr:`TaskResult.breakdown`), e.g. the WER of
each held-out voice.

The blind control (``blind_control=True``) scores the model a second time on the same
examples with their content removed by the input modality (``Modality.blind``: blank images,
silence, every word unknown), decoded the same way, and reports those scores as ``blind_<metric>``:
what a task's metric gives a model that does not look at its input. A score is only evidence
of learning where it stands clearly above its blind value.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from multimodel.config import Config

from multimodel.data.batching import Batch, Collator, eval_batches
from multimodel.data.example import Example
from multimodel.data.tokenizer import Tokenizer
from multimodel.evaluation import metrics as M
from multimodel.model.multimodel import MultiModel
from multimodel.tasks import Task
from multimodel.tasks.task_data import TaskData

#: Metric name → a short label for tables.
METRIC_LABELS = {
    "accuracy": "top-1 acc %",
    "top5": "top-5 acc %",
    "bleu": "BLEU",
    "caption_bleu": "BLEU",
    "item_f1": "item F1",
    "wer": "WER %",
    "bracket_f1": "bracket F1",
}


@dataclass
class TaskResult:
    """Evaluation of one task."""

    task: str
    metrics: dict[str, float]
    token_accuracy: float
    log_perplexity: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    num_examples: int = 0
    seconds: float = 0.0
    breakdown: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """meta field → its value → the metrics of those examples alone, with ``count`` (examples)."""

    def headline(self, task: Task) -> tuple[str, float]:
        name = task.metrics[0]
        return name, self.metrics.get(name, float("nan"))

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "metrics": self.metrics, "token_accuracy": self.token_accuracy,
                "log_perplexity": self.log_perplexity, "examples": self.examples,
                "num_examples": self.num_examples, "seconds": self.seconds, "breakdown": self.breakdown}


def _forward(model: MultiModel, batch: Batch, task: Task):
    return model(batch.inputs, batch.input_mask, batch.targets, batch.target_mask, **task.model_kwargs)


def decode_batch(model: MultiModel, batch: Batch, task: Task, tokenizer: Tokenizer, *,
                 beam_size: int = 1, length_penalty: float = 0.6, max_length: int | None = None) -> list[str]:
    """Generate text for every example of ``batch``."""
    if max_length is None:
        longest = int(batch.target_mask.sum(1).max()) if batch.target_mask is not None else 32
        max_length = min(model.config.max_target_length, int(longest * 1.5) + 10)
    ids = model.generate(batch.inputs, batch.input_mask, max_length=max_length, beam_size=beam_size,
                         length_penalty=length_penalty, **task.model_kwargs)
    return [tokenizer.decode(seq) for seq in ids]


def _score(metric: str, hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    if metric in ("bleu", "caption_bleu"):
        return {metric: M.corpus_bleu(hyps, refs)}
    if metric == "item_f1":  # the first reference names every item with its position
        scores = M.caption_item_f1(hyps, [r[0] for r in refs])
        return {"item_f1": 100.0 * scores["f1"], "item_precision": 100.0 * scores["precision"],
                "item_recall": 100.0 * scores["recall"], "item_position_f1": 100.0 * scores["position_f1"],
                "item_only_f1": 100.0 * scores["item_only_f1"]}
    if metric == "wer":  # beside it, its three kinds of error and the transcripts' length, per reference word
        references = [r[0] for r in refs]
        counts = M.word_errors(hyps, references)  # one alignment for all five
        per_word = 100.0 / max(1, counts["reference_words"])
        return {"wer": 100.0 * M.error_rate(counts),
                "substituted": per_word * counts["substitutions"], "deleted": per_word * counts["deletions"],
                "inserted": per_word * counts["insertions"], "length_ratio": per_word * counts["hypothesis_words"]}
    if metric == "bracket_f1":
        scores = M.bracket_f1(hyps, [r[0] for r in refs])
        return {"bracket_f1": 100.0 * scores["f1"], "exact_match": 100.0 * scores["exact_match"],
                "valid_trees": 100.0 * scores["valid_fraction"]}
    raise ValueError(f"unknown metric {metric!r}")


BLIND_PREFIX = "blind_"
"""Prefix of the blind control's metrics in :attr:`TaskResult.metrics` (``blind_accuracy``)."""


@dataclass
class _Pass:
    """What one pass over the evaluation batches adds up."""

    metrics: dict[str, float]
    nll: float
    correct: float
    count: float
    shown: list[dict[str, Any]]
    breakdown: dict[str, dict[str, dict[str, float]]]


def _scores(metrics: Sequence[str], hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for metric in metrics:
        scores.update(_score(metric, hyps, refs))
    return scores


def _breakdown(task: Task, examples: Sequence[Example], order: list[int], hyps: list[str],
               refs: list[list[str]]) -> dict[str, dict[str, dict[str, float]]]:
    """The task's metrics per value of each of its ``report_by`` meta fields; ``order[i]`` is
    the index in ``examples`` of ``hyps[i]``. Examples without the field are left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in task.report_by:
        groups: dict[str, list[int]] = {}
        for position, index in enumerate(order):
            meta = examples[index].meta or {}
            if key in meta:
                groups.setdefault(str(meta[key]), []).append(position)
        out[key] = {value: {"count": float(len(members)),
                            **_scores(task.metrics, [hyps[i] for i in members], [refs[i] for i in members])}
                    for value, members in sorted(groups.items())}
    return out


def _evaluate_batches(model: MultiModel, task: Task, batches: list[tuple[list[int], Batch]],
                      examples: Sequence[Example], tokenizer: Tokenizer, *, beam_size: int,
                      length_penalty: float, num_shown: int, blind: torch.Generator | None) -> _Pass:
    """Score ``batches``; with ``blind`` (the generator of random blinding), on blinded inputs."""
    device = next(model.parameters()).device
    nll = correct = count = 0.0
    hyps: list[str] = []
    refs: list[list[str]] = []
    order: list[int] = []
    top1 = top5 = 0.0
    shown: list[dict[str, Any]] = []
    for indices, batch in batches:
        batch = batch.to(device)
        if blind is not None:
            inputs, input_mask = model.modality(task.input_modality).blind(batch.inputs, batch.input_mask, blind)
            batch = replace(batch, inputs=inputs, input_mask=input_mask)
        out = _forward(model, batch, task)
        nll += float(out.loss.nll_sum)
        correct += float(out.loss.correct)
        count += float(out.loss.count)
        if task.is_classification:
            logits = out.logits
            top1 += M.topk_accuracy(logits, batch.targets, 1) * batch.size
            top5 += M.topk_accuracy(logits, batch.targets, min(5, logits.shape[-1])) * batch.size
            if len(shown) < num_shown:
                shown.append({"input": describe_input(examples[indices[0]].inputs),
                              "prediction": int(logits[0].argmax()), "reference": int(batch.targets[0])})
        else:
            texts = decode_batch(model, batch, task, tokenizer, beam_size=beam_size,
                                 length_penalty=length_penalty)
            hyps.extend(texts)
            order.extend(indices)
            refs.extend([[str(r) for r in rs] for rs in batch.references])
            if len(shown) < num_shown:
                shown.append({"input": describe_input(examples[indices[0]].inputs),
                              "prediction": texts[0], "reference": batch.references[0][0]})
    breakdown: dict[str, dict[str, dict[str, float]]] = {}
    if task.is_classification:
        n = len(examples)
        metrics = {"accuracy": 100.0 * top1 / n, "top5": 100.0 * top5 / n}
    else:
        metrics = _scores(task.metrics, hyps, refs)
        if blind is None:
            breakdown = _breakdown(task, examples, order, hyps, refs)
    return _Pass(metrics, nll, correct, count, shown, breakdown)


@torch.no_grad()
def evaluate_task(
    model: MultiModel,
    task: Task,
    examples: Sequence[Example],
    collate: Collator,
    tokenizer: Tokenizer,
    *,
    batch_size: int = 32,
    beam_size: int = 1,
    length_penalty: float = 0.6,
    num_shown: int = 1,
    blind_control: bool = False,
    blind_seed: int = 0,
) -> TaskResult:
    """Evaluate ``model`` on ``examples`` of ``task``; deterministic.

    With ``blind_control`` the same batches are scored again on inputs blinded by the input
    modality (with a generator seeded by ``blind_seed`` for modalities that draw), and the metrics of
    that pass are added as ``blind_<metric>``; each shown example gets its
    ``blind_prediction``. Per-token accuracy and log-perplexity stay those of the real inputs.
    """
    if not examples:
        raise ValueError(f"task {task.name}: no evaluation examples")
    was_training = model.training
    model.eval()
    start = time.time()
    batches = eval_batches(examples, collate, batch_size)
    options = {"beam_size": beam_size, "length_penalty": length_penalty, "num_shown": num_shown}
    seen = _evaluate_batches(model, task, batches, examples, tokenizer, blind=None, **options)
    metrics = dict(seen.metrics)
    if blind_control:
        try:
            blind = _evaluate_batches(model, task, batches, examples, tokenizer,
                                      blind=torch.Generator().manual_seed(blind_seed), **options)
        except NotImplementedError as err:  # an input modality without a blind control: say so, keep the scores
            warnings.warn(f"task {task.name}: no blind control ({err}); its real scores stand alone", stacklevel=2)
        else:
            metrics.update({BLIND_PREFIX + name: value for name, value in blind.metrics.items()})
            for shown, blind_shown in zip(seen.shown, blind.shown):
                shown["blind_prediction"] = blind_shown["prediction"]
    model.train(was_training)
    return TaskResult(
        task=task.name,
        metrics=metrics,
        token_accuracy=100.0 * M.token_accuracy(seen.correct, seen.count),
        log_perplexity=M.log_perplexity(seen.nll, seen.count),
        examples=seen.shown,
        num_examples=len(examples),
        seconds=time.time() - start,
        breakdown=seen.breakdown,
    )


CLASSIFICATION_EVAL_BATCH = 256
"""Examples per evaluation batch of a classification task: one forward pass, no decoding, so
a whole 10,000-image test set takes 40 batches."""


def evaluate_all(model: MultiModel, task_data: dict[str, TaskData], tokenizer: Tokenizer, cfg: Config,
                 log: Callable[[str], None] = print, num_shown: int = 1, *, blind_control: bool = False,
                 limit: int | None = None) -> list[TaskResult]:
    """Evaluate every task on its held-out examples with the config's decoding, in batches of
    ``data.batch_size`` or more (:data:`CLASSIFICATION_EVAL_BATCH` for classification, 64 for
    decoded tasks: the outputs do not depend on the batch); one log line per task.
    ``num_shown`` example predictions are kept per task.

    ``blind_control`` adds each task's ``blind_<metric>`` scores (the model on inputs with their
    content removed; see :func:`evaluate_task`). ``limit``: use only the first ``limit`` held-out
    examples of each task (None or 0 = all)."""
    results = []
    for name, td in task_data.items():
        examples = td.test[:limit] if limit else td.test
        batch_size = max(cfg.data.batch_size, CLASSIFICATION_EVAL_BATCH if td.task.is_classification else 64)
        r = evaluate_task(model, td.task, examples, td.collate, tokenizer,
                          batch_size=batch_size, beam_size=cfg.train.beam_size,
                          length_penalty=cfg.train.length_penalty, num_shown=num_shown,
                          blind_control=blind_control, blind_seed=cfg.data.seed)
        log(f"eval {name}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.metrics.items())
            + f", per-token acc={r.token_accuracy:.1f}%, log-ppl={r.log_perplexity:.3f} ({r.seconds:.0f}s)")
        results.append(r)
    return results


def describe_input(inputs: Any) -> str:
    """A short human-readable description of a raw input."""
    if isinstance(inputs, str):
        return inputs
    shape = tuple(getattr(inputs, "shape", ()))
    kind = {3: "image", 2: "audio features", 1: "waveform"}.get(len(shape), "input")
    return f"<{kind} {'x'.join(map(str, shape))}>"


def format_table(results: Sequence[TaskResult], tasks: dict[str, Task]) -> str:
    """A Markdown table: task, paper task, headline metric and its blind control (— when not
    run), the task's other decoded metrics, per-token accuracy, log-perplexity."""
    lines = ["| task | mirrors | metric | value | blind | also | per-token acc % | log-ppl |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for r in results:
        task = tasks[r.task]
        name, value = r.headline(task)
        blind = r.metrics.get(BLIND_PREFIX + name)
        also = [f"{METRIC_LABELS.get(m, m)} {r.metrics[m]:.1f}"
                + (f" (blind {r.metrics[BLIND_PREFIX + m]:.1f})" if BLIND_PREFIX + m in r.metrics else "")
                for m in task.metrics[1:] if m in r.metrics]
        lines.append(f"| {r.task} | {task.paper_task} | {METRIC_LABELS.get(name, name)} | {value:.1f}"
                     f" | {'—' if blind is None else f'{blind:.1f}'} | {'; '.join(also) or '—'}"
                     f" | {r.token_accuracy:.1f} | {r.log_perplexity:.3f} |")
    return "\n".join(lines)

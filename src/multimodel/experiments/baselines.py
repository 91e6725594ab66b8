"""Paper Table 1 at our scale: a MultiModel run against a standard single-task model per task.

The paper's Table 1 sets MultiModel, trained jointly, beside the best single-task models of
its day. ``multimodel experiment baselines --run RUN`` makes that comparison for one finished
run: for every task of the run (or ``--tasks``) it trains the baseline its (input, target)
modalities call for (:mod:`multimodel.baselines`), then scores it, and reads MultiModel's
numbers from the run's ``eval.json``.

What is held equal, so that only the model differs:

* **data and batches** — the run's config (tasks, sizes, data seed) loads the same training and
  held-out examples; each baseline draws its batches from the run's own stream of that task
  (:class:`~multimodel.data.batching.TaskStream` with the run's data seed and batch size), so it
  sees exactly the batches MultiModel saw of that task, in the same order;
* **steps** — as many batches as the task got in the run: the run's checkpoint counts them
  (``task_steps`` in ``meta.json``); for runs written before that count was kept they are
  recomputed from the run's task schedule, a pure function of (data seed, step). ``--steps N``
  gives every baseline N steps instead;
* **vocabulary** — the run's tokenizer; label smoothing, dropout, target length and (by default)
  the width d_model come from the run's model config;
* **scoring** — :func:`multimodel.evaluation.evaluate.evaluate_all` (and through it
  :func:`multimodel.evaluation.evaluate.evaluate_task`), the functions that scored MultiModel,
  on the same held-out examples: same eval batches, same decode lengths, same metric functions
  (a baseline answers MultiModel's calls, see :mod:`multimodel.baselines.base`);
* **decoding** — the run's ``train.beam_size`` and ``train.length_penalty``, through the same
  beam search (:func:`multimodel.model.decoding.search_beams`). The run's blind control is not
  repeated.

Not held equal, on purpose: the baselines train with Adam, a short linear warm-up and a
constant learning rate afterwards, as small single-task models usually are (the run's cool-down and
``train.normalize_gradients`` carry over, so both sides end training and scale their updates
alike). Held equal: the batches. A baseline trains on its task's global batch, the per-rank
``data.batch_size`` (or the task's ``data.task_batch_sizes`` entry) times the ranks the run's
checkpoint was written on, in the run's order: the examples the run's ranks saw together.

**Over training** (``--match-run-evals``): a run that evaluated itself while training
(``train.eval_every``) logged its held-out scores; each baseline is then also scored at the same
number of steps on its task as the run had had at each of those evaluations, on the same
``data.eval_size`` held-out examples, and ``results.md`` sets the two side by side, one row per
evaluation: where along training each model leads, not only at the end.

Output: ``OUT/results.md`` (the table "task | metric | MultiModel (run) | baseline | steps", then
per-token accuracy and log-perplexity of both, then the table over training when asked), ``OUT/curves.png``
(with the ``plots`` extra, when the run evaluated itself while training and the baselines were scored
along theirs, by ``--match-run-evals`` or ``--eval-every``: both curves per task), ``OUT/results.json`` (every number) and
``OUT/tasks/<task>.json``, one per finished task: re-running the same command reuses them, so an
interrupted comparison resumes with the next task (a record whose run, steps, batch, settings or
task data differ is trained again: :func:`data_fingerprint` names the data).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch

from multimodel.baselines import BaselineConfig, baseline_kind, build_baseline
from multimodel.config import Config, ConfigError, apply_overrides, config_from_dict, to_dict
from multimodel.corpora.cache import stable_hash
from multimodel.data.batching import TaskStream
from multimodel.data.example import peek_examples
from multimodel.data.mixture import TaskSampler
from multimodel.data.tokenizer import Tokenizer
from multimodel.errors import MissingExtraError, UserError
from multimodel.evaluation.evaluate import METRIC_LABELS
from multimodel.experiments.grid import headline_metric, mixing_of, read_eval, read_log, write_json
from multimodel.experiments.plots import Curve, plot_panels
from multimodel.pretrained import read_meta, resolve_checkpoint
from multimodel.tasks import get_task
from multimodel.tasks.task_data import (TaskData, attach_collators, describe_batch_sizes, load_task_data,
                                        task_batch_sizes)
from multimodel.evaluation.evaluate import evaluate_all
from multimodel.training.distributed import select_device
from multimodel.training.optim import cooldown_factor, warmup_factor
from multimodel.training.step import bound_gradients

Log = Callable[[str], None]

TITLE = "MultiModel vs. single-task baselines (paper Table 1, at our scale)"
QUESTION = ("How does one model trained jointly on all tasks compare with a standard single-task model"
            " per task, trained on the same data for the same number of batches? Paper, Table 1: the"
            " joint MultiModel comes close to, but stays below, the task-specific state of the art.")

#: Consecutive non-finite losses after which a baseline's training stops with an error.
MAX_BAD_STEPS = 10

#: Steps between training-loss readings (progress bar, loss curve in the JSON).
LOG_EVERY = 25


@dataclasses.dataclass
class RunInfo:
    """What the comparison needs from a MultiModel run.

    Args:
        run_dir: the run directory.
        checkpoint: its newest checkpoint directory.
        cfg: the run's config (``data.data_dir`` possibly overridden).
        step: global steps the run trained.
        tokenizer: the run's shared subword vocabulary.
        parameters: MultiModel's parameter count (all tasks share it).
        task_steps: batches each task of the run drew.
        steps_source: where ``task_steps`` came from, in words.
        evaluation: task → the run's ``eval.json`` record (empty when it was not evaluated).
        world_size: the ranks that wrote the checkpoint (1 when it does not say).
        curve: task → the run's evaluations while training (:func:`run_evaluations`).
    """

    run_dir: Path
    checkpoint: Path
    cfg: Config
    step: int
    tokenizer: Tokenizer
    parameters: int
    task_steps: dict[str, int]
    steps_source: str
    evaluation: dict[str, dict[str, Any]]
    world_size: int = 1
    curve: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def batch_sizes(self) -> dict[str, int]:
        """Each task's global batch in the run: its per-rank size times the ranks."""
        return {name: size * self.world_size for name, size in task_batch_sizes(self.cfg).items()}


def read_run(run_dir: Path, *, data_dir: str | None = None) -> RunInfo:
    """Read a finished MultiModel run: config, vocabulary, steps per task, final evaluation."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory; give the --run-dir of a `multimodel train`")
    checkpoint = resolve_checkpoint(run_dir)
    meta = read_meta(checkpoint)
    cfg = config_from_dict(meta["config"])
    if data_dir is not None:
        cfg = apply_overrides(cfg, [f"data.data_dir={data_dir!r}"])
    tokenizer = Tokenizer.from_pretrained(checkpoint)
    step = int(meta["step"])
    saved = meta.get("task_steps")
    if saved is not None:
        task_steps = {name: int(n) for name, n in saved.items()}
        source = f"counted by the run (task_steps in {checkpoint.name}/meta.json)"
    else:  # a run trained before the trainer counted them: the schedule is a pure function of the step
        task_steps = TaskSampler(mixing_of(cfg), cfg.data.seed).counts(step)
        source = f"recomputed from the run's task schedule over its {step} steps (data seed {cfg.data.seed})"
    evaluation = read_eval(run_dir) if (run_dir / "eval.json").is_file() else {}
    return RunInfo(run_dir, checkpoint, cfg, step, tokenizer, _count_parameters(checkpoint), task_steps,
                   source, evaluation, int(meta.get("world_size") or 1), run_evaluations(run_dir, cfg, step))


def run_evaluations(run_dir: Path, cfg: Config, last_step: int) -> dict[str, list[dict[str, Any]]]:
    """Task → the run's evaluations while training, in step order: ``{"step": global step,
    "task_steps": steps the task had had by then, "metrics": {metric: value}}``.

    Read from the ``"event": "eval"`` records of ``log.jsonl`` (``train.eval_every``; the first
    ``data.eval_size`` held-out examples, no blind control), up to ``last_step``; a resumed run's
    repeated evaluation of a step counts once (the last). The steps on each task are those the
    log recorded at that step, or else the run's task schedule's (a pure function of data seed
    and step)."""
    evals = {r["step"]: r for r in read_log(run_dir, event="eval") if 0 < r["step"] <= last_step}
    logged = {r["step"]: r for r in read_log(run_dir)}
    sampler = TaskSampler(mixing_of(cfg), cfg.data.seed)
    curves: dict[str, list[dict[str, Any]]] = {}
    for step in sorted(evals):
        metrics: dict[str, dict[str, float]] = {}
        for key, value in evals[step].items():
            if key.startswith("eval/"):
                _, task, metric = key.split("/", 2)
                metrics.setdefault(task, {})[metric] = value
        counts = None
        for task, values in metrics.items():
            task_steps = logged.get(step, {}).get(f"task_steps/{task}")
            if task_steps is None:
                counts = counts if counts is not None else sampler.counts(step)
                task_steps = counts.get(task, 0)
            curves.setdefault(task, []).append({"step": step, "task_steps": int(task_steps), "metrics": values})
    return curves


def _count_parameters(checkpoint: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            total += math.prod(f.get_slice(key).get_shape())
    return total


def baseline_config(cfg: Config, **overrides: Any) -> BaselineConfig:
    """The baselines' settings for a run: shared fields taken from the run, then ``overrides``
    (fields of :class:`~multimodel.baselines.base.BaselineConfig`; None values are ignored)."""
    fields = {f.name for f in dataclasses.fields(BaselineConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown baseline setting {unknown[0]!r}; valid: {', '.join(sorted(fields))}")
    from_run = {
        "hidden_size": cfg.model.hidden_size,
        "dropout": cfg.model.dropout,
        "label_smoothing": cfg.model.label_smoothing,
        "max_target_length": cfg.model.max_target_length,
        "audio_mels": cfg.model.audio_mels,
        "audio_sample_rate": cfg.model.audio_sample_rate,
        "audio_normalize": cfg.model.audio_normalize,
        "cooldown_fraction": cfg.train.cooldown_fraction,
        "normalize_gradients": cfg.train.normalize_gradients,
    }
    from_run.update({k: v for k, v in overrides.items() if v is not None})
    return BaselineConfig(**from_run)


# ----------------------------------------------------------------------------------------
# Training one baseline: the loop, written out.


def train_baseline(model: torch.nn.Module, stream: TaskStream, steps: int, config: BaselineConfig,
                   device: torch.device, *, progress: bool = True, log: Log = print, eval_every: int = 0,
                   evaluate: Callable[[], dict[str, float]] | None = None,
                   eval_curve: list[dict[str, Any]] | None = None,
                   eval_at: Collection[int] = ()) -> list[tuple[int, float]]:
    """Train ``model`` for ``steps`` batches of ``stream``; return (step, mean training loss) readings.

    Adam with a linear warm-up over ``min(warmup_steps, steps // 10)`` steps (at least 1), then
    the constant learning rate, lowered linearly to zero over the last ``cooldown_fraction`` of
    the steps (none by default); gradients clipped to ``grad_clip``, or rescaled to norm 1 with
    ``normalize_gradients``. A step whose loss is not
    finite is skipped (its batch still counts). With ``eval_every`` and ``evaluate``, every
    ``eval_every`` steps, and after each step in ``eval_at``, ``evaluate()``'s metrics are appended
    to ``eval_curve`` with the step and the training seconds so far (evaluation time left out); the
    model is back in training mode after.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, betas=config.adam_betas)
    warmup = max(1, min(config.warmup_steps, steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_factor(s, warmup) * cooldown_factor(s / max(1, steps), config.cooldown_fraction))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"baseline {stream.task_name}", dynamic_ncols=True, leave=False)
    curve: list[tuple[int, float]] = []
    loss_sum = torch.zeros((), device=device)  # read on the host only at readings
    in_sum = bad_in_a_row = 0
    train_seconds, tick = 0.0, time.time()
    try:
        for step in range(1, steps + 1):
            batch = stream.next_batch().to(device)
            out = model(batch.inputs, batch.input_mask, batch.targets, batch.target_mask)
            loss = out.loss.loss
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss.detach()):
                bad_in_a_row += 1
                log(f"  {stream.task_name} step {step}: non-finite loss; step skipped")
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise UserError(f"{stream.task_name}: {bad_in_a_row} consecutive non-finite losses;"
                                       " lower --learning-rate")
            else:
                bad_in_a_row = 0
                loss.backward()
                bound_gradients(params, config.grad_clip, config.normalize_gradients)
                optimizer.step()
                loss_sum += loss.detach()
                in_sum += 1
            scheduler.step()
            if bar is not None:
                bar.update(1)
            if (step % LOG_EVERY == 0 or step == steps) and in_sum:
                curve.append((step, float(loss_sum) / in_sum))
                if bar is not None:
                    bar.set_postfix_str(f"loss={curve[-1][1]:.3f}")
                loss_sum.zero_()
                in_sum = 0
            due = (eval_every and step % eval_every == 0) or step in eval_at
            if due and evaluate is not None and eval_curve is not None:
                train_seconds += time.time() - tick
                eval_curve.append({"step": step, "train_seconds": train_seconds, "metrics": evaluate()})
                model.train()
                tick = time.time()
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return curve


# ----------------------------------------------------------------------------------------
# The comparison.


def run_baselines(run: Path, *, out: Path, steps: int | None = None, tasks: Sequence[str] | None = None,
                  data_dir: str | None = None, command: str | None = None, progress: bool = True,
                  log: Log = print, eval_every: int = 0, match_run_evals: bool = False,
                  **settings: Any) -> dict[str, Any]:
    """Train, score and tabulate a single-task baseline per task of the MultiModel run ``run``.

    Args:
        run: a finished ``multimodel train`` run directory.
        out: results directory (``results.md``, ``results.json``, ``tasks/<task>.json``).
        steps: training steps of every baseline; None = the batches each task got in the run.
        tasks: a subset of the run's tasks (default: all of them).
        data_dir: where the task data is, when not where the run found it.
        command: the command line, quoted in ``results.md``.
        progress: show a progress bar per baseline.
        log: where progress messages go.
        eval_every: also score each baseline on the first ``data.eval_size`` held-out examples
            every this many steps (``eval_curve`` in its record, with training seconds); 0 = off.
        match_run_evals: also score each baseline at the steps on its task at which the run
            evaluated itself while training (:func:`run_evaluations`), and tabulate both.
        settings: :class:`~multimodel.baselines.base.BaselineConfig` fields to change
            (``hidden_size``, ``learning_rate`` ...; None values are ignored).

    Returns:
        The ``results.json`` payload.
    """
    info = read_run(Path(run), data_dir=data_dir)
    cfg = info.cfg
    names = list(cfg.data.tasks) if not tasks else list(tasks)
    unknown = [n for n in names if n not in cfg.data.tasks]
    if unknown:
        raise ConfigError(f"the run was not trained on {unknown}; its tasks: {', '.join(cfg.data.tasks)}")
    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    config = baseline_config(cfg, **settings)
    if match_run_evals and not info.curve:
        raise ConfigError(f"--match-run-evals: {info.run_dir}/log.jsonl has no evaluations from while it trained;"
                          " train with train.eval_every=N (steps between evaluations) to have them")
    for name in names:  # fail before loading data for a task without a baseline
        task = get_task(name, cfg)
        baseline_kind(task.input_modality, task.target_modality)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    out = Path(out)
    (out / "tasks").mkdir(parents=True, exist_ok=True)

    task_data = load_task_data(cfg, names, log=lambda msg: log(f"  {msg}"))
    batch_sizes = info.batch_sizes()
    attach_collators(cfg, task_data, info.tokenizer)
    log(f"baselines for {info.run_dir} (step {info.step}, {len(names)} tasks) into {out}; steps per task:"
        f" {f'{steps} (--steps)' if steps is not None else info.steps_source}")

    records: dict[str, dict[str, Any]] = {}
    for i, (name, td) in enumerate(task_data.items(), 1):
        n_steps = steps if steps is not None else info.task_steps.get(name, 0)
        eval_at = sorted({p["task_steps"] for p in info.curve.get(name, [])
                          if 0 < p["task_steps"] <= n_steps}) if match_run_evals else []
        key = {"run": str(info.checkpoint.resolve()), "run_step": info.step, "steps": n_steps,
               "batch_size": batch_sizes[name], "held_out": len(td.test), "data": data_fingerprint(td),
               "baseline": to_dict(config), "eval_every": eval_every, "eval_at": eval_at, "decoding": _decoding_key(info.cfg)}
        path = out / "tasks" / f"{name}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            saved_key = saved.get("key") or {}
            saved_key.setdefault("decoding", {"beam_size": 1})  # records from before the key named it: greedy
            saved_key.get("baseline", {}).setdefault("audio_normalize", False)  # ... and before CMVN: none
            saved_key.setdefault("eval_at", [])  # ... and before --match-run-evals: none
            if saved_key == json.loads(json.dumps(key)):
                log(f"[{i}/{len(task_data)}] {name}: done before ({path}); reused")
                records[name] = saved
                continue
        log(f"[{i}/{len(task_data)}] {name}: {baseline_kind(td.task.input_modality, td.task.target_modality)},"
            f" {n_steps} steps of batch {batch_sizes[name]}")
        records[name] = compare_task(info, td, config, n_steps, batch_sizes[name], device, progress=progress,
                                     log=log, eval_every=eval_every, eval_at=eval_at)
        records[name]["key"] = key
        write_json(path, records[name])

    payload = _payload(info, names, records, config, steps, command)
    write_json(out / "results.json", payload)
    md = results_markdown(payload)
    (out / "results.md").write_text(md)
    log(f"\n{md}")
    log(f"results: {out / 'results.md'}, {out / 'results.json'}")
    panels = over_training_curves(payload)
    if panels:
        try:
            plot_panels(panels, out / "curves.png", ncols=min(4, len(panels)))
            log(f"learning curves: {out / 'curves.png'}")
        except MissingExtraError as err:  # the table above holds the same numbers
            log(f"no curves.png: {err}")
    return payload


def _decoding_key(cfg: Config) -> dict[str, Any]:
    """How the baselines decode, as their records' key names it (the length penalty only matters
    to a beam)."""
    if cfg.train.beam_size == 1:
        return {"beam_size": 1}
    return {"beam_size": cfg.train.beam_size, "length_penalty": cfg.train.length_penalty}


def data_fingerprint(td: TaskData) -> str:
    """The task's data as a cached baseline record names it: the sizes of both splits and a hash
    of every example's target, read without decoding lazy inputs. Regenerated or edited data
    (a new corpus version, another file) changes it, so its record is trained again, not reused."""

    def digest(examples) -> int:
        return stable_hash("\x1f".join(repr(example.target) for example in peek_examples(examples)))

    return f"train {len(td.train)} {digest(td.train):016x}, test {len(td.test)} {digest(td.test):016x}"


def compare_task(info: RunInfo, td: TaskData, config: BaselineConfig, steps: int, batch_size: int,
                 device: torch.device, *, progress: bool = True, log: Log = print,
                 eval_every: int = 0, eval_at: Collection[int] = ()) -> dict[str, Any]:
    """Train the baseline of one task for ``steps`` batches of ``batch_size`` and evaluate it; its
    record for ``results.json`` (with ``eval_curve``, the held-out scores every ``eval_every``
    steps and after the steps in ``eval_at``, when asked)."""
    cfg, task = info.cfg, td.task
    torch.manual_seed(cfg.train.seed)  # each task's baseline the same whatever the other tasks
    shape = tuple(getattr(td.train[0].inputs, "shape", ())) or (len(str(td.train[0].inputs)),)
    model = build_baseline(task.input_modality, task.target_modality, config, info.tokenizer.vocab_size,
                           shape).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    assert td.collate is not None
    stream = TaskStream(task.name, td.train, td.collate, batch_size, cfg.data.seed)
    if stream.batch_size < batch_size:  # as the run's stream was: every batch is the whole training set
        log(f"  {task.name}: {len(td.train)} training examples, fewer than a batch of {batch_size}: each batch"
            f" holds all {stream.batch_size}")
    eval_curve: list[dict[str, Any]] = []
    eval_seconds = [0.0]

    def evaluate() -> dict[str, float]:
        began = time.time()
        (partial,) = evaluate_all(model, {task.name: td}, info.tokenizer, cfg, log=lambda _line: None,
                                  num_shown=0, limit=cfg.data.eval_size)
        eval_seconds[0] += time.time() - began
        return dict(partial.metrics)

    start = time.time()
    curve = train_baseline(model, stream, steps, config, device, progress=progress, log=log, eval_every=eval_every,
                           evaluate=evaluate, eval_curve=eval_curve, eval_at=set(eval_at))
    train_seconds = time.time() - start - eval_seconds[0]
    (result,) = evaluate_all(model, {task.name: td}, info.tokenizer, cfg, log=lambda _line: None, num_shown=1)
    metric = task.metrics[0]
    log(f"  {task.name}: {parameters / 1e6:.2f}M parameters, {steps} steps in {train_seconds:.0f} s;"
        f" eval {', '.join(f'{k}={v:.2f}' for k, v in result.metrics.items())},"
        f" per-token acc={result.token_accuracy:.1f}%, log-ppl={result.log_perplexity:.3f}"
        + (f" (MultiModel {metric}={info.evaluation[task.name]['metrics'].get(metric, math.nan):.2f})"
           if task.name in info.evaluation else ""))
    return {"task": task.name, "baseline": baseline_kind(task.input_modality, task.target_modality),
            "parameters": parameters, "steps": steps, "train_seconds": train_seconds,
            "loss_curve": curve, "eval_curve": eval_curve, "eval": result.to_json()}


# ----------------------------------------------------------------------------------------
# Tables.


def _batch_sizes(payload: dict[str, Any]) -> str:
    """``"batch 32"``, or each task's batch when ``data.task_batch_sizes`` made them differ (results
    written before it existed hold one size)."""
    return describe_batch_sizes(payload.get("batch_sizes") or {"all": payload["batch_size"]})


def _decoding(payload: dict[str, Any]) -> str:
    """How the baselines decoded: as the run (results written before they did so decoded greedily)."""
    if "baseline_beam_size" not in payload:
        return "greedy decoding"
    size = payload["baseline_beam_size"]
    return "greedy decoding, as the run" if size == 1 else f"beam search of {size} as the run"


def _over_ranks(payload: dict[str, Any]) -> str:
    """Words for results.md saying that a data-parallel run's batch sizes are global ones."""
    world = payload.get("run_world_size", 1)
    return f" over the run's {world} ranks together" if world > 1 else ""


def _payload(info: RunInfo, names: list[str], records: dict[str, dict[str, Any]], config: BaselineConfig,
             steps: int | None, command: str | None) -> dict[str, Any]:
    cfg = info.cfg
    batch_sizes = info.batch_sizes()
    return {
        "experiment": "baselines", "title": TITLE, "question": QUESTION, "command": command,
        "run": str(info.run_dir), "run_step": info.step, "run_checkpoint": str(info.checkpoint),
        "run_parameters": info.parameters, "run_beam_size": cfg.train.beam_size,
        "baseline_beam_size": cfg.train.beam_size, "length_penalty": cfg.train.length_penalty,
        "batch_size": cfg.data.batch_size * info.world_size, "run_world_size": info.world_size,
        "batch_sizes": {name: batch_sizes[name] for name in names},
        "data_seed": cfg.data.seed,
        "steps_source": f"{steps} for every task (--steps)" if steps is not None else info.steps_source,
        "run_task_steps": info.task_steps, "baseline_config": to_dict(config), "tasks": names,
        "run_curve": {name: info.curve[name] for name in names if name in info.curve},
        "results": {name: {**records[name], "metric": headline_metric(name, cfg),
                           "multimodel": info.evaluation.get(name)} for name in names},
    }


def _cell(record: dict[str, Any] | None, measure: str, digits: int = 1) -> str:
    if not record:
        return "—"
    if measure in ("token_accuracy", "log_perplexity"):
        value = record.get(measure)
    else:
        value = record.get("metrics", {}).get(measure)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def over_training_lines(payload: dict[str, Any]) -> list[str]:
    """The table of the run's evaluations while training beside its baselines' at the same steps on
    each task (``--match-run-evals``); no lines when no step of the two matches."""
    rows = []
    for name in payload["tasks"]:
        r = payload["results"][name]
        metric = r["metric"]
        baseline_at = {p["step"]: p["metrics"] for p in r.get("eval_curve", [])}
        for point in payload.get("run_curve", {}).get(name, []):
            if point["task_steps"] in baseline_at:
                rows.append(f"| {name} | {METRIC_LABELS.get(metric, metric)} | {point['step']} | {point['task_steps']}"
                            f" | {_cell(point, metric)} | {_cell({'metrics': baseline_at[point['task_steps']]}, metric)} |")
    if not rows:
        return []
    return ["", "Over training: the run's evaluations while it trained, and each baseline scored after as many"
            " steps on the task, on the same first held-out examples (the run's data.eval_size). With"
            " train.cooldown_fraction both lower their learning rate over the same last part of training,"
            " so only rows in that part include it:", "",
            "| task | metric | run step | steps on the task | MultiModel | baseline |",
            "|---|---|---:|---:|---:|---:|", *rows]


def over_training_curves(payload: dict[str, Any]) -> list[tuple[str, str, dict[str, Curve]]]:
    """Panels of ``curves.png`` (:func:`~multimodel.experiments.plots.plot_panels`): per task with
    both, the run's held-out metric while it trained and its baseline's, by steps on the task."""
    panels = []
    for name in payload["tasks"]:
        record = payload["results"][name]
        metric = record["metric"]
        joint = [(p["task_steps"], p["metrics"][metric]) for p in payload.get("run_curve", {}).get(name, [])
                 if metric in p["metrics"]]
        alone = [(p["step"], p["metrics"][metric]) for p in record.get("eval_curve", []) if metric in p["metrics"]]
        if joint and alone:
            curves = {label: tuple(np.asarray(points, dtype=np.float64).T)
                      for label, points in (("MultiModel", joint), (f"baseline ({record['baseline']})", alone))}
            panels.append((name, METRIC_LABELS.get(metric, metric), curves))
    return panels


def results_markdown(payload: dict[str, Any]) -> str:
    """``results.md`` of a :func:`run_baselines` payload."""
    lines = [f"# {payload['title']}", "", payload["question"], ""]
    if payload.get("command"):
        lines += ["Command:", "", "```", payload["command"], "```", ""]
    lines += ["| task | metric | MultiModel (run) | baseline | steps |", "|---|---|---:|---:|---:|"]
    for name in payload["tasks"]:
        r = payload["results"][name]
        metric = r["metric"]
        lines.append(f"| {name} | {METRIC_LABELS.get(metric, metric)} | {_cell(r['multimodel'], metric)}"
                     f" | {_cell(r['eval'], metric)} | {r['steps']} |")
    lines += ["", "Per-token accuracy and log-perplexity of the targets (teacher-forced), and model sizes:", "",
              "| task | baseline model | parameters | per-token acc % MultiModel | baseline"
              " | log-ppl MultiModel | baseline | baseline training |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in payload["tasks"]:
        r = payload["results"][name]
        lines.append(f"| {name} | {r['baseline']} | {r['parameters'] / 1e6:.2f}M"
                     f" | {_cell(r['multimodel'], 'token_accuracy')} | {_cell(r['eval'], 'token_accuracy')}"
                     f" | {_cell(r['multimodel'], 'log_perplexity', 3)} | {_cell(r['eval'], 'log_perplexity', 3)}"
                     f" | {r['train_seconds']:.0f} s |")
    lines += over_training_lines(payload)
    settings = payload["baseline_config"]
    cooldown = settings.get("cooldown_fraction", 0)  # absent from results written before it existed
    schedule = f"Adam, learning rate {settings['learning_rate']:g} after a linear warm-up" + (
        f", lowered linearly to 0 over the last {cooldown:g} of the steps" if cooldown else "") + (
        ", each step's gradient rescaled to norm 1" if settings.get("normalize_gradients") else "")
    notes = [
        f"MultiModel: {payload['run']} after {payload['run_step']} steps, {payload['run_parameters'] / 1e6:.2f}M"
        f" parameters shared by {len(payload['run_task_steps'])} tasks; its numbers are the run's eval.json"
        f" (beam size {payload['run_beam_size']}).",
        f"Baselines: one model per task, trained on the run's batches of that task ("
        f"{_batch_sizes(payload)}{_over_ranks(payload)}; data seed {payload['data_seed']});"
        f" steps: {payload['steps_source']}."
        f" {schedule}, d_model {settings['hidden_size']}, {_decoding(payload)}.",
        "Both are scored by the same evaluation code on the same held-out examples.",
    ]
    missing = [n for n in payload["tasks"] if not payload["results"][n]["multimodel"]]
    if missing:
        notes.append(f"No MultiModel evaluation in the run for {', '.join(missing)} (trained with --no-eval?);"
                     f" run `multimodel eval {payload['run']} --json ...` or retrain with evaluation.")
    for name in payload["tasks"]:
        r = payload["results"][name]
        mm = r["multimodel"]
        if mm and mm.get("num_examples") != r["eval"]["num_examples"]:
            notes.append(f"{name}: MultiModel was scored on {mm.get('num_examples')} held-out examples, the"
                         f" baseline on {r['eval']['num_examples']}; the numbers are not comparable.")
    lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)

"""Does the input pipeline slow training down? Real batches vs. the same batches held in memory.

Builds the demo preset's tasks with the real pipeline — each task's corpus
(``training.task_data.load_task_data``), the shared sentencepiece vocabulary
(``data.tokenizer``), ``data.batching.TaskStream`` + ``Collator`` (tokenising, padding, length
buckets) — and the trainer's task mixing (``data.mixture``). It then times training steps two
ways, interleaved step by step on the same model:

* ``pipeline``  — ``stream.next_batch()`` (collation included) and the step, as the trainer does;
* ``in memory`` — the identical batch, collated beforehand by a second stream with the same
  seed, and the step.

Both variants see the same sequence of tasks and batches, so the model work is identical and
the difference is the cost of producing batches. The figure of merit is
``time(in memory) / time(pipeline)`` over all steps; 1.0 means the pipeline is free.

``--declared`` adds a task declared in the config (``data.declared_tasks``) over an
ImageNet-style folder of JPEGs written to a temporary directory (:func:`write_image_folder`): its
images are decoded, resized and centre-cropped when a batch needs them (the image-folder
reader's lazy mode), the costliest path a declared task's batches take. The per-task table
gives each task's collation time beside its step time.

    python benchmarks/pipeline.py                       # demo preset, 2 threads, 48 steps per variant
    python benchmarks/pipeline.py --declared            # ... and a declared image-folder task
    python benchmarks/pipeline.py --quick [--declared]  # tiny model, two small text tasks: smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from multimodel.config import Config, TaskSpec, load_config
from multimodel.data.batching import Batch, TaskStream
from multimodel.data.mixture import TaskSampler, mixing_probabilities
from multimodel.model.multimodel import MultiModel
from multimodel.tasks.task_data import (attach_collators, build_tokenizer, describe_batch_sizes, load_task_data,
                                        modality_specs, task_batch_sizes)
from multimodel.training.optim import build_optimizer
from multimodel.training.step import train_step



DECLARED = "bench_images"
"""The declared task ``--declared`` adds."""


def quick_config(data_dir: str) -> Config:
    cfg = load_config("tiny")
    data = replace(cfg.data, tasks=("numbers_en_de", "grammar_parsing"), train_size=96, eval_size=8,
                   task_sizes={}, batch_size=8, task_batch_sizes={"grammar_parsing": 12}, vocab_size=120,
                   data_dir=data_dir)
    return replace(cfg, data=data)


def write_image_folder(root: Path, classes: int, per_class: int, size: tuple[int, int] = (160, 120)) -> Path:
    """``root/train/<class>/<i>.jpg``: ``classes`` × ``per_class`` noisy JPEGs of ``size`` (W, H), a
    colour per class, as a user's ImageNet-style folder would hold them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "train" / f"class_{c:02d}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, size=3)
        for i in range(per_class):
            noise = rng.integers(-60, 60, size=(size[1], size[0], 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)  # (H, W, 3)
            Image.fromarray(pixels, "RGB").save(folder / f"{i}.jpg", quality=90)
    return root


def with_declared_task(cfg: Config, folder: Path, per_class: int) -> Config:
    """``cfg`` with a declared image-folder task over :func:`write_image_folder`'s corpus in
    ``folder`` added (absolute paths, so the preset's data directory stays as it is)."""
    write_image_folder(folder, classes=4, per_class=per_class)
    spec = TaskSpec(name=DECLARED, reader="image_folder", image_size=(64, 64),
                    paths={"train": str(folder / "train"), "test": str(folder / "train")})
    data = replace(cfg.data, tasks=(*cfg.data.tasks, DECLARED), declared_tasks=(*cfg.data.declared_tasks, spec),
                   task_sizes={**cfg.data.task_sizes, DECLARED: 0})
    weights = [w for name, w in cfg.train.task_weights.items() if name in cfg.data.tasks]
    if weights:  # mixing by weights leaves an unlisted task out: give it an average task's share
        train = replace(cfg.train, task_weights={**cfg.train.task_weights, DECLARED: sum(weights) / len(weights)})
        cfg = replace(cfg, train=train)
    return replace(cfg, data=data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, two small text tasks, few steps")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--data-dir", default=None, help="override data.data_dir (default: the preset's)")
    parser.add_argument("--steps", type=int, default=48, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (--quick: 1)")
    parser.add_argument("--min-ratio", type=float, default=0.95, help="fail below this ratio")
    parser.add_argument("--declared", action="store_true",
                        help="add a declared image-folder task over JPEGs written to a temporary directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            cfg = quick_config(tmp)
            args.steps, args.threads, args.min_ratio = 6, 1, 0.0
        else:
            cfg = load_config(args.config)
            if args.data_dir:
                cfg = replace(cfg, data=replace(cfg.data, data_dir=args.data_dir))
        if args.declared:
            cfg = with_declared_task(cfg, Path(tmp) / "declared", per_class=24 if args.quick else 100)
        previous = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            return run(cfg, args, argv)
        finally:
            torch.set_num_threads(previous)


def run(cfg: Config, args: argparse.Namespace, argv: list[str] | None) -> int:
    start = time.perf_counter()
    task_data = load_task_data(cfg, splits=("train",), log=lambda message: None)
    tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer)
    setup_s = time.perf_counter() - start
    tasks = {name: td.task for name, td in task_data.items()}

    batch_sizes = task_batch_sizes(cfg)  # the trainer's: data.batch_size unless a task has its own

    def streams() -> dict[str, TaskStream]:
        return {name: TaskStream(name, td.train, td.collate, batch_sizes[name], cfg.data.seed)
                for name, td in task_data.items()}

    live, prebuilt_streams = streams(), streams()
    sizes = {name: len(td.train) for name, td in task_data.items()}
    sampler = TaskSampler(mixing_probabilities(sizes, cfg.train.mixing, cfg.train.temperature,
                                               cfg.train.task_weights), cfg.data.seed)
    warmup = len(tasks)  # one step per task first: oneDNN builds its kernels on first use
    order = [name for name in tasks] + [sampler.task_at(i) for i in range(args.steps)]
    start = time.perf_counter()
    prebuilt = [prebuilt_streams[name].next_batch() for name in order]
    prebuild_s = time.perf_counter() - start

    torch.manual_seed(cfg.train.seed)
    model = MultiModel(cfg.model, tokenizer.vocab_size, modality_specs(list(tasks.values()))).train()
    optimizer, scheduler = build_optimizer(model, cfg.train)
    times: dict[str, list[float]] = {"pipeline": [], "in memory": []}
    collate_times: list[float] = []
    per_task: dict[str, dict[str, list[float]]] = {name: {"collate": [], "step": []} for name in tasks}
    for i, name in enumerate(order):
        task = tasks[name]

        def from_pipeline() -> tuple[float, float, Batch]:
            t0 = time.perf_counter()
            batch = live[name].next_batch()
            t1 = time.perf_counter()
            train_step(model, optimizer, scheduler, batch, task.model_kwargs, grad_clip=cfg.train.grad_clip)
            return time.perf_counter() - t0, t1 - t0, batch

        def from_memory() -> float:
            t0 = time.perf_counter()
            train_step(model, optimizer, scheduler, prebuilt[i], task.model_kwargs, grad_clip=cfg.train.grad_clip)
            return time.perf_counter() - t0

        # The second of two steps on same-shaped batches finds caches warm: alternate who goes first.
        if i % 2 == 0:
            pipe_s, collate_s, batch = from_pipeline()
            memory_s = from_memory()
        else:
            memory_s = from_memory()
            pipe_s, collate_s, batch = from_pipeline()
        if i >= warmup:
            times["pipeline"].append(pipe_s)
            times["in memory"].append(memory_s)
            collate_times.append(collate_s)
            per_task[name]["collate"].append(collate_s)
            per_task[name]["step"].append(memory_s)
        assert torch.equal(batch.targets, prebuilt[i].targets), "the two streams disagree"

    pipe, memory = sum(times["pipeline"]), sum(times["in memory"])
    ratio = memory / pipe
    pairs = [m / p for m, p in zip(times["in memory"], times["pipeline"])]
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## Input pipeline vs. batches in memory (benchmarks/pipeline.py)\n")
    print(f"Command: `python benchmarks/pipeline.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    print(f"Tasks: {', '.join(tasks)}; {describe_batch_sizes(batch_sizes)}; {args.steps} steps per variant after"
          f" {warmup} warm-up steps, task order from the trainer's sampler ({cfg.train.mixing} mixing);"
          f" {threads} threads, load average {load:.1f}.  ")
    print(f"Setup (corpora + vocabulary): {setup_s:.1f} s; collating all {len(order)} batches up front:"
          f" {prebuild_s:.2f} s.\n")
    print("| variant | total (s) | per step: median [min, max] (s) |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {sum(values):.2f} | {statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}] |")
    print(f"| (collation alone, inside 'pipeline') | {sum(collate_times):.2f} |"
          f" {statistics.median(collate_times) * 1e3:.1f} ms [{min(collate_times) * 1e3:.1f},"
          f" {max(collate_times) * 1e3:.1f}] |")
    print("\n| task | steps | collation: median (ms) | step in memory: median (s) | collation / step |")
    print("|---|---:|---:|---:|---:|")
    for name, measured in per_task.items():
        declared = " (declared)" if tasks[name].spec is not None else ""
        if not measured["step"]:
            print(f"| {name}{declared} | 0 | — | — | — |")
            continue
        collate_ms, step_s = statistics.median(measured["collate"]) * 1e3, statistics.median(measured["step"])
        print(f"| {name}{declared} | {len(measured['step'])} | {collate_ms:.1f} | {step_s:.3f} |"
              f" {100 * collate_ms / 1e3 / step_s:.1f} % |")
    print(f"\nRatio time(in memory) / time(pipeline) = {ratio:.3f} (per-step pairs: median"
          f" {statistics.median(pairs):.3f}, [{min(pairs):.3f}, {max(pairs):.3f}]); target ≥ {args.min_ratio}.")
    if ratio < args.min_ratio:
        print(f"FAIL: ratio {ratio:.3f} is below {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

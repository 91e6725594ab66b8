"""Training-step speed of MultiModel: throughput, model FLOPs, MFU, where the time goes.

All figures come from one process, with the variants' repetitions interleaved so background
load hits them alike; each is a median with its [min, max] over ``--reps`` timed steps (after
warm-up steps). A step is forward + backward + gradient clipping + Adam, as in training.

1. **Per task, demo preset and a wider one.** One step of each demo task shape at batch 32
   (image classification 28×28 → 10 classes, captioning 64×64 → 38 subwords, speech
   280 log-mel frames → 30 subwords, text 15 → 14 subwords): seconds per step, examples/s,
   target tokens/s, model FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``: matmuls,
   convs and attention, forward + backward) and model FLOPs utilisation
   MFU = FLOPs per step / step time / peak float32 matmul FLOP/s, the peak measured here on a
   large square matmul at the same thread count.
2. **Where the time goes**: forward and backward time per kind of block (modality nets, conv
   blocks, attention blocks, MoE, output net + loss, optimiser), timed with module hooks: a
   forward hook pair brackets the forward, gradient hooks on a block's output and input
   bracket its backward (autograd runs the blocks in reverse order, one at a time).
3. **MultiModel vs torch.nn.Transformer** on the same text→text batch (same width, batch and
   sequence lengths, same vocabulary, label-smoothed loss, Adam): MFU of each and their ratio,
   also per interleaved pair of steps (median [min, max]).
4. **Memory and scaling**: peak resident memory (VmHWM, reset before the step) of one training
   step per demo task, and how step time and memory grow with sequence length and number of
   experts; each row runs in a fresh subprocess so earlier rows cannot inflate it.
5. **Operators** (``torch.profiler``): the operators with the most self CPU time in the first
   preset's text step, per step and as a share of the step: where to look next.
6. ``--compile``: the same step under ``torch.compile`` vs eager (not in the smoke test).

    python benchmarks/train_step.py              # everything, 2 threads (~10 minutes)
    python benchmarks/train_step.py --quick      # tiny preset, 1 timed step: smoke test
    python benchmarks/train_step.py --compile    # also torch.compile vs eager

Dimensions: B batch, S input length, T target length, D hidden size, V vocabulary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from multimodel.config import PAD_ID, ModelConfig, MoEConfig, load_config
from multimodel.data.batching import Batch, any_padding
from multimodel.layers.expert_threads import expert_threads
from multimodel.modalities.text import FIRST_PIECE_ID
from multimodel.model.multimodel import MultiModel
from multimodel.training.step import train_step

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 600
SPECS = ["audio", "class_label:10", "image", "text"]

# ----------------------------------------------------------------------------------------
# Models and batches.


def preset(name: str) -> ModelConfig:
    """'demo' = the demo preset; 'wide' = the same layout at width 512; 'tiny' = the tiny preset."""
    if name == "tiny":
        return load_config("tiny").model
    demo = load_config("demo").model
    if name == "demo":
        return demo
    if name == "wide":
        return replace(demo, hidden_size=512, num_heads=8, moe=replace(demo.moe, expert_hidden_size=1024))
    raise ValueError(f"unknown preset {name!r}: demo, wide or tiny")


def _lengths_mask(batch: int, length: int, shortest: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) right-padding mask, lengths uniform in [shortest, T], the first one full."""
    lengths = torch.randint(shortest, length + 1, (batch,), generator=g)
    lengths[0] = length
    return torch.arange(length)[None, :] < lengths[:, None]


def _ids(batch: int, length: int, shortest: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask = _lengths_mask(batch, length, shortest, g)
    return torch.randint(FIRST_PIECE_ID, VOCAB, (batch, length), generator=g).masked_fill(~mask, PAD_ID), mask


def demo_batches(batch: int, scale: float = 1.0, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Keyword arguments of ``MultiModel.forward`` for each demo task shape (random data).

    ``scale`` shrinks every length (the smoke test uses small ones)."""
    g = torch.Generator().manual_seed(seed)

    def n(x: int) -> int:
        return max(2, round(x * scale))

    side_small, side_large = max(8, n(28)), max(8, n(64))
    cap_t, cap_m = _ids(batch, n(38), n(20), g)
    sp_t, sp_m = _ids(batch, n(30), n(15), g)
    src, src_m = _ids(batch, n(15), n(8), g)
    tgt, tgt_m = _ids(batch, n(14), n(7), g)
    return {
        "classification": dict(
            inputs=torch.rand(batch, 1, side_small, side_small, generator=g), input_mask=None,
            targets=torch.randint(0, 10, (batch,), generator=g), target_mask=None,
            input_modality="image", target_modality="class_label:10", task_token=None),
        "captioning": dict(
            inputs=torch.rand(batch, 1, side_large, side_large, generator=g), input_mask=None,
            targets=cap_t, target_mask=cap_m,
            input_modality="image", target_modality="text", task_token="To-English"),
        "speech": dict(
            inputs=torch.randn(batch, n(280), 80, generator=g), input_mask=_lengths_mask(batch, n(280), n(200), g),
            targets=sp_t, target_mask=sp_m,
            input_modality="audio", target_modality="text", task_token="To-English"),
        "text": dict(
            inputs=src, input_mask=src_m, targets=tgt, target_mask=tgt_m,
            input_modality="text", target_modality="text", task_token="To-German"),
    }


def text_batch(batch: int, source: int, target: int, seed: int = 0) -> dict[str, Any]:
    """A full-length text→text batch (no padding), for the nn.Transformer comparison."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(FIRST_PIECE_ID, VOCAB, (batch, source), generator=g), input_mask=torch.ones(batch, source, dtype=torch.bool),
        targets=torch.randint(FIRST_PIECE_ID, VOCAB, (batch, target), generator=g), target_mask=torch.ones(batch, target, dtype=torch.bool),
        input_modality="text", target_modality="text", task_token="To-German")


def target_tokens(kwargs: dict[str, Any]) -> int:
    mask = kwargs["target_mask"]
    return int(kwargs["targets"].shape[0]) if mask is None else int(mask.sum())


class TransformerBaseline(nn.Module):
    """torch.nn.Transformer encoder-decoder with embeddings, sinusoidal positions and a softmax.

    Args:
        hidden_size: d_model.
        num_heads: attention heads.
        encoder_layers, decoder_layers: layers of each stack.
        vocab_size: V, shared by source and target.
        dropout: as in our model's preset.
    """

    def __init__(self, hidden_size: int, num_heads: int, encoder_layers: int, decoder_layers: int,
                 vocab_size: int, dropout: float = 0.1, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.scale = math.sqrt(hidden_size)
        self.label_smoothing = label_smoothing
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.transformer = nn.Transformer(
            hidden_size, num_heads, encoder_layers, decoder_layers, 4 * hidden_size, dropout, batch_first=True)
        self.output = nn.Linear(hidden_size, vocab_size)

    def _positions(self, length: int, like: torch.Tensor) -> torch.Tensor:
        from multimodel.layers.timing import timing_signal

        return timing_signal(length, like.shape[-1], dtype=like.dtype)  # (T, D)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ids (B, S), ids (B, T) -> label-smoothed loss; targets shifted right behind id 0."""
        src = self.embedding(inputs) * self.scale
        shifted = F.pad(targets[:, :-1], (1, 0))  # (B, T)
        tgt = self.embedding(shifted) * self.scale
        src = src + self._positions(src.shape[1], src)
        tgt = tgt + self._positions(tgt.shape[1], tgt)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        h = self.transformer(src, tgt, tgt_mask=causal, tgt_is_causal=True)  # (B, T, D)
        logits = self.output(h)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               label_smoothing=self.label_smoothing)


# ----------------------------------------------------------------------------------------
# Steps and measurements.


def with_hints(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the padding hints the collator would give (``any_padding`` of each host
    mask), for calling the model directly as the trainer's step does."""
    return {**kwargs, "input_padded": any_padding(kwargs["input_mask"]),
            "target_padded": any_padding(kwargs["target_mask"])}


def as_batch(kwargs: dict[str, Any], name: str = "benchmark") -> tuple[Batch, dict[str, Any]]:
    """A model-call dict as the trainer gets it: a Batch, with the padding hints the collator
    would set (:func:`with_hints`), and the task's keywords."""
    hinted = with_hints(kwargs)
    batch = Batch(name, *(hinted[key] for key in ("inputs", "input_mask", "targets", "target_mask")),
                  input_padded=hinted["input_padded"], target_padded=hinted["target_padded"])
    return batch, {key: kwargs[key] for key in ("input_modality", "target_modality", "task_token")}


def multimodel_step(model: MultiModel, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any],
                    grad_clip: float = 2.0) -> Callable[[], None]:
    """One training step on one batch: the trainer's own ``train_step``."""
    batch, task_kwargs = as_batch(kwargs)

    def step() -> None:
        train_step(model, optimizer, None, batch, task_kwargs, grad_clip=grad_clip)

    return step


def transformer_step(model: TransformerBaseline, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any],
                     grad_clip: float = 2.0) -> Callable[[], None]:
    def step() -> None:
        loss = model(kwargs["inputs"], kwargs["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()

    return step


def adam(model: nn.Module) -> torch.optim.Optimizer:
    """The trainer's optimiser (``training.optim.build_optimizer``: Adam, β = (0.85, 0.997),
    ε = 1e-6, fused into one kernel), for both MultiModel and nn.Transformer."""
    from multimodel.config import TrainConfig
    from multimodel.training.optim import build_optimizer

    return build_optimizer(model, TrainConfig(learning_rate=1e-4))[0]


def interleaved(steps: dict[str, Callable[[], None]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def med(times: list[float]) -> float:
    return statistics.median(times)


def spread(times: list[float], unit: float = 1.0, fmt: str = ".3f") -> str:
    """'median [min, max]' of ``times`` / unit."""
    return f"{med(times) / unit:{fmt}} [{min(times) / unit:{fmt}}, {max(times) / unit:{fmt}}]"


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of ``convolution_backward``: the input gradient and the weight gradient each cost
    what the forward conv did. (torch's own formula ignores ``groups`` and counts a depthwise
    conv's backward as a dense one: C times too many, which put MFU above 100%.)"""
    forward_out = x_shape if transposed else grad_out_shape  # (B, C_out, *spatial) of the forward conv
    forward = 2 * math.prod(forward_out) * math.prod(w_shape[1:])  # w (C_out, C_in / groups, *kernel)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def model_flops(fn: Callable[[], Any]) -> int:
    """Matmul/conv/attention FLOPs of one call (forward and backward, not the optimiser)."""
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_matmul_flops(size: int, reps: int = 15) -> tuple[float, list[float]]:
    """Best float32 FLOP/s of a (size × size) @ (size × size) matmul, and all the timings.

    The best, not the median, of many short repetitions: on a shared machine some repetitions
    lose the CPU to other processes, and the peak is what an undisturbed one achieves."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times), times


class Peak:
    """The peak matmul FLOP/s: the best measurement so far. Re-measured after each section's
    timings, since on a shared machine a single measurement can come out low."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.measurements: list[float] = []

    def update(self) -> float:
        self.measurements.append(peak_matmul_flops(self.size)[0])
        return self.value

    @property
    def value(self) -> float:
        return max(self.measurements)


def loss_only_flops(model: MultiModel, kwargs: dict[str, Any]) -> int:
    out_fn = lambda: (lambda o: (o.loss.loss + o.aux_loss).backward())(model(**with_hints(kwargs)))  # noqa: E731
    flops = model_flops(out_fn)
    model.zero_grad(set_to_none=True)
    return flops


# ----------------------------------------------------------------------------------------
# Where the time goes: forward/backward time per kind of block.

BLOCK_KINDS = ("modality nets", "conv blocks", "attention blocks", "MoE", "output net + loss", "optimiser")


class BlockTimer:
    """Times the forward and backward of labelled modules and methods of one model.

    A wrapped callable's first argument is its main input and its result (or the result's first
    element) its main output. The forward time is wall time inside the call. The backward time
    runs from the moment the output's gradient is ready to the moment the input's gradient is
    (tensor hooks); for an input that needs no gradient (raw data, ids), to the end of backward.
    """

    def __init__(self) -> None:
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self._restore: list[tuple[Any, str, Any]] = []
        self._open: dict[int, tuple[str, float]] = {}
        self._until_end: list[int] = []

    def wrap(self, label: str, owner: Any, attribute: str) -> None:
        original = getattr(owner, attribute)
        had_own = attribute in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = original(*args, **kwargs)
            self.forward[label] += time.perf_counter() - start
            out = result[0] if isinstance(result, tuple) else getattr(result, "loss", result)
            inp = args[0] if args else None
            if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
                key = id(out) ^ int(start * 1e9)
                out.register_hook(lambda grad, key=key: self._begin(key, label))
                if isinstance(inp, torch.Tensor) and inp.requires_grad:
                    inp.register_hook(lambda grad, key=key: self._finish(key))
                else:
                    self._until_end.append(key)
            return result

        setattr(owner, attribute, timed)
        self._restore.append((owner, attribute, original if had_own else None))

    def _begin(self, key: int, label: str) -> None:
        now = time.perf_counter()
        self._close_dangling(now)
        self._open[key] = (label, now)

    def _finish(self, key: int) -> None:
        now = time.perf_counter()
        if key in self._open:
            label, start = self._open.pop(key)
            self.backward[label] += now - start

    def _close_dangling(self, now: float) -> None:
        """An input without a gradient has no hook to end its block's backward: the engine runs
        one node at a time, so the next block's start is when it moved on."""
        for key in [k for k in self._until_end if k in self._open]:
            label, start = self._open.pop(key)
            self.backward[label] += now - start
            self._until_end.remove(key)

    def end_of_backward(self) -> None:
        now = time.perf_counter()
        for key in self._until_end:
            if key in self._open:
                label, start = self._open.pop(key)
                self.backward[label] += now - start
        self._until_end.clear()
        self._open.clear()

    def unwrap(self) -> None:
        for owner, attribute, original in reversed(self._restore):
            if original is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)
        self._restore.clear()


def block_breakdown(model: MultiModel, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any],
                    reps: int) -> tuple[dict[str, tuple[float, float]], float]:
    """{kind: (forward s, backward s)} per step (median-free mean over ``reps``), and step time."""
    timer = BlockTimer()
    for name, module in model.named_modules():
        kind = None
        parts = name.split(".")
        if len(parts) == 3 and parts[0] in ("encoder", "mixer") and parts[1] == "blocks":
            kind = "conv blocks"
        elif len(parts) == 4 and parts[:2] == ["decoder", "blocks"] and parts[3] == "conv":
            kind = "conv blocks"
        elif name == "mixer.attention" or (len(parts) == 4 and parts[:2] == ["decoder", "blocks"]
                                           and parts[3] == "attention"):
            kind = "attention blocks"
        elif name in ("encoder.moe", "decoder.moe"):
            kind = "MoE"
        if kind is not None:
            timer.wrap(kind, module, "forward")
    for modality in model.modalities.values():
        timer.wrap("modality nets", modality, "bottom")
        timer.wrap("modality nets", modality, "targets_bottom")
        timer.wrap("output net + loss", modality, "top")
        timer.wrap("output net + loss", modality, "loss")
    totals: dict[str, list[float]] = defaultdict(list)
    step_times = []
    try:
        for _ in range(reps + 1):
            timer.forward.clear()
            timer.backward.clear()
            start = time.perf_counter()
            out = model(**with_hints(kwargs))
            optimizer.zero_grad(set_to_none=True)
            (out.loss.loss + out.aux_loss).backward()
            timer.end_of_backward()
            opt_start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
            end = time.perf_counter()
            timer.forward["optimiser"] = end - opt_start
            step_times.append(end - start)
            for kind in BLOCK_KINDS:
                totals[kind + "/f"].append(timer.forward.get(kind, 0.0))
                totals[kind + "/b"].append(timer.backward.get(kind, 0.0))
    finally:
        timer.unwrap()
    # The first repetition warms up; average the rest.
    result = {kind: (statistics.mean(totals[kind + "/f"][1:]), statistics.mean(totals[kind + "/b"][1:]))
              for kind in BLOCK_KINDS}
    return result, statistics.mean(step_times[1:])


# ----------------------------------------------------------------------------------------
# Memory probes (each in a fresh subprocess).


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux), in MB: ``VmHWM`` is the peak resident set
    size since the last reset, ``VmRSS`` the current one. None where there is no such file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration's step time and memory, in this (fresh) process."""
    torch.set_num_threads(spec["threads"])
    cfg = preset(spec["preset"])
    if spec.get("experts"):
        cfg = replace(cfg, moe=replace(cfg.moe, num_experts=spec["experts"]))
    torch.manual_seed(0)
    model = MultiModel(cfg, VOCAB, SPECS).train()
    optimizer = adam(model)
    if spec["task"] == "text-len":
        kwargs = text_batch(spec["batch"], spec["length"], spec["length"])
    else:
        kwargs = demo_batches(spec["batch"], spec.get("scale", 1.0))[spec["task"]]
    step = multimodel_step(model, optimizer, kwargs)
    rss_before = _proc_status_mb("VmRSS")  # model, inputs, Python and torch; no gradients or Adam state yet
    reset = _reset_hwm()
    times = interleaved({"step": step}, spec["reps"], warmup=1)["step"]
    peak = _proc_status_mb("VmHWM") if reset else None
    return {"step_s": med(times), "min_s": min(times), "max_s": max(times),
            "rss_before_mb": rss_before, "peak_mb": peak}


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`run_probe` in a subprocess and return its JSON result."""
    done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True,
                          text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------
# The report.


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__},"
            f" {torch.get_num_threads()} threads, load average {load:.1f}")


def section_tasks(args: argparse.Namespace, peaks: Peak) -> None:
    print(f"\n### Per task: seconds per step, throughput, model FLOPs, MFU (batch {args.batch})\n")
    print("| preset | task | step (s) | examples/s | target tokens/s | GFLOP/step | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    batches = demo_batches(args.batch, args.scale)
    tasks = [t for t in batches if t in args.tasks]
    for name in args.presets:
        cfg = preset(name)
        torch.manual_seed(0)
        model = MultiModel(cfg, VOCAB, SPECS).train()
        optimizer = adam(model)
        steps = {t: multimodel_step(model, optimizer, batches[t]) for t in tasks}
        times = interleaved(steps, args.reps)
        peak = peaks.update()
        for t in tasks:
            flops = loss_only_flops(model, batches[t])
            s = med(times[t])
            print(f"| {name} (D={cfg.hidden_size}) | {t} | {spread(times[t])} | {args.batch / s:.0f} |"
                  f" {target_tokens(batches[t]) / s:.0f} | {flops / 1e9:.2f} | {flops / s / peak:.1%} |")
        if name == args.presets[0]:
            print(f"\n#### Where the time goes ({name} preset; mean of {args.reps} steps, seconds)\n")
            header = " | ".join(f"{k} f / b" for k in BLOCK_KINDS)
            print(f"| task | {header} | hooked sum | step |")
            print("|---|" + "---:|" * (len(BLOCK_KINDS) + 2))
            for t in tasks:
                parts, step_s = block_breakdown(model, optimizer, batches[t], args.reps)
                total = sum(f + b for f, b in parts.values())
                cells = " | ".join(f"{f:.3f} / {b:.3f}" for f, b in parts.values())
                print(f"| {t} | {cells} | {total:.3f} | {step_s:.3f} |")
            print("\n(\"hooked sum\" < \"step\": embedding of the task token, masks, the shift,"
                  " residual adds outside blocks and the autograd engine's own work.)")
        del model, optimizer, steps


def section_transformer(args: argparse.Namespace, peaks: Peak) -> None:
    S = T = args.seq
    print(f"\n### MultiModel vs torch.nn.Transformer (text→text, batch {args.batch}, S = T = {S},"
          f" vocabulary {VOCAB}, fwd + bwd + clip + Adam)\n")
    print("nn.Transformer: the same width, 8 heads (4 at D=128), feed-forward 4·D,"
          f" {args.tf_layers[0]} encoder + {args.tf_layers[1]} decoder layers, dropout 0.1."
          " MultiModel: the demo layout at that width (experts of width 2·D).\n")
    print("| D | model | step (s) | GFLOP/step | MFU | MFU ratio ours / nn.Transformer"
          " | the ratio per interleaved pair: median [min, max] |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    kwargs = text_batch(args.batch, S, T)
    for D in args.widths:
        demo = preset("demo")
        heads = 4 if D <= 128 else 8
        cfg = replace(demo, hidden_size=D, num_heads=heads, moe=replace(demo.moe, expert_hidden_size=2 * D))
        torch.manual_seed(0)
        ours = MultiModel(cfg, VOCAB, SPECS).train()
        theirs = TransformerBaseline(D, heads, args.tf_layers[0], args.tf_layers[1], VOCAB).train()
        ours_opt, theirs_opt = adam(ours), adam(theirs)
        steps = {"ours": multimodel_step(ours, ours_opt, kwargs),
                 "nn.Transformer": transformer_step(theirs, theirs_opt, kwargs)}
        times = interleaved(steps, args.reps)
        flops = {"ours": loss_only_flops(ours, kwargs),
                 "nn.Transformer": model_flops(lambda: theirs(kwargs["inputs"], kwargs["targets"]).backward())}
        theirs.zero_grad(set_to_none=True)
        peak = peaks.update()
        mfu = {k: flops[k] / med(times[k]) / peak for k in steps}
        # Each pair of steps ran back to back, so its ratio is the least touched by the VM's
        # drift over the run; the figure of record stays the ratio of the medians.
        paired = [(flops["ours"] / mine) / (flops["nn.Transformer"] / theirs)
                  for mine, theirs in zip(times["ours"], times["nn.Transformer"])]
        for k in steps:
            ratio = f"{mfu['ours'] / mfu['nn.Transformer']:.2f}" if k == "ours" else ""
            pairs = spread(paired, fmt=".2f") if k == "ours" else ""
            print(f"| {D} | {k} | {spread(times[k])} | {flops[k] / 1e9:.2f} | {mfu[k]:.1%} | {ratio} | {pairs} |")
        del ours, theirs, ours_opt, theirs_opt, steps


def section_memory(args: argparse.Namespace) -> None:
    base = {"preset": args.presets[0], "batch": args.batch, "threads": args.threads, "reps": max(2, args.reps // 2),
            "scale": args.scale}
    print(f"\n### Memory and scaling ({args.presets[0]} preset, batch {args.batch}; each row a fresh"
          " process, median of its steps)\n")
    print("'Before' is the resident size once the model and the batch exist (Python, torch, weights);"
          " 'peak' is the resident high-water mark (VmHWM, reset then) over a warm-up step and the timed"
          " steps; their difference is what training adds: activations kept for backward, gradients,"
          " Adam's two moments, and freed memory the allocator keeps.\n")
    print("| what | step (s) | RSS before (MB) | peak RSS (MB) | peak − before (MB) |")
    print("|---|---:|---:|---:|---:|")

    def row(label: str, spec: dict[str, Any]) -> None:
        r = probe({**base, **spec})
        peak = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        delta = "n/a" if r["peak_mb"] is None else f"{r['peak_mb'] - r['rss_before_mb']:.0f}"
        print(f"| {label} | {r['step_s']:.3f} [{r['min_s']:.3f}, {r['max_s']:.3f}] | {r['rss_before_mb']:.0f} |"
              f" {peak} | {delta} |")

    for task in [] if args.quick else args.tasks:  # (--quick: one probe, the experts row below)
        row(f"task {task}", {"task": task})
    for length in [] if args.quick else args.lengths:  # (--quick: the experts row covers this path)
        row(f"text S = T = {length}", {"task": "text-len", "length": length})
    for experts in args.experts:
        row(f"text S = T = {args.lengths[0]}, {experts} experts", {"task": "text-len", "length": args.lengths[0],
                                                                    "experts": experts})


def section_profile(args: argparse.Namespace, top: int = 15) -> None:
    """torch.profiler's view of the first preset's text step: the operators with the most self
    CPU time (an operator's own time, without the operators it calls)."""
    name = args.presets[0]
    task = "text" if "text" in args.tasks else args.tasks[0]
    torch.manual_seed(0)
    model = MultiModel(preset(name), VOCAB, SPECS).train()
    step = multimodel_step(model, adam(model), demo_batches(args.batch, args.scale)[task])
    step()  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.reps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\n### Operators with the most self CPU time ({name} preset, {task} step, batch {args.batch};"
          f" torch.profiler, {args.reps} step{'s' if args.reps != 1 else ''})\n")
    pool = expert_threads() is not None and model.config.moe.parallel_experts
    experts = ("`_ExpertFFN` and `_ExpertFFNBackward` (the MoE's experts) hold the matrix products"
               " their worker threads run, which the profiler does not see" if pool else
               "the MoE's expert products run on this thread and are counted as matrix products")
    print(f"Self time is an operator's own, without the operators it calls; {experts}. Shares are of all"
          " self time recorded (profiler overhead included).\n")
    print("| operator | calls per step | self ms per step | share |")
    print("|---|---:|---:|---:|")
    for e in events[:top]:
        print(f"| `{e.key}` | {e.count / args.reps:.0f} | {e.self_cpu_time_total / 1e3 / args.reps:.2f} |"
              f" {e.self_cpu_time_total / total:.1%} |")
    print(f"\nAll {len(events)} operators: {total / 1e3 / args.reps:.1f} ms of self time per step.")


def section_compile(args: argparse.Namespace) -> None:
    print(f"\n### torch.compile vs eager ({args.presets[0]} preset, batch {args.batch})\n")
    cfg = preset(args.presets[0])
    batches = demo_batches(args.batch, args.scale)
    torch.manual_seed(0)
    eager = MultiModel(cfg, VOCAB, SPECS).train()
    torch.manual_seed(0)
    compiled_model = MultiModel(cfg, VOCAB, SPECS).train()
    compiled = torch.compile(compiled_model)
    print("Inductor on CPU; the MoE's data-dependent dispatch (per-expert counts read on the host)"
          " splits the graph, so only the dense parts are fused.\n")
    print("| task | eager (s) | compiled (s) | speed-up | first compiled step (s) |")
    print("|---|---:|---:|---:|---:|")
    for t in ("text", "classification"):
        if t not in args.tasks:
            continue
        eager_step = multimodel_step(eager, adam(eager), batches[t])
        compiled_step = multimodel_step(compiled, adam(compiled_model), batches[t])  # type: ignore[arg-type]
        start = time.perf_counter()
        compiled_step()
        first = time.perf_counter() - start
        compiled_step()  # a second call may recompile (shapes marked dynamic after the first)
        times = interleaved({"eager": eager_step, "compiled": compiled_step}, args.reps)
        print(f"| {t} | {spread(times['eager'])} | {spread(times['compiled'])} |"
              f" {med(times['eager']) / med(times['compiled']):.2f}× | {first:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny preset, small inputs, 1 timed step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (--quick: 1)")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--presets", nargs="+", default=["demo", "wide"])
    parser.add_argument("--tasks", nargs="+", default=["classification", "captioning", "speech", "text"])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512], help="nn.Transformer comparison")
    parser.add_argument("--seq", type=int, default=32, help="source = target length of the comparison")
    parser.add_argument("--tf-layers", type=int, nargs=2, default=[4, 2], help="nn.Transformer enc / dec layers")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128], help="memory/scaling rows")
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 16, 64], help="memory/scaling rows")
    parser.add_argument("--matmul", type=int, default=1536, help="side of the peak-FLOP/s matmul")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile against eager")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tasks", "transformer", "memory", "profile"])
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.probe:
        print(json.dumps(run_probe(json.loads(args.probe))))
        return 0
    args.scale = 1.0
    if args.quick:
        args.reps, args.batch, args.presets, args.scale, args.threads = 1, 4, ["tiny"], 0.3, 1
        args.widths, args.seq, args.tf_layers, args.matmul = [32], 8, [1, 1], 256
        args.tasks, args.lengths, args.experts = ["classification", "text"], [8], [4]
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        peaks = Peak(args.matmul)
        peak = peaks.update()
        print("## Training step: throughput, FLOPs, MFU (benchmarks/train_step.py)\n")
        print(f"Command: `python benchmarks/train_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
              f"  \nMachine: {machine()}  \nPeak float32 matmul ({args.matmul}², best of 15): {peak / 1e9:.1f}"
              " GFLOP/s at the start, re-measured after each table's timings; a table's MFU = model FLOPs"
              " per step / step time / the best peak measured so far.  \n"
              "Optimiser: the trainer’s fused Adam (training.optim)."
              f" Timings: median [min, max] of {args.reps} interleaved steps after one warm-up step.")
        if "tasks" not in args.skip:
            section_tasks(args, peaks)
        if "transformer" not in args.skip:
            section_transformer(args, peaks)
        if "memory" not in args.skip:
            section_memory(args)
        if "profile" not in args.skip:
            section_profile(args)
        if args.compile:
            section_compile(args)
        last = peaks.update()
        print(f"\nPeak matmul measurements (GFLOP/s, in order): "
              f"{', '.join(f'{m / 1e9:.1f}' for m in peaks.measurements)}; the last one is"
              f" {last / max(peaks.measurements[:-1]):.0%} of the best before it.")
    finally:
        torch.set_num_threads(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to a trained model: wall-clock minutes until each task first reaches its target.

What a user waits for is not a step time but a model that is good enough. This script reads
the held-out scores a run logged along the way and reports, per task, the training minutes
(mid-run evaluations left out) and steps until the task's headline metric first reached its
target:

* the joint MultiModel run: ``log.jsonl``'s evaluation records (``train.eval_every``);
* the single-task baselines of that run, when given: ``multimodel experiment baselines --run RUN
  --eval-every N`` records each baseline's held-out scores every N steps with its training
  seconds (``tasks/<task>.json``, ``eval_curve``).

One joint model serves every task, so its minutes to "every task at target" is the largest of
its per-task minutes; the baselines are one model per task, trained one after another, so
theirs is the sum. Both runs must come from the same machine (the times are wall clock).

    python benchmarks/time_to_target.py --run runs/demo --baselines results/baselines
    python benchmarks/time_to_target.py --quick      # smoke test on a tiny run it trains itself

The default targets are the levels ``make demo`` reaches in its 12 minutes (docs/results.md);
``--target task=value`` changes one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from multimodel.tasks import get_task

#: Task → target of its headline metric (``Task.metrics[0]``): about what `make demo` reaches.
DEMO_TARGETS: dict[str, float] = {
    "fashion_mnist": 75.0,       # top-1 accuracy %
    "fashion_captions": 45.0,    # item F1
    "speech_numbers": 80.0,      # WER %, lower is better
    "grammar_parsing": 20.0,     # bracket F1
    "numbers_en_de": 95.0,       # BLEU
    "numbers_de_en": 95.0,
    "numbers_en_fr": 95.0,
    "numbers_fr_en": 95.0,
    "digits": 90.0,              # top-1 accuracy % (the tiny preset's image task)
}

LOWER_IS_BETTER = {"wer"}


def reached(metric: str, value: float, target: float) -> bool:
    return value <= target if metric in LOWER_IS_BETTER else value >= target


def first_reached(curve: list[dict[str, Any]], metric: str, target: float) -> dict[str, Any] | None:
    """The first point of ``curve`` (dicts with step, train_seconds, value) at ``target``."""
    for point in curve:
        if not math.isnan(point["value"]) and reached(metric, point["value"], target):
            return point
    return None


def joint_curves(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Per task: (step, training seconds, headline value) at each mid-run evaluation of ``run``,
    then at its final evaluation (``eval.json``, at the last logged step and training time)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    curves: dict[str, list[dict[str, Any]]] = {}
    logged = [r for r in records if "train_seconds" in r and r.get("event") is None]
    for record in records:
        if record.get("event") != "eval" or "train_seconds" not in record:
            continue
        for key, value in record.items():
            if not key.startswith("eval/"):
                continue
            _, task, metric = key.split("/", 2)
            if metric == get_task(task).metrics[0]:
                curves.setdefault(task, []).append(
                    {"step": record["step"], "train_seconds": record["train_seconds"], "value": value})
    if (run / "eval.json").is_file() and logged:
        last = logged[-1]
        for result in json.loads((run / "eval.json").read_text()):
            metric = get_task(result["task"]).metrics[0]
            curves.setdefault(result["task"], []).append(
                {"step": last["step"], "train_seconds": last["train_seconds"],
                 "value": result["metrics"].get(metric, math.nan)})
    return curves


def baseline_curves(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Per task: the baseline's (step, training seconds, headline value) readings, then its
    final evaluation (``eval``, at its last step and training time), as for the joint run."""
    curves = {}
    for path in sorted((out / "tasks").glob("*.json")):
        record = json.loads(path.read_text())
        metric = get_task(record["task"]).metrics[0]
        curve = [{"step": p["step"], "train_seconds": p["train_seconds"], "value": p["metrics"].get(metric, math.nan)}
                 for p in record.get("eval_curve", [])]
        if record.get("eval") and "steps" in record and "train_seconds" in record:
            curve.append({"step": record["steps"], "train_seconds": record["train_seconds"],
                          "value": record["eval"].get(metric, math.nan)})
        curves[record["task"]] = curve
    return curves


def _cell(point: dict[str, Any] | None, curve: list[dict[str, Any]], metric: str) -> str:
    if point is not None:
        return f"{point['train_seconds'] / 60:.1f} ({point['step']})"
    if not curve:
        return "not measured"
    return f"> {curve[-1]['train_seconds'] / 60:.1f} ({curve[-1]['step']}; best {_best(curve, metric):.1f})"


def _best(curve: list[dict[str, Any]], metric: str) -> float:
    values = [p["value"] for p in curve]
    return (min(values) if metric in LOWER_IS_BETTER else max(values)) if values else math.nan


def report(run: Path, baselines: Path | None, targets: dict[str, float]) -> str:
    joint = joint_curves(run)
    single = baseline_curves(baselines) if baselines is not None else {}
    tasks = [t for t in joint if t in targets]
    lines = ["| task | metric | target | MultiModel joint: minutes (step) | baseline alone: minutes (step) |",
             "|---|---|---:|---:|---:|"]
    joint_hit, single_hit = {}, {}
    for task in tasks:
        metric = get_task(task).metrics[0]
        target = targets[task]
        joint_hit[task] = first_reached(joint[task], metric, target)
        single_hit[task] = first_reached(single.get(task, []), metric, target)
        sign = "≤" if metric in LOWER_IS_BETTER else "≥"
        lines.append(f"| {task} | {metric} | {sign} {target:g} | {_cell(joint_hit[task], joint[task], metric)} |"
                     f" {_cell(single_hit[task], single.get(task, []), metric)} |")
    if tasks and all(joint_hit.values()):
        every = max(p["train_seconds"] for p in joint_hit.values() if p) / 60
        lines.append(f"\nEvery task at its target, one joint model: **{every:.1f} min**.")
    if single and tasks and all(single_hit.get(t) for t in tasks):
        total = sum(single_hit[t]["train_seconds"] for t in tasks) / 60
        lines.append(f"Every task at its target, one baseline per task trained in turn: **{total:.1f} min**.")
    lines.append("\nMinutes are training wall-clock (mid-run evaluations left out) until the first evaluation"
                 " at or past the target; \"> m (s; best v)\": not reached by the last evaluation.")
    return "\n".join(lines)


def _quick() -> str:
    """Train a tiny joint run with evaluations, and its baselines with evaluation curves."""
    from multimodel.config import load_config
    from multimodel.experiments.baselines import run_baselines
    from multimodel.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = load_config("tiny", [f"data.data_dir={str(root / 'data')!r}", "data.tasks=digits,numbers_en_de",
                                   "data.train_size=32", "data.eval_size=8", "train.steps=8", "train.eval_every=4"])
        train(cfg, root / "run", progress=False, log=lambda _m: None)
        run_baselines(root / "run", out=root / "baselines", progress=False, log=lambda _m: None, eval_every=2)
        return report(root / "run", root / "baselines", {"digits": 0.0, "numbers_en_de": 101.0})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a joint run trained with train.eval_every > 0")
    parser.add_argument("--baselines", type=Path, default=None,
                        help="its `multimodel experiment baselines --eval-every N` results directory")
    parser.add_argument("--target", action="append", default=[], metavar="TASK=VALUE",
                        help="change one task's target (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smoke test: a tiny run and its baselines")
    args = parser.parse_args(argv)
    if args.quick:
        print("## Time to target (benchmarks/time_to_target.py --quick)\n")
        print(_quick())
        return 0
    if args.run is None:
        parser.error("give --run (or --quick)")
    targets = dict(DEMO_TARGETS)
    for item in args.target:
        task, _, value = item.partition("=")
        targets[task] = float(value)
    command = " ".join(["python benchmarks/time_to_target.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"## Time to target\n\nCommand: `{command}`\n")
    print(report(args.run, args.baselines, targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

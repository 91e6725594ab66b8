"""The report of `make reproduce`: one Markdown section per question, one JSON file of every number.

``OUT/report.md`` is written to be the reproduction section of docs/results.md as it stands:
its headings start at level 2, and its figures are referenced as ``figures/reproduce/*.png``
and written to ``OUT/figures/reproduce/``, so copying ``report.md`` into docs/results.md and
``OUT/figures/reproduce/`` to docs/figures/reproduce/ keeps every link. Per question it gives
the paper's claim, our answer (generated from the numbers), the table (mean ± std over seeds
and, for every difference, its 95 % intervals paired by seed, :mod:`multimodel.experiments.statistics`),
the figures, and what would change the answer. Before the questions: the budget, the
learning-rate schedules and the blind controls; after them: adding a task, routing, compute.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from multimodel.evaluation.evaluate import BLIND_PREFIX, METRIC_LABELS
from multimodel.experiments.grid import (
    Plan,
    RunSpec,
    fmt_stat,
    headline_metric,
    matched_schedule,
    read_eval,
    results_table,
    run_seconds,
    schedule_mismatch,
    steps_table,
    summarise,
    write_json,
)
from multimodel.experiments.statistics import (
    LEVEL,
    Difference,
    better,
    describe,
    fmt_interval,
    higher_is_better,
    paired_difference,
    t_quantile,
)
from multimodel.tasks import get_task
from multimodel.tasks.task_data import describe_batch_sizes, task_batch_sizes

if TYPE_CHECKING:
    from multimodel.experiments.reproduce import Calibration, Study

FIGURES = Path("figures") / "reproduce"

#: The paper's claims, as PAPER.md cites them.
CLAIMS = {
    "rq1": "Table 2: a model trained jointly on the eight tasks is about as good as models trained on each"
           " task alone on the large tasks.",
    "rq2": "Table 2: joint training helps the small tasks (WSJ parsing per-token accuracy ~98 % jointly vs"
           " ~97 % alone).",
    "rq3": "Table 4: removing the mixture-of-experts layers or the attention blocks never helps; on"
           " translation both matter, on ImageNet they help slightly.",
    "rq4": "Table 3: parsing trained with ImageNet, and with all eight tasks, beats parsing trained alone.",
    "table1": "Table 1: the joint model comes close to, but stays below, the task-specific state of the art of"
              " 2017 (ImageNet top-5 86 % vs 95 %; WMT EN→DE BLEU 21.2 vs 26.0; EN→FR 30.5 vs 40.5).",
}

MEASURE_NAMES = {"metric": None, "token_accuracy": "per-token acc %", "log_perplexity": "log-perplexity"}


# ----------------------------------------------------------------------------------------
# Reading the runs.


def _records(out: Path, spec: RunSpec) -> dict[str, dict[str, Any]]:
    run_dir = out / "runs" / spec.name
    return read_eval(run_dir) if (run_dir / "eval.json").is_file() else {}


def values(plan: Plan, out: Path, task: str, measure: str) -> dict[str, dict[int, float]]:
    """Column → seed → the task's ``measure`` (``metric`` = its headline metric) in that run."""
    got: dict[str, dict[int, float]] = {}
    for spec in plan.specs:
        record = _records(out, spec).get(task)
        if record is None:
            continue
        if measure == "metric":
            value = record["metrics"].get(headline_metric(task, spec.cfg), math.nan)
        else:
            value = record[measure]
        got.setdefault(spec.arm.column, {})[spec.seed_index] = float(value)
    return got


def metric_of(task: str, measure: str, cfg: Any) -> str:
    """The metric name whose direction a ``measure`` of ``task`` follows."""
    return headline_metric(task, cfg) if measure == "metric" else measure


def label_of(task: str, measure: str, cfg: Any) -> str:
    metric = headline_metric(task, cfg)
    return METRIC_LABELS.get(metric, metric) if measure == "metric" else MEASURE_NAMES[measure]


def compare(plan: Plan, out: Path, task: str, a: str, b: str, measure: str = "metric") -> Difference:
    """``a − b`` (columns) for ``task``, paired by seed."""
    got = values(plan, out, task, measure)
    return paired_difference(got.get(a, {}), got.get(b, {}), metric_of(task, measure, plan.specs[0].cfg))


def _digits(measure: str) -> int:
    return 3 if measure == "log_perplexity" else 1


def _cell(v: dict[int, float], digits: int) -> str:
    return fmt_stat(describe([v[s] for s in sorted(v)]), digits) if v else "—"


def _diff_cells(d: Difference, digits: int) -> list[str]:
    if not d.values:
        return ["—", "—", "—", d.verdict]
    mean = f"{d.mean:+.{digits}f}"
    verdict = d.verdict if not d.established else f"**{d.verdict}**"
    return [mean, fmt_interval(d.t_low, d.t_high, digits), fmt_interval(d.boot_low, d.boot_high, digits), verdict]


DIFF_HEAD = f"{LEVEL:.0%} t-interval | bootstrap | verdict"


def _names(tasks: Iterable[str]) -> str:
    tasks = list(tasks)
    return ", ".join(tasks) if tasks else "none"


NOT_YET = ("*Our answer:* not yet — one seed gives no interval; the table's differences are a single draw"
           " (the report after the next seed has intervals).")


def _too_few_seeds(diffs: Iterable[Difference]) -> bool:
    return max((len(d.values) for d in diffs), default=0) < 2


def _by_verdict(diffs: dict[str, Difference]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"better": [], "worse": [], "no established difference": [], "one seed": [],
                                 "no data": []}
    for task, d in diffs.items():
        out[d.verdict].append(task)
    return out


def _improvement(d: Difference) -> tuple[float, float, float]:
    """(mean, low, high) signed so that positive = the first arm is better."""
    sign = 1.0 if higher_is_better(d.metric) else -1.0
    lo, hi = sign * d.t_low, sign * d.t_high
    return sign * d.mean, min(lo, hi), max(lo, hi)


def _at(figdir: Path | None, name: str) -> Path | None:
    """Where figure ``name`` goes; None when this report draws no figures."""
    return None if figdir is None else figdir / name


def _forest(rows: Sequence[tuple[str, Difference]], path: Path | None, title: str) -> bool:
    from multimodel.experiments.plots import plot_differences

    if path is None:
        return False
    drawn = [(label, *_improvement(d), d.established) for label, d in rows if d.values]
    if not drawn:
        return False
    plot_differences(drawn, path, title=title,
                     xlabel=f"difference in the task's metric, > 0 = better ({LEVEL:.0%} t-interval)")
    return True


def what_would_change(diffs: Sequence[tuple[str, Difference]]) -> list[str]:
    """The differences not established, grouped: one seed (no interval), identical in every
    seed, and the rest with the seeds that would establish each at its observed spread."""
    one, same, need = [], [], []
    for label, d in diffs:
        if d.established or not d.values:
            continue
        if d.verdict == "one seed":
            one.append(label)
        elif d.mean == 0.0 and d.std == 0.0:
            same.append(label)
        elif d.seeds_needed is not None:
            need.append(f"{label} (Δ {d.mean:+.2f}, std {d.std:.2f}): about {d.seeds_needed}")
        else:
            need.append(f"{label} (Δ {d.mean:+.2f}, std {d.std:.2f}): more than 100, i.e. no difference at this scale")
    lines = []
    if one:
        lines.append(f"One seed, so no interval, for {', '.join(one)}: at least 3 seeds are needed to say anything.")
    if same:
        lines.append(f"Identical in every seed, so no number of seeds would separate the arms: {', '.join(same)}.")
    if need:
        lines.append("Seeds that would establish each remaining difference if its seed-to-seed spread stayed as"
                     f" observed: {'; '.join(need)}.")
    return lines


def change_paragraph(diffs: Sequence[tuple[str, Difference]], context: str, *,
                     none: str = "every difference is established.") -> str:
    """A question's "What would change the answer" paragraph: :func:`what_would_change` (or
    ``none`` when every difference is established), then the question's ``context``."""
    change = what_would_change(diffs)
    return f"*What would change the answer:* {' '.join(change) if change else none} {context}"


# ----------------------------------------------------------------------------------------
# Blind controls.


def blind_cells(study: "Study", out: Path) -> list[dict[str, Any]]:
    """Every (run, task) evaluated: its headline metric, its blind control, and whether it beats it."""
    users: dict[str, list[str]] = {}
    specs: dict[str, RunSpec] = {}
    for key, plan in study.questions.items():
        for spec in plan.specs:
            users.setdefault(spec.name, []).append(f"{key}:{spec.arm.column}")
            specs[spec.name] = spec
    cells = []
    for name, spec in specs.items():
        for task, record in _records(out, spec).items():
            metric = headline_metric(task, spec.cfg)
            value = record["metrics"].get(metric)
            blind = record["metrics"].get(BLIND_PREFIX + metric)
            beats = None if value is None or blind is None else better(value, blind, metric)
            cells.append({"run": name, "arm": spec.arm.name, "seed_index": spec.seed_index, "task": task,
                          "metric": metric, "value": value, "blind": blind, "beats_blind": beats,
                          "used_by": sorted(set(users[name]))})
    return cells


def blind_markdown(cells: list[dict[str, Any]]) -> str:
    checked = [c for c in cells if c["beats_blind"] is not None]
    flagged = [c for c in checked if not c["beats_blind"]]
    missing = [c for c in cells if c["beats_blind"] is None]
    lines = [f"Every evaluated task of every run was scored a second time on blinded inputs (blank images,"
             f" silence, every word unknown). **{len(checked) - len(flagged)} of {len(checked)}** (run, task)"
             f" cells beat their blind control."]
    if missing:
        lines[0] += f" {len(missing)} cells had no blind control (their input modality has none)."
    if flagged:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for c in flagged:
            groups.setdefault((c["arm"], c["task"]), []).append(c)
        lines += ["", "Cells that do **not** beat their blind control, by run and task (they show no evidence that"
                  " the task learned from its input; read their numbers in the tables below as noise):", "",
                  "| run | task | metric | seeds flagged | value | blind | used by |",
                  "|---|---|---|---|---:|---:|---|"]
        for (arm, task), group in sorted(groups.items()):
            metric = group[0]["metric"]
            seeds = sorted(c["seed_index"] for c in group)
            lines.append(f"| {arm} | {task} | {METRIC_LABELS.get(metric, metric)} | {', '.join(map(str, seeds))} |"
                         f" {np.mean([c['value'] for c in group]):.1f} | {np.mean([c['blind'] for c in group]):.1f} |"
                         f" {', '.join(group[0]['used_by'])} |")
    return "\n".join(lines)


def flagged_tasks(cells: list[dict[str, Any]], plan: Plan) -> dict[tuple[str, str], int]:
    """(column, task) → number of seeds of ``plan`` at or below their blind control."""
    names = {s.name: s.arm.column for s in plan.specs}
    out: dict[tuple[str, str], int] = {}
    for c in cells:
        if c["run"] in names and c["beats_blind"] is False:
            key = (names[c["run"]], c["task"])
            out[key] = out.get(key, 0) + 1
    return out


# ----------------------------------------------------------------------------------------
# Sections.


def _figure_lines(figs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"![{alt}]({path})" for alt, path in figs] + ([""] if figs else [])


def _blind_note(flags: dict[tuple[str, str], int], tasks: Sequence[str]) -> list[str]:
    hit = [f"{task} in {col} ({n} seed{'s' if n > 1 else ''})" for (col, task), n in sorted(flags.items())
           if task in tasks]
    return [f"At or below the blind control: {', '.join(hit)}; those cells measure nothing yet."] if hit else []


def section_rq1(study: "Study", out: Path, figdir: Path | None,
                cells: list[dict[str, Any]]) -> tuple[list[str], dict]:
    plan = study.questions["rq1"]
    cfg = study.cfg
    diffs = {t: compare(plan, out, t, "joint", "single") for t in plan.tasks}
    small = small_tasks(study.sizes)
    large = [t for t in plan.tasks if t not in small]
    groups = _by_verdict(diffs)
    worse_large = [t for t in large if diffs[t].verdict == "worse"]
    seeds_done = max((len(d.values) for d in diffs.values()), default=0)
    lines = ["### RQ1: one joint model vs. each task alone (paper Table 2)", "",
             f"*Paper:* {CLAIMS['rq1']}", ""]
    if seeds_done >= 2:
        answer = (f"*Our answer* ({seeds_done} seeds, matched steps and schedules): the joint model is established"
                  f" better on {_names(groups['better'])}, established worse on {_names(groups['worse'])}; no"
                  f" established difference on {_names(groups['no established difference'])}. On the large tasks the"
                  " paper's 'about as good' " + (f"fails for {_names(worse_large)}." if worse_large else
                                                 "holds: none is established worse."))
    else:
        answer = NOT_YET
    lines += [answer, ""]
    lines += [f"| task | train examples | metric | joint | single | Δ joint − single | {DIFF_HEAD} |",
              "|---|---:|---|---:|---:|---:|---|---|---|"]
    for t in plan.tasks:
        got = values(plan, out, t, "metric")
        lines.append(f"| {t} | {study.sizes.get(t, 0):,} | {label_of(t, 'metric', cfg)} |"
                     f" {_cell(got.get('joint', {}), 1)}"
                     f" | {_cell(got.get('single', {}), 1)} | " + " | ".join(_diff_cells(diffs[t], 1)) + " |")
    lines.append("")
    lines += _blind_note(flagged_tasks(cells, plan), plan.tasks)
    figs = []
    if _forest([(f"{t} ({label_of(t, 'metric', cfg)})", diffs[t]) for t in plan.tasks],
               _at(figdir, "rq1-differences.png"),
               "joint − single, per task (> 0: joint better)"):
        figs.append(("RQ1 differences", str(FIGURES / "rq1-differences.png")))
    if _curves(plan, out, _at(figdir, "rq1-curves.png")):
        figs.append(("RQ1 learning curves", str(FIGURES / "rq1-curves.png")))
    lines += [""] + _figure_lines(figs)
    lines += [change_paragraph([(t, diffs[t]) for t in plan.tasks],
                               f"All of this is at {cfg.train.steps} joint steps"
                               f" (≈ {cfg.train.steps // max(1, len(plan.tasks))} per task) of the"
                               f" {study.preset.config} model: the paper's claim is about converged models, and"
                               " longer training could close or reverse a gap.",
                               none="every difference is established at these seeds."), ""]
    return lines, {"claim": CLAIMS["rq1"], "answer": answer, "differences": {t: d.to_json() for t, d in diffs.items()},
                   "small_tasks": small, "large_tasks": large}


def small_tasks(sizes: dict[str, int]) -> list[str]:
    """Tasks with at most half the median number of training examples (RQ2's 'small' tasks)."""
    if not sizes:
        return []
    median = float(np.median(list(sizes.values())))
    return [t for t, n in sizes.items() if n <= median / 2]


def section_rq2(study: "Study", out: Path, figdir: Path | None) -> tuple[list[str], dict]:
    plan = study.questions["rq1"]
    cfg = study.cfg
    small = small_tasks(study.sizes)
    lines = ["### RQ2: does joint training help the small tasks? (same runs as RQ1)", "",
             f"*Paper:* {CLAIMS['rq2']}", ""]
    if not small:
        answer = "*Our answer:* no task here is small next to the others (all have similar training sets)."
        return lines + [answer, ""], {"claim": CLAIMS["rq2"], "answer": answer, "small_tasks": []}
    diffs = {(t, m): compare(plan, out, t, "joint", "single", m) for t in small for m in MEASURE_NAMES}
    headline = {t: diffs[(t, "metric")] for t in small}
    helped = [t for t in small if headline[t].verdict == "better"]
    answer = (f"*Our answer:* the small tasks here ({', '.join(f'{t}: {study.sizes[t]:,} examples' for t in small)};"
              f" the median task has {int(np.median(list(study.sizes.values()))):,}) are established better jointly on"
              f" {_names(helped)} (headline metric). The paper's claim is "
              + ("supported on every small task." if len(helped) == len(small) else
                 f"supported on {_names(helped)} only." if helped else "not supported: no small task is established"
                 " better jointly.")
              + " The per-token accuracy and log-perplexity rows are the paper's own Table 2 measures.")
    if _too_few_seeds(diffs.values()):
        answer = NOT_YET
    lines += [answer, "", f"| task | measure | joint | single | Δ joint − single | {DIFF_HEAD} |",
              "|---|---|---:|---:|---:|---|---|---|"]
    for t in small:
        for m in MEASURE_NAMES:
            got = values(plan, out, t, m)
            dg = _digits(m)
            lines.append(f"| {t} | {label_of(t, m, cfg)} | {_cell(got.get('joint', {}), dg)} |"
                         f" {_cell(got.get('single', {}), dg)} | " + " | ".join(_diff_cells(diffs[(t, m)], dg)) + " |")
    lines.append("")
    lines += [change_paragraph([(f"{t} {label_of(t, m, cfg)}", d) for (t, m), d in diffs.items()],
                               "In the paper the small task profits over long training, where alone it overfits; a"
                               " longer run would show whether the gap grows.",
                               none="nothing at these seeds: every difference is established."), ""]
    return lines, {"claim": CLAIMS["rq2"], "answer": answer, "small_tasks": small,
                   "differences": {f"{t}/{m}": d.to_json() for (t, m), d in diffs.items()}}


def section_rq3(study: "Study", out: Path, figdir: Path | None,
                cells: list[dict[str, Any]]) -> tuple[list[str], dict]:
    plan = study.questions["rq3"]
    cfg = study.cfg
    ablations = [c for c in plan.columns if c != "full"]
    diffs = {(a, t): compare(plan, out, t, a, "full") for a in ablations for t in plan.tasks}
    translation = [t for t in plan.tasks if get_task(t, cfg).paper_task.startswith("WMT")]
    parts = []
    for a in ablations:
        groups = _by_verdict({t: diffs[(a, t)] for t in plan.tasks})
        helps = groups["better"]
        what = {"no-moe": "the MoE layers", "no-attention": "the attention blocks"}.get(a, a)
        parts.append(f"without {what}: worse on {_names(groups['worse'])}, better on {_names(helps)},"
                     f" no established difference on {_names(groups['no established difference'])}")
    never_helps = not any(d.verdict == "better" for d in diffs.values())
    seeds_done = max((len(d.values) for d in diffs.values()), default=0)
    answer = "*Our answer:* " + "; ".join(parts) + "." if seeds_done >= 2 else NOT_YET
    if seeds_done >= 2:
        answer += (" 'Removing either never helps' " + ("holds." if never_helps else "fails: an ablated model is"
                   " established better somewhere (above)."))
        if translation:
            hurt = {a: [t for t in translation if diffs[(a, t)].verdict == "worse"] for a in ablations}
            answer += " On translation: " + "; ".join(f"{a} is established worse on {len(hurt[a])} of"
                                                      f" {len(translation)} directions" for a in ablations) + "."
    lines = ["### RQ3: without the mixture of experts, without attention (paper Table 4)", "",
             f"*Paper:* {CLAIMS['rq3']}", "", answer, "",
             "| task | metric | full | " + " | ".join(ablations) + " | "
             + " | ".join(f"Δ {a} − full | {LEVEL:.0%} t-interval | verdict" for a in ablations) + " |",
             "|---|---|---:|" + "---:|" * len(ablations) + "---:|---|---|" * len(ablations)]
    for t in plan.tasks:
        got = values(plan, out, t, "metric")
        row = [t, label_of(t, "metric", cfg), _cell(got.get("full", {}), 1)]
        row += [_cell(got.get(a, {}), 1) for a in ablations]
        for a in ablations:
            mean, ci, _, verdict = _diff_cells(diffs[(a, t)], 1)
            row += [mean, ci, verdict]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _blind_note(flagged_tasks(cells, plan), plan.tasks)
    figs = []
    if _forest([(f"{t} — {a}", diffs[(a, t)]) for a in ablations for t in plan.tasks],
               _at(figdir, "rq3-differences.png"),
               "ablated − full, per task (> 0: the ablated model is better)"):
        figs.append(("RQ3 differences", str(FIGURES / "rq3-differences.png")))
    if _curves(plan, out, _at(figdir, "rq3-curves.png")):
        figs.append(("RQ3 learning curves", str(FIGURES / "rq3-curves.png")))
    lines += [""] + _figure_lines(figs)
    lines += [change_paragraph([(f"{t} {a}", d) for (a, t), d in diffs.items()],
                               "Without attention the decoder cannot see the input at all in this model (the"
                               " decoder reaches the encoder only through attention), so decoded tasks should fall"
                               " to their blind level there; the MoE's effect needs enough steps for the gates to"
                               " leave their zero initialisation."), ""]
    return lines, {"claim": CLAIMS["rq3"], "answer": answer,
                   "differences": {f"{a}/{t}": d.to_json() for (a, t), d in diffs.items()}}


def section_rq4(study: "Study", out: Path, figdir: Path | None, key: str,
                cells: list[dict[str, Any]]) -> tuple[list[str], dict]:
    plan = study.questions[key]
    cfg = plan.specs[0].cfg
    parsing = plan.tasks[0]
    others = [c for c in plan.columns if c != "alone"]
    diffs = {(c, m): compare(plan, out, parsing, c, "alone", m) for c in others for m in MEASURE_NAMES}
    title = ("### RQ4: does parsing gain from unrelated tasks? (paper Table 3)" if key == "rq4"
             else "### RQ4 on the real WSJ sample (ptb_parsing: the NLTK 10 % Penn Treebank sample)")
    verdicts = {c: diffs[(c, "metric")] for c in others}
    seeds_done = max((len(d.values) for d in verdicts.values()), default=0)
    if seeds_done >= 2:
        both = all(d.verdict == "better" for d in verdicts.values())
        answer = (f"*Our answer* ({parsing}, {label_of(parsing, 'metric', cfg)}): "
                  + "; ".join(f"{c} − alone = {d.mean:+.1f} ({d.verdict})" for c, d in verdicts.items())
                  + ". The paper's claim (both joint settings beat parsing alone) "
                  + ("holds." if both else "is not reproduced here."))
    else:
        answer = NOT_YET
    lines = [title, "", f"*Paper:* {CLAIMS['rq4']}", "", answer, "",
             "| measure | " + " | ".join(plan.columns) + " | "
             + " | ".join(f"Δ {c} − alone | {LEVEL:.0%} t-interval | verdict" for c in others) + " |",
             "|---|" + "---:|" * len(plan.columns) + "---:|---|---|" * len(others)]
    for m in MEASURE_NAMES:
        got = values(plan, out, parsing, m)
        dg = _digits(m)
        row = [label_of(parsing, m, cfg)] + [_cell(got.get(c, {}), dg) for c in plan.columns]
        for c in others:
            mean, ci, _, verdict = _diff_cells(diffs[(c, m)], dg)
            row += [mean, ci, verdict]
        lines.append("| " + " | ".join(row) + " |")
    steps = sorted({s.task_steps.get(parsing, 0) for s in plan.specs})
    lines += ["", f"{parsing} gets the same steps in every arm of a seed ({', '.join(map(str, steps))} over the"
              " seeds): the steps it had in the with-all run, which runs the joint run's steps."]
    lines += _blind_note(flagged_tasks(cells, plan), [parsing])
    stem = "rq4" if key == "rq4" else "rq4-wsj"
    figs = []
    if _forest([(f"{c} ({label_of(parsing, m, cfg)})", diffs[(c, m)]) for c in others for m in MEASURE_NAMES],
               _at(figdir, f"{stem}-differences.png"),
               f"{parsing}: with other tasks − alone (> 0: better with them)"):
        figs.append((f"{stem} differences", str(FIGURES / f"{stem}-differences.png")))
    if _curves(dataclasses.replace(plan, tasks=[parsing]), out, _at(figdir, f"{stem}-curves.png")):
        figs.append((f"{stem} learning curves", str(FIGURES / f"{stem}-curves.png")))
    lines += [""] + _figure_lines(figs)
    lines += [change_paragraph([(f"{c} {label_of(parsing, m, cfg)}", d) for (c, m), d in diffs.items()],
                               "The paper's effect comes from long training, where parsing alone overfits its small"
                               " treebank; these runs stop long before that."), ""]
    return lines, {"claim": CLAIMS["rq4"], "answer": answer, "parsing_task": parsing,
                   "differences": {f"{c}/{m}": d.to_json() for (c, m), d in diffs.items()}}


def section_table1(study: "Study", out: Path, figdir: Path | None) -> tuple[list[str], dict]:
    import json

    cfg = study.cfg
    mm: dict[str, dict[int, float]] = {}
    base: dict[str, dict[int, float]] = {}
    models: dict[str, str] = {}
    for i in range(study.seeds):
        path = out / "baselines" / f"s{i}" / "results.json"
        if not path.is_file():
            continue
        payload = json.loads(path.read_text())
        for task, r in payload["results"].items():
            metric = r["metric"]
            models[task] = r["baseline"]
            if r.get("multimodel"):
                mm.setdefault(task, {})[i] = float(r["multimodel"]["metrics"].get(metric, math.nan))
            base.setdefault(task, {})[i] = float(r["eval"]["metrics"].get(metric, math.nan))
    tasks = list(cfg.data.tasks)
    diffs = {t: paired_difference(mm.get(t, {}), base.get(t, {}), headline_metric(t, cfg)) for t in tasks}
    groups = _by_verdict(diffs)
    answer = (f"*Our answer:* at the joint run's steps per task, MultiModel is established better than the"
              f" task's standard baseline on {_names(groups['better'])}, established worse on"
              f" {_names(groups['worse'])},"
              f" with no established difference on {_names(groups['no established difference'])}.")
    if _too_few_seeds(diffs.values()):
        answer = NOT_YET
    lines = ["### Paper Table 1: the joint model vs. a standard single-task model per task", "",
             f"*Paper:* {CLAIMS['table1']}", "", answer, "",
             "Each baseline (`multimodel experiment baselines`) trains on the joint run's own batches of its task, as"
             " many as the task got there, with its own schedule (Adam, linear warm-up, constant rate), and is"
             " scored by the same evaluation code, decoding as the joint run did.", "",
             f"| task | baseline | metric | MultiModel (joint) | baseline | Δ MultiModel − baseline | {DIFF_HEAD} |",
             "|---|---|---|---:|---:|---:|---|---|---|"]
    for t in tasks:
        lines.append(f"| {t} | {models.get(t, '—')} | {label_of(t, 'metric', cfg)} | {_cell(mm.get(t, {}), 1)} |"
                     f" {_cell(base.get(t, {}), 1)} | " + " | ".join(_diff_cells(diffs[t], 1)) + " |")
    lines.append("")
    figs = []
    if _forest([(t, diffs[t]) for t in tasks], _at(figdir, "table1-differences.png"),
               "MultiModel − baseline, per task (> 0: MultiModel better)"):
        figs.append(("Table 1 differences", str(FIGURES / "table1-differences.png")))
    lines += _figure_lines(figs)
    lines += [change_paragraph([(t, diffs[t]) for t in tasks],
                               "The baselines are small standard models at the same steps, not the 2017 state of"
                               " the art."), ""]
    return lines, {"claim": CLAIMS["table1"], "answer": answer,
                   "differences": {t: d.to_json() for t, d in diffs.items()}}


def section_add_task(study: "Study", out: Path, figdir: Path | None,
                     cells: list[dict[str, Any]]) -> tuple[list[str], dict]:
    from multimodel.experiments import add_task

    plan = study.questions["add-task"]
    cfg = plan.specs[0].cfg
    new, old = plan.tasks[-1], plan.tasks[:-1]
    forgetting = {t: compare(plan, out, t, "after", "control") for t in old}
    learned = {m: compare(plan, out, new, "after", "scratch", m) for m in MEASURE_NAMES}
    _, extra, figures = add_task.analyse(plan, out)
    groups = _by_verdict(forgetting)
    nd = learned["metric"]
    answer = (f"*Our answer:* after adding {new}, the old tasks are established worse than the control (forgotten)"
              f" on {_names(groups['worse'])}, established better on {_names(groups['better'])}, no established"
              f" difference on {_names(groups['no established difference'])}. {new} added to the trained model vs."
              f" from scratch at the same steps: Δ {label_of(new, 'metric', cfg)} "
              + (f"{nd.mean:+.1f} ({nd.verdict})." if nd.values else "— (no data)."))
    if _too_few_seeds([*forgetting.values(), nd]):
        answer = NOT_YET
    spec = next(s for s in plan.specs if s.arm.column == "after")
    before_steps = next(s for s in plan.specs if s.arm.column == "before").cfg.train.steps
    add_steps = spec.cfg.train.steps
    lines = ["### Adding a task to a trained model (beyond the paper)", "",
             "*Question* (users of the original asked for it; the paper has no such experiment): does a task added"
             " later learn faster than from scratch, and do the old tasks suffer?", "", answer, "",
             f"`add-before` trains the {len(old)} old tasks for {before_steps} steps; `add-after`"
             " continues"
             f" from it for {add_steps} steps with {new} added ({spec.task_steps.get(new, 0)} of them on"
             f" {new} at seed 0); `add-control` continues it on the old tasks alone for the steps they got in"
             f" `add-after`; `add-scratch` trains {new} alone for its steps in `add-after`."
             " Forgetting = after − control.",
             "", f"| task | metric | before | control | after | Δ after − control | {DIFF_HEAD} |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]
    for t in old:
        got = values(plan, out, t, "metric")
        lines.append(f"| {t} | {label_of(t, 'metric', cfg)} | {_cell(got.get('before', {}), 1)} |"
                     f" {_cell(got.get('control', {}), 1)} | {_cell(got.get('after', {}), 1)} | "
                     + " | ".join(_diff_cells(forgetting[t], 1)) + " |")
    lines += ["", f"| {new} (new) | measure | after | scratch | Δ after − scratch | {DIFF_HEAD} |",
              "|---|---|---:|---:|---:|---|---|---|"]
    for m, d in learned.items():
        got = values(plan, out, new, m)
        dg = _digits(m)
        lines.append(f"| {new} | {label_of(new, m, cfg)} | {_cell(got.get('after', {}), dg)} |"
                     f" {_cell(got.get('scratch', {}), dg)} | " + " | ".join(_diff_cells(d, dg)) + " |")
    reach = extra.get("steps_to_threshold", {})
    if reach:
        lines += ["", f"Steps on {new} to reach {add_task.THRESHOLD:.0%} of the from-scratch run's final training"
                  f" per-token accuracy: added {fmt_stat(reach.get('after'), 0)}, from scratch"
                  f" {fmt_stat(reach.get('scratch'), 0)} (training log, resolution train.log_every)."]
    lines.append("")
    lines += _blind_note(flagged_tasks(cells, plan), plan.tasks)
    figs = []
    if _forest([(f"{t} forgetting", d) for t, d in forgetting.items()]
               + [(f"{new} added vs scratch ({label_of(new, m, cfg)})", d) for m, d in learned.items()],
               _at(figdir, "add-task-differences.png"), "after − control (old tasks), after − scratch (new task)"):
        figs.append(("add-task differences", str(FIGURES / "add-task-differences.png")))
    if "new_task.png" in figures and figdir is not None:
        shutil.copyfile(out / "new_task.png", _at(figdir, "add-task-new-task.png"))
        figs.append(("new task: added vs. from scratch", str(FIGURES / "add-task-new-task.png")))
    lines += [""] + _figure_lines(figs)
    lines += [change_paragraph([(f"{t} forgetting", d) for t, d in forgetting.items()]
                               + [(f"{new} {m}", d) for m, d in learned.items()],
                               "A new task sharing less with the old ones (another modality) would test forgetting"
                               f" harder than {new}."), ""]
    return lines, {"answer": answer, "forgetting": {t: d.to_json() for t, d in forgetting.items()},
                   "new_task": {m: d.to_json() for m, d in learned.items()}, "add_task": extra}


def section_routing(study: "Study", out: Path, figdir: Path | None) -> tuple[list[str], dict]:
    import json

    from multimodel.experiments.routing_analysis import LayerRouting, routing_information

    groups = {t: get_task(t, study.cfg).input_modality for t in study.cfg.data.tasks}
    per_layer: dict[str, dict[str, list[float]]] = {}
    heatmaps = []
    for i in range(study.seeds):
        name = study.joint(i).name
        path = out / "routing" / name / "routing_analysis.json"
        if not path.is_file():
            continue
        for layer in json.loads(path.read_text())["layers"]:
            slots = np.asarray([layer["token_slots"][t] for t in layer["tasks"]])  # (tasks,)
            counts = np.asarray(layer["fractions"]) * slots[:, None]  # (tasks, E)
            info = routing_information(LayerRouting(layer["layer"], layer["tasks"], counts), groups)
            stats = per_layer.setdefault(layer["layer"], {k: [] for k in ("task_information", "modality_information",
                                                                          "modality_share", "mean_js_divergence",
                                                                          "mean_entropy")})
            for k in ("task_information", "modality_information", "modality_share"):
                if info[k] is not None:
                    stats[k].append(float(info[k]))
            if layer["mean_js_divergence"] is not None:
                stats["mean_js_divergence"].append(float(layer["mean_js_divergence"]))
            stats["mean_entropy"].append(float(np.mean(list(layer["normalised_entropy"].values()))))
            if i == 0:
                fig = f"routing-{layer['layer'].replace('.', '-')}.png"
                if figdir is not None and (out / "routing" / name / fig).is_file():
                    shutil.copyfile(out / "routing" / name / fig, figdir / fig)
                    heatmaps.append((f"{layer['layer']} routing, seed 0", str(FIGURES / fig)))
    summary = {layer: {k: describe(v) for k, v in stats.items()} for layer, stats in per_layer.items()}
    lines = ["### Which experts does each task use? (beyond the paper)", "",
             "The paper reported no routing statistics. Each joint run's held-out data is routed through it in eval"
             " mode (no gating noise). With every task weighted equally: *task information* = I(expert; task) / H(task)"
             " (0 = every task routes alike, 1 = the expert alone tells the task); *modality information* ="
             " I(expert; input modality) / H(modality); *modality share* = I(expert; modality) / I(expert; task) (1 ="
             " tasks of one modality route alike: experts specialise by modality; 0 = they differ within a modality as"
             f" much as across: by task). Modalities: {', '.join(f'{t} {m}' for t, m in groups.items())}."
             " Mean ± std over seeds.", "",
             "| MoE layer | task information | modality information | modality share | mean JS divergence (bits)"
             " | mean normalised entropy | reading |", "|---|---:|---:|---:|---:|---:|---|"]
    readings = {}
    for layer, s in summary.items():
        readings[layer] = _routing_reading(s)
        lines.append(f"| {layer} | {fmt_stat(s['task_information'], 3)} | {fmt_stat(s['modality_information'], 3)} |"
                     f" {fmt_stat(s['modality_share'], 2)} | {fmt_stat(s['mean_js_divergence'], 3)} |"
                     f" {fmt_stat(s['mean_entropy'], 2)} | {readings[layer]} |")
    lines.append("")
    lines += _figure_lines(heatmaps)
    lines += ["*What would change the answer:* the gates start at zero and the balancing loss pushes towards even"
              " use, so specialisation, if any, grows with training; a longer run, or more experts per task, could"
              " move these numbers.", ""]
    return lines, {"layers": summary, "readings": readings, "modalities": groups}


def _routing_reading(s: dict[str, dict[str, Any]]) -> str:
    task_info, share = s["task_information"]["mean"], s["modality_share"]["mean"]
    if not math.isfinite(task_info):
        return "—"
    if task_info < 0.05:
        return "shared: routing barely depends on the task"
    if not math.isfinite(share):
        return "task-dependent (one modality only)"
    if share >= 0.7:
        return "specialised mostly by modality"
    if share <= 0.3:
        return "specialised by task, beyond modality"
    return "partly by modality, partly by task"


def section_schedules(study: "Study") -> tuple[list[str], dict]:
    """How closely each arm's learning rate follows the reference's at equal steps on the task."""
    rows = []
    rq1 = study.questions["rq1"]
    joint = {s.seed_index: s for s in rq1.specs if s.arm.column == "joint"}
    pairs: list[tuple[str, RunSpec, RunSpec, str]] = []
    for s in rq1.specs:
        if s.arm.column == "single" and s.seed_index == 0:
            pairs.append(("RQ1 single vs. joint", s, joint[0], s.arm.tasks[0]))
    for key in ("rq4", "rq4-wsj"):
        plan = study.questions.get(key)
        if plan is None:
            continue
        ref = next(s for s in plan.specs if s.arm.column == "with-all" and s.seed_index == 0)
        for s in plan.specs:
            if s.seed_index == 0 and s.arm.column != "with-all":
                pairs.append((f"RQ4 {s.arm.column} vs. with-all", s, ref, plan.tasks[0]))
    add = study.questions["add-task"]
    after = next(s for s in add.specs if s.arm.column == "after" and s.seed_index == 0)
    for s in add.specs:
        if s.seed_index == 0 and s.arm.column in ("control", "scratch"):
            pairs.append((f"add-task {s.arm.column} vs. after", s, after, s.arm.tasks[-1]))
    shape = "1/√step" if study.cfg.train.lr_decay == "rsqrt" else "constant"
    lines = [f"The learning rate follows each run's global step (linear warm-up, then {shape}). A run with fewer steps"
             " than its reference (a single-task run next to the joint run) would spend a larger share of its"
             " task's steps warming up, which favours the joint arm early. With matched schedules (the default) a"
             " run's warm-up is the reference's scaled by (its steps / the reference's steps); since the schedule"
             " depends only on step / warm-up, each task then meets the same learning rate after the same number"
             f" of its own steps. These runs used **{study.schedule}** schedules. Measured (seed 0, from the runs' task"
             " schedules): the mismatch = mean over the task's steps of |lr(run) / lr(reference) − 1| after equal"
             " steps on the task, and the ratio of the mean learning rate the task saw in the run to that in the"
             " reference (1 = the same), each for both choices:", "",
             "| comparison | task | steps | warm-up | mismatch, matched | mismatch, global | mean lr ratio, matched"
             " | global |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, spec, ref, task in pairs:
        glob = _with_warmup(spec, ref.cfg.train.warmup_steps)  # what schedule="global" would have run
        matched = dataclasses.replace(spec, cfg=matched_schedule(glob.cfg, ref.cfg.train.steps))
        m, g = schedule_mismatch(matched, ref, task), schedule_mismatch(glob, ref, task)
        rm, rg = _mean_lr_ratio(matched, ref, task), _mean_lr_ratio(glob, ref, task)
        rows.append({"comparison": label, "task": task, "steps": spec.cfg.train.steps,
                     "warmup": spec.cfg.train.warmup_steps, "matched": m, "global": g,
                     "mean_lr_ratio_matched": rm, "mean_lr_ratio_global": rg})
        lines.append(f"| {label} | {task} | {spec.cfg.train.steps} | {spec.cfg.train.warmup_steps} |"
                     f" {_num(100 * m, 1, ' %')} | {_num(100 * g, 1, ' %')} | {_num(rm, 2)} | {_num(rg, 2)} |")
    return lines + [""], {"schedule": study.schedule, "mismatch": rows}


def _num(value: float, digits: int, unit: str = "") -> str:
    """``value`` to ``digits`` decimals, or ``—`` when not a number (the task had no steps to compare)."""
    return f"{value:.{digits}f}{unit}" if math.isfinite(value) else "—"


def _mean_lr_ratio(spec: RunSpec, reference: RunSpec, task: str) -> float:
    """Mean learning rate over the task's steps in ``spec`` / the same in ``reference`` (common steps)."""
    from multimodel.experiments.grid import task_learning_rates

    a, b = task_learning_rates(spec, task), task_learning_rates(reference, task)
    n = min(a.size, b.size)
    return float(a[:n].mean() / b[:n].mean()) if n else math.nan


def _with_warmup(spec: RunSpec, warmup: int) -> RunSpec:
    cfg = dataclasses.replace(spec.cfg, train=dataclasses.replace(spec.cfg.train, warmup_steps=warmup))
    return dataclasses.replace(spec, cfg=cfg)


def _curves(plan: Plan, out: Path, path: Path | None) -> bool:
    from multimodel.experiments.plots import plot_learning_curves

    return path is not None and plot_learning_curves(plan, out, path) > 0


# ----------------------------------------------------------------------------------------
# The report.


def _wall_text(invocations: Sequence[dict[str, Any]]) -> str:
    """The reproduction's wall time: every invocation of the command summed (resumes included)."""
    from multimodel.experiments.reproduce import _hours

    if not invocations:
        return ""
    total = sum(float(i["seconds"]) for i in invocations)
    jobs = sorted({int(i.get("jobs", 1)) for i in invocations})
    parts = ", ".join(f"{str(i['started'])[:16].replace('T', ' ')} UTC: {_hours(float(i['seconds']))}"
                      f" ({int(i.get('jobs', 1))} at a time)" for i in invocations)
    text = f" **Wall time: {_hours(total)}**" + (f" over {len(invocations)} invocations ({parts})"
                                                 if len(invocations) > 1 else f" ({parts})")
    return text + ("; runs side by side share the machine's cores" if max(jobs) > 1 else "") + "."


def write_report(study: "Study", out: Path, status: dict[str, str], *, plan_budget: dict[str, Any],
                 calibration: "Calibration", wall_seconds: float, figures: bool = True,
                 invocations: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Write ``OUT/report.md``, ``OUT/report.json`` and (with ``figures``) ``OUT/figures/reproduce/*.png``;
    return the JSON payload. Without ``figures`` (the reports written between seeds) the report
    has every table and no figure. ``invocations``: every invocation of the command on ``OUT``
    (``started``, wall ``seconds``, ``jobs``), whose sum is the reproduction's wall time."""
    from multimodel.experiments.reproduce import _hours, _minutes, budget_markdown

    out = Path(out)
    figdir = out / FIGURES if figures else None
    if figdir is not None:
        figdir.mkdir(parents=True, exist_ok=True)
    cfg = study.cfg
    finished = [s for s in study.runs if (out / "runs" / s.name / "eval.json").is_file()]
    seconds = {s.name: run_seconds(out, s) for s in study.runs}
    spent = sum(v for v in seconds.values() if v is not None)
    cells = blind_cells(study, out)
    n_params = _parameters(out, study)

    lines = ["## Reproducing the paper's questions (`make reproduce`)", ""]
    lines += ["Command:", "", "```", study.command or f"multimodel reproduce --preset {study.preset.name}", "```", ""]
    state = ("complete" if len(finished) == len(study.runs) else
             f"**partial: {len(finished)} of {len(study.runs)} runs finished**")
    lines += [f"Preset `{study.preset.name}`: the `{study.preset.config}` model ({n_params}; hidden"
              f" {cfg.model.hidden_size}, {cfg.model.moe.num_experts} experts top-{cfg.model.moe.top_k}) on"
              f" {len(cfg.data.tasks)} tasks ({', '.join(cfg.data.tasks)}); the joint run trains"
              f" {cfg.train.steps:,} steps (mixing {cfg.train.mixing!r}, {describe_batch_sizes(task_batch_sizes(cfg))},"
              f" peak learning rate {cfg.train.learning_rate:g}, warm-up {cfg.train.warmup_steps}); {study.seeds}"
              f" seeds per arm"
              f" (seed i shifts both the initialisation and the data seed by i). {len(study.runs)} training runs,"
              f" {state}. Training + evaluation time of the finished runs: {_hours(spent)}; estimated before the"
              f" first run: {_hours(plan_budget['total_seconds'])}." + _wall_text(invocations), ""]
    n = study.seeds
    t_factor = t_quantile(0.5 + LEVEL / 2, n - 1) if n > 1 else math.nan
    t_text = (f"With {n} seeds the t-interval is wide (mean ± {t_factor:.2f} × std / √{n}):"
              " it is exact for normal per-seed differences and honest about how little a few seeds establish; the"
              " bootstrap cannot reach beyond the observed values (with 3 seeds it covers the true mean at most 75 %"
              " of the time), so it only shows the spread." if n > 1 else
              "With one seed there are no intervals: every difference is a single draw.")
    lines += [f"*How to read the tables.* Cells are mean ± sample std over seeds. Every difference is paired by seed"
              f" (seed i of both arms shares data and initialisation): Δ is the mean of the per-seed differences, with"
              f" a {LEVEL:.0%} Student-t interval (primary) and a percentile bootstrap interval (beside it). "
              + t_text + " A difference is"
              " **established** when its t-interval excludes 0; its verdict (better/worse) reads the metric's"
              " direction (lower WER and log-perplexity are better). Matched compute: every comparison gives a task"
              " the same number of optimiser steps in both arms (the compute table at the end).", ""]
    for note in study.notes:
        lines += [f"*Left out:* {note}", ""]
    if not figures:
        lines += ["*Figures* are drawn with the report written after the last seed.", ""]

    json_questions: dict[str, Any] = {}
    lines += ["### Learning-rate schedules (the warm-up confound)", ""]
    sched_lines, json_questions["schedules"] = section_schedules(study)
    lines += sched_lines
    lines += ["### Blind controls", "", blind_markdown(cells), ""]

    for key, build in (("rq1", lambda: section_rq1(study, out, figdir, cells)),
                       ("rq2", lambda: section_rq2(study, out, figdir)),
                       ("rq3", lambda: section_rq3(study, out, figdir, cells)),
                       ("rq4", lambda: section_rq4(study, out, figdir, "rq4", cells))):
        section, json_questions[key] = build()
        lines += section
    if "rq4-wsj" in study.questions:
        section, json_questions["rq4-wsj"] = section_rq4(study, out, figdir, "rq4-wsj", cells)
        lines += section
    for key, build in (("table1", lambda: section_table1(study, out, figdir)),
                       ("add-task", lambda: section_add_task(study, out, figdir, cells)),
                       ("routing", lambda: section_routing(study, out, figdir))):
        section, json_questions[key] = build()
        lines += section

    lines += ["### Compute", "", "Budget, estimated before the first run from the plan and a calibration on this"
              " machine:", "", budget_markdown(study, calibration, plan_budget), ""]
    lines += ["Optimiser steps per task in every run (the matched-compute statement) and its warm-up:", "",
              steps_table(Plan("reproduce", "", "", study.runs, [], _all_tasks(study))), ""]
    lines += ["| run | estimated min | actual min | status |", "|---|---:|---:|---|"]
    for s in study.runs:
        actual = seconds[s.name]
        lines.append(f"| {s.name} | {_minutes(plan_budget['runs'][s.name] / 60)} |"
                     f" {'—' if actual is None else _minutes(actual / 60)} | {status.get(s.name, 'not run')} |")
    lines += ["", "Each run's files (checkpoints, logs, eval.json with the blind control) are under `runs/<run>/` of"
              " the output directory (not committed: about 85 MB a run); `report.json` holds every number above.", ""]
    lines += ["### Full tables (mean ± std over seeds; all three measures of the paper's Table 2)", ""]
    for key, plan in study.questions.items():
        lines += [f"**{plan.title}**", "", results_table(plan, summarise(plan, out)), ""]

    (out / "report.md").write_text("\n".join(lines))
    payload = {
        "preset": dataclasses.asdict(study.preset), "command": study.command, "seeds": study.seeds,
        "schedule": study.schedule, "config": _config_json(cfg), "task_sizes": study.sizes,
        "runs_total": len(study.runs), "runs_finished": len(finished), "seconds_finished_runs": spent,
        "wall_seconds_this_invocation": wall_seconds, "invocations": list(invocations),
        "wall_seconds": sum(float(i["seconds"]) for i in invocations) or wall_seconds, "budget": plan_budget,
        "calibration": dataclasses.asdict(calibration), "notes": study.notes,
        "questions": json_questions, "blind_controls": cells,
        "runs": {s.name: {"arm": s.arm.name, "seed_index": s.seed_index, "tasks": list(s.arm.tasks),
                          "overrides": list(s.arm.overrides), "init_from": s.init_from, "steps": s.cfg.train.steps,
                          "warmup_steps": s.cfg.train.warmup_steps, "task_steps": s.task_steps,
                          "seconds": seconds[s.name], "status": status.get(s.name, "not run"),
                          "used_by": sorted({f"{k}:{x.arm.column}" for k, p in study.questions.items()
                                             for x in p.specs if x.name == s.name}),
                          "eval": _eval_summary(out, s)} for s in study.runs},
    }
    write_json(out / "report.json", payload)
    return payload


def _all_tasks(study: "Study") -> list[str]:
    tasks: list[str] = []
    for spec in study.runs:
        tasks += [t for t in spec.cfg.data.tasks if t not in tasks]
    return tasks


def _eval_summary(out: Path, spec: RunSpec) -> dict[str, Any] | None:
    records = _records(out, spec)
    if not records:
        return None
    return {t: {"metrics": r["metrics"], "token_accuracy": r["token_accuracy"], "log_perplexity": r["log_perplexity"],
                "num_examples": r.get("num_examples")} for t, r in records.items()}


def _config_json(cfg: Any) -> dict[str, Any]:
    from multimodel.config import to_dict

    return to_dict(cfg)


def _parameters(out: Path, study: "Study") -> str:
    """The joint model's parameter count, read from its checkpoint (when one exists)."""
    from multimodel.experiments.baselines import _count_parameters
    from multimodel.pretrained import CheckpointError, resolve_checkpoint

    try:
        n = _count_parameters(resolve_checkpoint(out / "runs" / study.joint(0).name))
    except (CheckpointError, OSError):  # not trained yet: the count is only descriptive
        return "parameters: not yet trained"
    return f"{n / 1e6:.2f}M parameters"


__all__ = ["write_report", "blind_cells", "values", "compare", "small_tasks", "what_would_change", "CLAIMS"]

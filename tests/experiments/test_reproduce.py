"""`multimodel reproduce --quick`: the whole reproduction end to end on the tiny preset, through the
code path `make reproduce` takes — shared runs, matched steps and schedules, calibration and
budget, baselines, routing, add-task with its control, the report with every section — and a
second invocation that resumes without retraining anything."""

from __future__ import annotations

import pytest

import json
import operator
from pathlib import Path

from matplotlib.image import imread

from multimodel.cli import main
from multimodel.experiments.reproduce import Job, run_jobs

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO.parent / "shared" / "corpora"

SECTIONS = ("## Reproducing the paper's questions", "### Learning-rate schedules", "### Blind controls",
            "### RQ1:", "### RQ2:", "### RQ3:", "### RQ4:", "### Paper Table 1:", "### Adding a task",
            "### Which experts", "### Compute", "### Full tables")


def strict_json(path: Path):
    def refuse(value):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


# 22 s on a quiet machine, 59 s beside a make reproduce (2026-12-01); run by `make test-slow` (CI runs both)
@pytest.mark.slow
def test_reproduce_quick_runs_every_question_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    wsj = (CORPORA / "ptb_sample" / "treebank.zip").is_file()
    args = ["reproduce", "--quick", "--out", str(out), f"data.data_dir={str(tmp_path / 'data')!r}"]
    if wsj:
        args.append(f"data.corpora_dir={str(CORPORA)!r}")
    assert main(args + ["--jobs", "2"]) == 0  # as make reproduce runs it: two runs at a time
    printed = capsys.readouterr().out
    assert "Budget (estimated before the first run)" in printed and "Estimated total:" in printed
    assert "With 2 jobs at a time" in printed
    assert "[reproduce 1/" in printed and "remaining ≈" in printed  # progress

    md = (out / "report.md").read_text()
    for heading in SECTIONS + (("### RQ4 on the real WSJ sample",) if wsj else ()):
        assert heading in md, heading
    for question in ("RQ1", "RQ3", "RQ4"):  # per question: the claim, our answer, what would change it
        part = md.split(f"### {question}:")[1].split("\n### ")[0]
        assert "*Paper:*" in part and "*Our answer" in part and "*What would change the answer:*" in part
        assert "95% t-interval" in part and "![" in part
    report = strict_json(out / "report.json")
    assert report["runs_finished"] == report["runs_total"]
    runs = report["runs"]
    per_seed = 3 + 1 + 2 + 1 + 4 + (3 if wsj else 0)  # joint+singles, ablations, with-image, add-task, WSJ
    assert len(runs) == 2 * per_seed == len(list((out / "runs").iterdir()))

    # Shared runs: RQ1's joint run is RQ3's full model and RQ4's with-all; its single parsing run is RQ4's alone.
    assert runs["joint-s0"]["used_by"] == ["rq1:joint", "rq3:full", "rq4:with-all"]
    assert runs["single-grammar_parsing-s1"]["used_by"] == ["rq1:single", "rq4:alone"]
    # Matched steps and schedules.
    joint = runs["joint-s0"]
    for task in ("digits", "grammar_parsing", "numbers_en_de"):
        single = runs[f"single-{task}-s0"]
        assert single["steps"] == max(1, joint["task_steps"][task])
        assert single["warmup_steps"] == max(1, round(joint["warmup_steps"] * single["steps"] / joint["steps"]))
    with_image = runs["grammar_parsing-with-image-s0"]
    assert with_image["task_steps"]["grammar_parsing"] == joint["task_steps"]["grammar_parsing"]
    after, control = runs["add-after-s0"], runs["add-control-s0"]
    assert control["init_from"] == "add-before" and after["init_from"] == "add-before"
    assert control["steps"] == max(1, after["steps"] - after["task_steps"]["numbers_en_de"])
    mismatch = report["questions"]["schedules"]["mismatch"]
    assert {row["comparison"] for row in mismatch} >= {"RQ1 single vs. joint", "add-task control vs. after"}

    # Statistics: every comparison has both intervals (2 seeds) and a verdict.
    q = report["questions"]
    for d in (q["rq1"]["differences"]["digits"], q["rq3"]["differences"]["no-moe/digits"],
              q["rq4"]["differences"]["with-all/metric"], q["table1"]["differences"]["numbers_en_de"],
              q["add-task"]["forgetting"]["digits"]):
        assert d["seeds"] == [0, 1] and d["t_low"] <= d["mean"] <= d["t_high"]
        assert d["verdict"] in ("better", "worse", "no established difference")
    assert q["rq2"]["small_tasks"] == ["grammar_parsing"]
    # Blind controls: one cell per (run, task), each with its verdict; the flagged ones are listed.
    cells = report["blind_controls"]
    assert len(cells) == sum(len(r["tasks"]) for r in runs.values())
    assert all(c["blind"] is not None and c["beats_blind"] in (True, False) for c in cells)
    if any(not c["beats_blind"] for c in cells):
        assert "do **not** beat their blind control" in md
    # Routing across seeds: the task/modality information of each MoE layer, mean ± std.
    encoder = q["routing"]["layers"]["encoder.moe"]
    assert encoder["task_information"]["n"] == 2 and 0.0 <= encoder["task_information"]["mean"] <= 1.0
    # Budget stated up front and kept with the report.
    assert report["budget"]["total_seconds"] > 0 and set(report["budget"]["runs"]) == set(runs)
    # Figures, all linked from the report, none blank.
    figures = sorted((out / "figures" / "reproduce").glob("*.png"))
    assert {f.stem for f in figures} >= {"rq1-differences", "rq1-curves", "rq3-differences", "rq4-differences",
                                         "table1-differences", "add-task-differences", "routing-encoder-moe"}
    for figure in figures:
        assert f"figures/reproduce/{figure.name}" in md
        assert float(imread(str(figure)).std()) > 0.01

    # Run again: everything is found finished; nothing retrains, the report is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/eval.json")}
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "[reproduce 1/" not in again and "calibrating" not in again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/eval.json")} == stamps
    again_report = strict_json(out / "report.json")
    assert again_report["runs_finished"] == len(runs)
    # The wall time counts both invocations.
    first, second = again_report["invocations"]
    assert first["jobs"] == 2 and second["jobs"] == 1 and first["seconds"] > second["seconds"] > 0
    assert again_report["wall_seconds"] == pytest.approx(first["seconds"] + second["seconds"])
    assert "over 2 invocations" in (out / "report.md").read_text()


JOBS = [Job("joint-s0", 0), Job("single-a-s0", 0), Job("add-before-s0", 0),
        Job("add-after-s0", 0, ("add-before-s0",)), Job("add-control-s0", 0, ("add-before-s0",)),
        Job("extras-s0", 0, ("joint-s0",)), Job("joint-s1", 1), Job("extras-s1", 1, ("joint-s1",))]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_starts_a_job_only_after_the_jobs_it_needs_and_runs_each_once(workers):
    started, done, results = [], set(), {}

    def on_start(job):
        assert all(name in done for name in job.after), f"{job.name} started before {job.after}"
        started.append(job.name)

    def on_done(job, result):
        done.add(job.name)
        results[job.name] = result

    # pool_work runs in spawned processes, so it must pickle: attrgetter does.
    run_jobs(JOBS, lambda job: job.name, on_done, workers=workers, on_start=on_start,
             pool_work=operator.attrgetter("name"))
    assert sorted(started) == sorted(j.name for j in JOBS) and len(started) == len(JOBS)
    assert results == {j.name: j.name for j in JOBS}
    if workers == 1:
        assert started == [j.name for j in JOBS]  # list order


def test_run_jobs_raises_a_failed_jobs_error_and_starts_nothing_after_it():
    started = []
    with pytest.raises(AttributeError, match="no_such_field"):
        run_jobs(JOBS[:4], lambda job: None, lambda job, result: None, workers=2, on_start=lambda j: started.append(j),
                 pool_work=operator.attrgetter("no_such_field"))
    assert [j.name for j in started] == ["joint-s0", "single-a-s0"]  # the first two; nothing after the failure
    with pytest.raises(RuntimeError, match="wait on each other"):
        run_jobs([Job("a", 0, ("b",)), Job("b", 0, ("a",))], lambda job: None, lambda job, result: None, workers=2)


def test_the_demo_preset_reruns_the_published_reproduction():
    """`make reproduce` trains what docs/reproduce/report.json (the published tables) recorded:
    the demo preset's later changes (cool-down, task weights) are pinned back, and options added
    since are at their defaults."""
    from multimodel.config import LEGACY_TRAIN_FIELDS, Config, to_dict
    from multimodel.experiments.reproduce import PRESETS, base_config

    published = json.loads((Path(__file__).parents[2] / "docs" / "reproduce" / "report.json").read_text())["config"]
    now, defaults = (json.loads(json.dumps(to_dict(c))) for c in (base_config(PRESETS["demo"]), Config()))
    defaults["train"].update(LEGACY_TRAIN_FIELDS)  # keys it predates whose default has changed: what it ran with
    for section in ("model", "train"):
        for key, value in now[section].items():
            expected = published[section].get(key, defaults[section][key])
            assert value == expected, f"{section}.{key}: {value!r}, published {expected!r}"
    for key in set(now["data"]) - {"data_dir", "corpora_dir"}:
        assert now["data"][key] == published["data"].get(key, defaults["data"][key]), key

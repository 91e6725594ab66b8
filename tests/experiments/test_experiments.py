"""The research-question grids end to end on the tiny preset: tables, JSON, plots, matched
compute, resumption; routing heatmaps on a synthetic pattern and on a trained run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from multimodel.cli import main
from multimodel.config import load_config
from multimodel.experiments import run_experiment
from multimodel.experiments.grid import read_eval
from multimodel.experiments.plots import plot_learning_curves
from multimodel.experiments.routing_analysis import layers_from_json, specialisation
from multimodel.experiments.transfer import default_parsing_task
from multimodel.tasks import get_task
from multimodel.training import checkpoint as ckpt
from multimodel.tasks.task_data import task_data_dir

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"
CORPORA = REPO.parent / "shared" / "corpora"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny(data_dir: Path, *overrides: str) -> list[str]:
    """Overrides making every run a few seconds: 10 steps, 8 held-out examples per task."""
    return [f"data.data_dir={str(data_dir)!r}", "train.steps=10", "train.log_every=2",
            "train.checkpoint_every=5", "data.eval_size=8", *overrides]


def quiet(_msg: str) -> None:
    pass


def strict_json(path: Path):
    def refuse(value):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_png(path: Path) -> None:
    image = imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image.std()) > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def joint_vs_single(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("jvs")
    cfg = load_config(TINY, tiny(data_dir, "data.tasks=digits,numbers_en_de"))
    plan, status = run_experiment("joint-vs-single", cfg, seeds=1, out=out, command="test", log=quiet)
    return plan, status, out


def test_joint_vs_single_writes_table_json_and_curves_with_matched_steps(joint_vs_single, tmp_path):
    plan, status, out = joint_vs_single
    assert status == {"joint-s0": "trained", "single-digits-s0": "trained", "single-numbers_en_de-s0": "trained"}
    md = (out / "results.md").read_text()
    assert "| task | measure | joint | single |" in md
    for row in ("| digits | top-1 acc % |", "| numbers_en_de | BLEU |", "| numbers_en_de | per-token acc % |",
                "| digits | log-perplexity |"):
        assert row in md
    result = strict_json(out / "results.json")
    assert set(result["summary"]) == {"joint", "single"}
    assert result["summary"]["single"]["digits"]["token_accuracy"]["n"] == 1

    # Matched compute: each single run trained exactly the steps its task had in the joint run,
    # and the joint run really consumed that many batches of each task.
    runs = result["runs"]
    joint_steps = runs["joint-s0"]["task_steps"]
    assert sum(joint_steps.values()) == 10
    streams = ckpt.read_meta(ckpt.resolve_checkpoint(out / "runs" / "joint-s0"))["streams"]
    for task in ("digits", "numbers_en_de"):
        assert streams[task]["epoch"] * 8 + streams[task]["cursor"] == joint_steps[task]
        single = runs[f"single-{task}-s0"]
        assert single["steps"] == max(1, joint_steps[task])
        assert ckpt.read_meta(ckpt.resolve_checkpoint(out / "runs" / f"single-{task}-s0"))["step"] == single["steps"]
        # Matched schedules: the single run warms up over its share of the joint run's warm-up.
        assert single["warmup_steps"] == max(1, round(runs["joint-s0"]["warmup_steps"] * single["steps"] / 10))
        # Every run is evaluated with the blind control.
        metric = "accuracy" if task == "digits" else "bleu"
        assert f"blind_{metric}" in read_eval(out / "runs" / f"single-{task}-s0")[task]["metrics"]

    assert_png(out / "curves.png")
    # Two rows of panels (loss, accuracy) × two tasks × two arms, one curve each.
    assert plot_learning_curves(plan, out, tmp_path / "again.png") == 2 * 2 * 2


def test_interrupted_grid_resumes_without_retraining_finished_runs(joint_vs_single, tmp_path):
    plan, _, original = joint_vs_single
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    finished = {name: (out / "runs" / name / "eval.json").stat().st_mtime_ns
                for name in ("single-digits-s0", "single-numbers_en_de-s0")}
    # Interrupt the joint run "after step 5": no eval, no final checkpoint, a log past step 5.
    joint = out / "runs" / "joint-s0"
    (joint / "eval.json").unlink()
    shutil.rmtree(joint / "checkpoints" / "step-0000010")
    messages: list[str] = []
    cfg = load_config(TINY, tiny(Path(plan.specs[0].cfg.data.data_dir), "data.tasks=digits,numbers_en_de"))
    _, status = run_experiment("joint-vs-single", cfg, seeds=1, out=out, log=messages.append)
    assert status == {"joint-s0": "resumed", "single-digits-s0": "done", "single-numbers_en_de-s0": "done"}
    assert any("resumed from" in m and "at step 5" in m for m in messages)
    for name, mtime in finished.items():
        assert (out / "runs" / name / "eval.json").stat().st_mtime_ns == mtime
    assert (joint / "eval.json").is_file()
    steps = [json.loads(line)["step"] for line in (joint / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 10

    # A finished run made with another config is not silently mixed in.
    changed = load_config(TINY, tiny(Path(cfg.data.data_dir), "data.tasks=digits,numbers_en_de",
                                     "model.moe.top_k=1"))
    with pytest.raises(ValueError, match="another config"):
        run_experiment("joint-vs-single", changed, seeds=1, out=out, log=quiet)


def test_analyze_routing_on_a_trained_run(joint_vs_single, tmp_path):
    _, _, out = joint_vs_single
    run = out / "runs" / "joint-s0"
    for source in ("heldout", "training"):
        dest = tmp_path / source
        assert main(["analyze-routing", str(run), "--out", str(dest), "--source", source]) == 0
        md = (dest / "routing.md").read_text()
        assert "## encoder.moe" in md and "| digits |" in md and "| numbers_en_de |" in md
        analysis = json.loads((dest / "routing_analysis.json").read_text())
        assert analysis["source"]["source"] == source
        layers = {r["layer"]: r for r in analysis["layers"]}
        # Classification skips the decoder, so only the text task reaches the decoder's MoE.
        assert layers["encoder.moe"]["tasks"] == ["digits", "numbers_en_de"]
        assert layers["decoder.moe"]["tasks"] == ["numbers_en_de"]
        for layer in layers:
            assert_png(dest / f"routing-{layer.replace('.', '-')}.png")


def test_routing_heatmap_and_summary_follow_a_synthetic_pattern(tmp_path):
    from multimodel.experiments.plots import plot_routing_heatmap

    tasks = [f"task{i}" for i in range(4)]
    counts = np.full((4, 6), 1.0)
    for i in range(4):
        counts[i, i] = 95.0  # task i sends nearly everything to expert i; experts 4, 5 barely used
    data = {t: {"encoder.moe": {"token_slots": counts[i].tolist()}} for i, t in enumerate(tasks)}
    layer = layers_from_json(data)["encoder.moe"]
    drawn = plot_routing_heatmap(layer.fractions, layer.tasks, tmp_path / "h.png", title="diagonal")
    assert drawn.shape == (4, 6)
    assert drawn.argmax(axis=1).tolist() == [0, 1, 2, 3]
    assert_png(tmp_path / "h.png")
    s = specialisation(layer)
    assert s["experts_used_by_one_task"] == {0: "task0", 1: "task1", 2: "task2", 3: "task3"}
    assert s["experts_used_by_no_task"] == [4, 5]
    assert s["mean_js_divergence"] > 0.8
    assert all(v < 0.3 for v in s["normalised_entropy"].values())

    uniform = layers_from_json({t: {"m": {"token_slots": [5.0] * 6}} for t in tasks})["m"]
    u = specialisation(uniform)
    assert u["mean_js_divergence"] == pytest.approx(0.0, abs=1e-9)
    assert all(v == pytest.approx(1.0) for v in u["normalised_entropy"].values())
    assert len(u["experts_used_by_every_task"]) == 6


def test_routing_information_separates_specialisation_by_modality_from_by_task():
    from multimodel.experiments.routing_analysis import LayerRouting, routing_information

    tasks = ["img_a", "img_b", "txt_a", "txt_b"]
    modality = {"img_a": "image", "img_b": "image", "txt_a": "text", "txt_b": "text"}
    # By modality: both image tasks use experts 0-1 alike, both text tasks experts 2-3 alike.
    by_modality = np.array([[50, 50, 0, 0], [50, 50, 0, 0], [0, 0, 50, 50], [0, 0, 50, 50]], dtype=float)
    info = routing_information(LayerRouting("m", tasks, by_modality), modality)
    assert info["task_bits"] == pytest.approx(1.0) and info["modality_bits"] == pytest.approx(1.0)
    assert info["task_information"] == pytest.approx(0.5)  # 1 bit of log2(4) = 2
    assert info["modality_information"] == pytest.approx(1.0) and info["modality_share"] == pytest.approx(1.0)
    # By task, across modalities: each modality's two tasks split the same two experts
    # between them, so the modality alone tells nothing about the expert.
    by_task = np.array([[100, 0, 0, 0], [0, 100, 0, 0], [100, 0, 0, 0], [0, 100, 0, 0]], dtype=float)
    info = routing_information(LayerRouting("m", tasks, by_task), modality)
    assert info["task_bits"] == pytest.approx(1.0) and info["modality_share"] == pytest.approx(0.0)
    # Token counts do not weigh: a task with ten times the tokens counts as one task.
    shared = np.array([[10, 10, 10, 10], [1, 1, 1, 1], [5, 5, 5, 5], [2, 2, 2, 2]], dtype=float)
    info = routing_information(LayerRouting("m", tasks, shared), modality)
    assert info["task_information"] == pytest.approx(0.0, abs=1e-12) and info["modality_share"] is None


def test_ablation_via_the_cli(data_dir, tmp_path):
    out = tmp_path / "ablation"
    args = ["experiment", "ablation", "--config", str(TINY), "--seeds", "1", "--out", str(out),
            *tiny(data_dir, "data.tasks=digits,numbers_en_de")]
    assert main(args) == 0
    md = (out / "results.md").read_text()
    assert "| task | measure | full | no-moe | no-attention |" in md
    assert "multimodel experiment ablation" in md  # the exact command is recorded
    result = strict_json(out / "results.json")
    assert {r["arm"] for r in result["runs"].values()} == {"full", "no-moe", "no-attention"}
    steps = {name: r["task_steps"] for name, r in result["runs"].items()}
    assert len({json.dumps(s, sort_keys=True) for s in steps.values()}) == 1  # same steps in every arm
    no_moe = json.loads((out / "runs" / "no-moe-s0" / "config.json").read_text())
    assert no_moe["model"]["use_moe"] is False
    assert_png(out / "curves.png")


def test_transfer_gives_parsing_the_same_steps_in_every_arm(data_dir, tmp_path):
    out = tmp_path / "transfer"
    cfg = load_config(TINY, tiny(data_dir, "data.tasks=grammar_parsing,digits"))
    plan, status = run_experiment("transfer", cfg, seeds=1, out=out, log=quiet,
                                  parsing_task="grammar_parsing", image_task="digits")
    # data.tasks holds nothing beyond the two, so 'with-all' would repeat 'with-image'.
    assert plan.columns == ["alone", "with-image"]
    assert set(status.values()) == {"trained"}
    result = strict_json(out / "results.json")
    for run in result["runs"].values():
        assert run["task_steps"]["grammar_parsing"] == 10
    assert result["runs"]["with-image-s0"]["steps"] > 10
    md = (out / "results.md").read_text()
    assert "| grammar_parsing | bracket F1 |" in md
    assert_png(out / "curves.png")
    assert plot_learning_curves(plan, out, tmp_path / "c.png") == 2 * (2 + 1)  # parsing in 2 arms, digits in 1


def test_real_corpora_may_live_in_a_separate_read_only_directory(tmp_path):
    if not (CORPORA / "ptb_sample" / "treebank.zip").is_file():
        pytest.skip("../shared/corpora not present")
    without = load_config(TINY, [f"data.data_dir={str(tmp_path)!r}"])
    assert default_parsing_task(without) == "grammar_parsing"
    with pytest.raises(FileNotFoundError, match="Penn Treebank"):
        task_data_dir(without, get_task("ptb_parsing"))
    cfg = load_config(TINY, [f"data.data_dir={str(tmp_path)!r}", f"data.corpora_dir={str(CORPORA)!r}"])
    assert task_data_dir(cfg, get_task("ptb_parsing")) == CORPORA
    assert task_data_dir(cfg, get_task("grammar_parsing")) == tmp_path  # built-ins still cache in data_dir
    assert default_parsing_task(cfg) == "ptb_parsing"


def test_add_task_reports_learning_speed_and_forgetting(data_dir, tmp_path):
    from multimodel.model.multimodel import MultiModel
    from multimodel.training.train import _init_weights_from

    out = tmp_path / "add"
    cfg = load_config(TINY, tiny(data_dir, "data.tasks=numbers_en_de,digits"))
    messages: list[str] = []
    plan, status = run_experiment("add-task", cfg, seeds=1, out=out, log=messages.append)
    assert list(status) == ["before-s0", "after-s0", "control-s0", "scratch-s0"]
    assert plan.tasks == ["numbers_en_de", "digits"]
    # The new image task's modality nets start fresh; everything else comes from 'before'.
    init = [m for m in messages if "[after-s0] initialised from" in m]
    assert init and "modalities.image" in init[0] and "modalities.class_label_10" in init[0]
    assert "modalities.text" not in init[0]
    result = strict_json(out / "results.json")
    assert result["new_task"] == "digits" and result["old_tasks"] == ["numbers_en_de"]
    after, scratch = result["runs"]["after-s0"], result["runs"]["scratch-s0"]
    assert scratch["steps"] == max(1, after["task_steps"]["digits"])
    # The control continues 'before' on the old tasks alone for the steps they had in 'after',
    # its warm-up scaled to its steps (matched schedules).
    control = result["runs"]["control-s0"]
    assert control["init_from"] == "before" and control["tasks"] == ["numbers_en_de"]
    assert control["steps"] == max(1, after["steps"] - after["task_steps"]["digits"])
    assert control["warmup_steps"] == max(1, round(after["warmup_steps"] * control["steps"] / after["steps"]))
    assert set(read_eval(out / "runs" / "control-s0")) == {"numbers_en_de"}
    assert set(read_eval(out / "runs" / "after-s0")) == {"numbers_en_de", "digits"}
    assert "numbers_en_de" in result["forgetting"]
    md = (out / "results.md").read_text()
    assert "## Old tasks: forgetting, measured against a control" in md and "steps to threshold" in md
    assert "| numbers_en_de | BLEU |" in md and "after − control" in md
    assert result["forgetting"]["numbers_en_de"]["metric_forgetting"]["n"] == 1
    assert_png(out / "new_task.png")

    # _init_weights_from: shared weights copied exactly, new modules reported as fresh.
    before = ckpt.resolve_checkpoint(out / "runs" / "before-s0")
    meta = ckpt.read_meta(before)
    model = MultiModel(cfg.model, meta["vocab_size"], sorted({*meta["modality_specs"], "image", "class_label:10"}))
    fresh = _init_weights_from(before, model)
    assert fresh and all(k.startswith(("modalities.image.", "modalities.class_label_10.")) for k in fresh)
    from safetensors.torch import load_file

    saved = load_file(str(before / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_plans_vary_seeds_and_match_compute_as_asked(data_dir):
    from multimodel.experiments import joint_vs_single

    cfg = load_config(TINY, tiny(data_dir, "data.tasks=digits,grammar_parsing"))
    plan = joint_vs_single.plan(cfg, 2, compute="total")
    assert [s.name for s in plan.specs] == ["joint-s0", "single-digits-s0", "single-grammar_parsing-s0",
                                            "joint-s1", "single-digits-s1", "single-grammar_parsing-s1"]
    assert all(s.cfg.train.steps == 10 for s in plan.specs)
    s1 = plan.specs[3].cfg
    assert (s1.train.seed, s1.data.seed) == (cfg.train.seed + 1, cfg.data.seed + 1)
    fixed = joint_vs_single.plan(cfg, 2, vary_data_seed=False).specs[3].cfg
    assert (fixed.train.seed, fixed.data.seed) == (cfg.train.seed + 1, cfg.data.seed)
    matched = joint_vs_single.plan(cfg, 1)
    glob = joint_vs_single.plan(cfg, 1, schedule="global")
    for m, g in zip(matched.specs[1:], glob.specs[1:]):
        assert g.cfg.train.warmup_steps == cfg.train.warmup_steps
        assert m.cfg.train.warmup_steps == max(1, round(cfg.train.warmup_steps * m.cfg.train.steps / 10))
    with pytest.raises(ValueError, match="schedule must be one of"):
        joint_vs_single.plan(cfg, 1, schedule="warm")
    with pytest.raises(ValueError, match="takes no option compute"):
        run_experiment("ablation", cfg, seeds=1, out=Path(data_dir) / "unused", log=quiet, compute="total")


@pytest.mark.parametrize("decay, last, gain", [("rsqrt", 0.02, 0.5), ("none", 0.03, 0.75)])
def test_matched_schedules_include_the_cooldown(data_dir, decay, last, gain):
    """With a cool-down, a single-task arm's rates still follow the joint run's by the task's own
    steps; the task's last step in each arm trains at nearly zero. A constant rate differs only in
    its warm-up, so matching gains less there than under noam."""
    from multimodel.experiments import joint_vs_single
    from multimodel.experiments.grid import schedule_mismatch, task_learning_rates

    cfg = load_config(TINY, tiny(data_dir, "data.tasks=digits,grammar_parsing", "train.steps=400",
                                 "train.warmup_steps=40", "train.cooldown_fraction=0.25", f"train.lr_decay={decay}"))
    joint, single = joint_vs_single.plan(cfg, 1).specs[:2]
    rates = task_learning_rates(single, "digits")
    # The single arm's ~190 steps end with ~47 of cool-down: its last step trains at ~1/47 of the
    # constant rate's peak, and at less than that under noam, whose rate has fallen by then.
    assert rates[-1] < last * rates.max() and task_learning_rates(joint, "digits")[-1] < 0.05 * rates.max()
    glob = joint_vs_single.plan(cfg, 1, schedule="global").specs[1]
    assert schedule_mismatch(single, joint, "digits") < gain * schedule_mismatch(glob, joint, "digits")

"""Single-task baselines (paper Table 1's comparison): every catalogue entry builds, trains and
respects causality and padding; `multimodel experiment baselines` runs end to end on a tiny run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from multimodel.baselines import BASELINES, BaselineConfig, build_baseline
from multimodel.cli import main
from multimodel.config import apply_overrides, load_config
from multimodel.experiments.baselines import (baseline_config, over_training_curves, read_run, run_evaluations,
                                              train_baseline)
from multimodel.experiments.grid import mixing_of, schedule
from multimodel.model.decoding import length_penalty_factor
from multimodel.training import checkpoint as ckpt
from multimodel.training.run import train_and_evaluate
from multimodel.training.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"

V = 40  # vocabulary of the unit tests
EOS = 1


def tiny_config(**changes) -> BaselineConfig:
    settings = dict(hidden_size=16, num_heads=4, encoder_layers=1, decoder_layers=1, dropout=0.0,
                    classifier_channels=(4, 8), classifier_hidden_size=16, image_channels=(4,), audio_mels=12,
                    max_target_length=24, label_smoothing=0.1)
    settings.update(changes)
    return BaselineConfig(**settings)


def example_inputs(kind: str, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
    """(inputs, mask, shape of one example) for an input modality kind; rows shorter to the end."""
    if kind == "image":
        return torch.rand(batch, 1, 8, 8, generator=g), None, (1, 8, 8)
    lengths = torch.arange(batch, 0, -1) * 3 + 2  # (B,) all different, the last row shortest
    T = int(lengths.max())
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    if kind == "text":
        return torch.randint(3, V, (batch, T), generator=g) * mask, mask, (T,)
    if kind == "audio":
        frames = torch.randn(batch, T, 12, generator=g) * mask[..., None]
        return frames, mask, (T, 12)
    raise KeyError(f"no example inputs for input kind {kind!r}: add them here")


def example_targets(kind: str, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind == "class_label":
        return torch.randint(0, 5, (batch,), generator=g), None
    lengths = torch.arange(batch) + 3  # (B,) the first row shortest
    T = int(lengths.max())
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ids = torch.randint(3, V, (batch, T), generator=g)
    ids[torch.arange(batch), lengths - 1] = EOS
    return ids * mask, mask


def spec(kind: str) -> str:
    return "class_label:5" if kind == "class_label" else kind


ENTRIES = sorted(BASELINES)
SEQ2SEQ = [e for e in ENTRIES if e[1] == "text"]


def make(entry, batch=3, seed=0, **changes):
    g = torch.Generator().manual_seed(seed)
    inputs, mask, shape = example_inputs(entry[0], batch, g)
    targets, target_mask = example_targets(entry[1], batch, g)
    torch.manual_seed(seed)
    model = build_baseline(spec(entry[0]), spec(entry[1]), tiny_config(**changes), V, shape)
    return model, inputs, mask, targets, target_mask


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{a}-{b}" for a, b in ENTRIES])
def test_every_baseline_runs_forward_and_backward_with_gradients_everywhere(entry):
    model, inputs, mask, targets, target_mask = make(entry)
    out = model(inputs, mask, targets, target_mask, input_modality=spec(entry[0]), target_modality=spec(entry[1]),
                task_token=None)
    expected = (3, 5) if entry[1] == "class_label" else (*targets.shape, V)
    assert out.logits.shape == expected
    assert torch.isfinite(out.loss.loss)
    real = targets.numel() if target_mask is None else int(target_mask.sum())
    assert float(out.loss.count) == real  # padded target positions are not scored
    out.loss.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("entry", SEQ2SEQ, ids=[f"{a}-{b}" for a, b in SEQ2SEQ])
def test_seq2seq_baselines_are_causal(entry):
    model, inputs, mask, targets, target_mask = make(entry)
    model.eval()
    k = 1
    changed = targets.clone()
    changed[:, k] = (changed[:, k] + 7) % (V - 3) + 3
    with torch.no_grad():
        a = model(inputs, mask, targets, target_mask).logits
        b = model(inputs, mask, changed, target_mask).logits
    torch.testing.assert_close(a[:, : k + 1], b[:, : k + 1])  # positions up to k never see target k
    assert (a[:, k + 1 :] - b[:, k + 1 :]).abs().max() > 1e-4  # later ones do


@pytest.mark.parametrize("entry", SEQ2SEQ, ids=[f"{a}-{b}" for a, b in SEQ2SEQ])
def test_an_example_alone_equals_the_same_example_in_a_padded_batch(entry):
    model, inputs, mask, targets, target_mask = make(entry)
    model.eval()
    last = inputs.shape[0] - 1  # the shortest input, padded in the batch
    n_in = int(mask[last].sum()) if mask is not None else inputs.shape[-1]
    alone_inputs = inputs[last : last + 1, :n_in] if mask is not None else inputs[last : last + 1]
    n_out = int(target_mask[last].sum())
    with torch.no_grad():
        batched = model(inputs, mask, targets, target_mask).logits[last, :n_out]
        alone = model(alone_inputs, None, targets[last : last + 1, :n_out], None).logits[0]
        for beam_size in (1, 3):
            texts_batched = model.generate(inputs, mask, max_length=8, beam_size=beam_size)[last]
            texts_alone = model.generate(alone_inputs, None, max_length=8, beam_size=beam_size)[0]
            assert texts_batched == texts_alone, beam_size
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def _naive_beam_search(model, row_in, beam_size: int, max_length: int, alpha: float) -> list[int]:
    """Beam search for one example, written plainly: every hypothesis is scored by a fresh
    teacher-forced pass, candidates are sorted in Python. The rules of
    :func:`multimodel.model.decoding.search_beams`: the best 2K extensions of the live beams;
    those ending in EOS are finished (score log p / lp(len with EOS)), the best K others live
    on; stop when no live beam can still beat the best finished one."""
    alive, finished = [([], 0.0)], []
    for t in range(max_length):
        candidates = []
        for tokens, logp in alive:
            placeholder = torch.tensor([tokens + [EOS]])  # its last position predicts the next token
            next_logp = model(row_in, None, placeholder, None).logits[0, -1].log_softmax(-1).tolist()
            candidates += [(logp + lv, tokens, v) for v, lv in enumerate(next_logp)]
        best = sorted(candidates, key=lambda c: -c[0])[: 2 * beam_size]
        penalty = length_penalty_factor(t + 1, alpha)
        finished = sorted(finished + [(lp / penalty, tokens) for lp, tokens, v in best if v == EOS],
                          key=lambda f: -f[0])[:beam_size]
        alive = [(tokens + [v], lp) for lp, tokens, v in best if v != EOS][:beam_size]
        if finished and finished[0][0] >= max(lp for _, lp in alive) / length_penalty_factor(max_length, alpha):
            break
    return finished[0][1] if finished else max(alive, key=lambda a: a[1])[0]


@pytest.mark.parametrize("entry", SEQ2SEQ, ids=[f"{a}-{b}" for a, b in SEQ2SEQ])
@pytest.mark.parametrize("eos_bias", [0.0, 0.5])  # the second makes EOS likelier: beams end at several lengths
def test_beam_search_equals_a_naive_beam_search(entry, eos_bias):
    model, inputs, mask, *_ = make(entry, batch=4, seed=3)
    model.eval()
    with torch.no_grad():
        model.output.bias[EOS] += eos_bias
        beam = model.generate(inputs, mask, max_length=6, beam_size=3, length_penalty=0.6)
        assert len(beam) == 4 and all(EOS not in ids and len(ids) <= 6 for ids in beam)
        for i in range(4):
            row_in = inputs[i : i + 1] if mask is None else inputs[i : i + 1, : int(mask[i].sum())]
            assert beam[i] == _naive_beam_search(model, row_in, 3, 6, 0.6), i
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(inputs, mask, max_length=6, beam_size=0)


@pytest.mark.parametrize("entry", SEQ2SEQ, ids=[f"{a}-{b}" for a, b in SEQ2SEQ])
def test_greedy_decoding_follows_the_teacher_forced_argmax(entry):
    model, inputs, mask, *_ = make(entry)
    model.eval()
    with torch.no_grad():
        decoded = model.generate(inputs, mask, max_length=6)
        for i, ids in enumerate(decoded):
            row_in = inputs[i : i + 1] if mask is None else inputs[i : i + 1, : int(mask[i].sum())]
            full = torch.tensor([ids + [EOS]]) if len(ids) < 6 else torch.tensor([ids])
            argmax = model(row_in, None, full, None).logits[0].argmax(-1).tolist()
            assert argmax[: len(ids)] == ids


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{a}-{b}" for a, b in ENTRIES])
def test_loss_drops_when_overfitting_one_batch(entry):
    model, inputs, mask, targets, target_mask = make(entry, batch=4, classifier_dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model(inputs, mask, targets, target_mask).loss.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_speech_baseline_takes_waveforms_as_well_as_log_mel_frames():
    model = build_baseline("audio", "text", tiny_config(), V, (1600,)).eval()
    wave = torch.randn(2, 1600)
    mask = torch.ones(2, 1600, dtype=torch.bool)
    mask[1, 800:] = False
    targets, target_mask = example_targets("text", 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = model(wave, mask, targets, target_mask).logits[1, :4]
        alone = model(wave[1:, :800], None, targets[1:, :4], None).logits[0]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_baselines_are_chosen_by_modalities_and_refuse_unknown_pairs():
    cfg = tiny_config()
    assert type(build_baseline("image", "class_label:3", cfg, V, (3, 8, 8))).__name__ == "ImageClassifierCNN"
    assert type(build_baseline("image", "text", cfg, V, (1, 8, 8))).__name__ == "Seq2SeqTransformer"
    with pytest.raises(ValueError, match="no baseline for text → class_label:2"):
        build_baseline("text", "class_label:2", cfg, V, (5,))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(hidden_size=18)
    classifier = build_baseline("image", "class_label:3", cfg, V, (1, 8, 8))
    with pytest.raises(ValueError, match="takes images"):
        classifier(torch.zeros(2, 1, 10, 10), None, torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------------------
# The command, end to end on a tiny MultiModel run.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 10-step tiny run on digits (batches of 12) + numbers_en_de (the preset's 8), interrupted
    at step 6 and resumed."""
    root = tmp_path_factory.mktemp("baselines")
    overrides = [f"data.data_dir={str(root / 'data')!r}", "data.tasks=digits,numbers_en_de", "train.steps=10",
                 "train.log_every=2", "train.checkpoint_every=5", "data.eval_size=8",
                 "data.task_batch_sizes={'digits': 12}"]
    cfg = load_config(TINY, overrides)
    run = root / "run"
    quiet = lambda _msg: None  # noqa: E731
    train(cfg, run, log=quiet, progress=False, stop_after=6)
    train_and_evaluate(cfg, run, resume=True, progress=False, log=quiet)
    return root, run


def test_the_run_counts_the_batches_of_each_task_across_a_resume(tiny_run):
    _, run = tiny_run
    meta = ckpt.read_meta(ckpt.resolve_checkpoint(run))
    info = read_run(run)
    order = schedule(mixing_of(info.cfg), info.cfg.data.seed, 10)
    assert meta["task_steps"] == {t: order.count(t) for t in ("digits", "numbers_en_de")}
    assert sum(meta["task_steps"].values()) == 10
    last = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 10 and last["task_steps/digits"] == meta["task_steps"]["digits"]


def test_baselines_command_writes_the_table_with_the_runs_steps(tiny_run, capsys, monkeypatch):
    root, run = tiny_run
    out = root / "out"
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(out), "--no-progress",
                 "--learning-rate", "2e-3"]) == 0
    md = (out / "results.md").read_text()
    assert "| task | metric | MultiModel (run) | baseline | steps |" in md
    result = json.loads((out / "results.json").read_text())
    steps = ckpt.read_meta(ckpt.resolve_checkpoint(run))["task_steps"]
    run_eval = {r["task"]: r for r in json.loads((run / "eval.json").read_text())}
    for task, label in (("digits", "top-1 acc %"), ("numbers_en_de", "BLEU")):
        r = result["results"][task]
        assert r["steps"] == steps[task]
        assert r["eval"]["num_examples"] == run_eval[task]["num_examples"] == 8
        metric = r["eval"]["metrics"]
        assert (task == "digits") == ("accuracy" in metric)
        mm = run_eval[task]["metrics"]["accuracy" if task == "digits" else "bleu"]
        assert f"| {task} | {label} | {mm:.1f} |" in md
        assert f" | {steps[task]} |" in md
    assert result["baseline_config"]["hidden_size"] == 32  # the tiny run's width
    assert "counted by the run" in result["steps_source"]
    assert result["batch_sizes"] == {"digits": 12, "numbers_en_de": 8}
    assert "(batches digits 12, numbers_en_de 8; data seed" in md
    assert result["baseline_beam_size"] == result["run_beam_size"] == 4  # decoded as the run: TrainConfig's beam
    assert "beam search of 4 as the run" in md

    # Re-running reuses finished tasks; --steps and a comma-separated --tasks change the plan.
    capsys.readouterr()
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(out), "--no-progress",
                 "--learning-rate", "2e-3"]) == 0
    assert capsys.readouterr().out.count("reused") == 2
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(root / "three"), "--no-progress",
                 "--steps", "3", "--tasks", "digits,numbers_en_de"]) == 0
    three = json.loads((root / "three" / "results.json").read_text())
    assert {t: r["steps"] for t, r in three["results"].items()} == {"digits": 3, "numbers_en_de": 3}
    # A run decoded with another beam: its records are scored again, not reused.
    from multimodel.experiments import baselines as module

    def greedy_run(*args, **kwargs):
        info = read_run(*args, **kwargs)
        return dataclasses.replace(info, cfg=apply_overrides(info.cfg, ["train.beam_size=1"]))

    monkeypatch.setattr(module, "read_run", greedy_run)
    capsys.readouterr()
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(root / "three"), "--no-progress",
                 "--steps", "3", "--tasks", "digits,numbers_en_de"]) == 0
    assert capsys.readouterr().out.count("reused") == 0
    # Records written before the key named the decoding were greedy: a greedy run reuses them.
    record = root / "three" / "tasks" / "digits.json"
    saved = json.loads(record.read_text())
    del saved["key"]["decoding"]
    del saved["key"]["baseline"]["audio_normalize"]  # ... and before speech features could be normalised
    record.write_text(json.dumps(saved))
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(root / "three"), "--no-progress",
                 "--steps", "3", "--tasks", "digits,numbers_en_de"]) == 0
    assert capsys.readouterr().out.count("reused") == 2
    assert "greedy decoding, as the run" in (root / "three" / "results.md").read_text()


def test_each_baseline_trains_on_its_tasks_batch_size(tiny_run, tmp_path, monkeypatch):
    """The run's data.task_batch_sizes reach the baselines' data streams."""
    from multimodel.experiments import baselines as module

    sizes = {}

    class Recording(module.TaskStream):
        def next_batch(self):
            batch = super().next_batch()
            sizes.setdefault(self.task_name, set()).add(batch.size)
            return batch

    monkeypatch.setattr(module, "TaskStream", Recording)
    _, run = tiny_run
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(tmp_path / "out"), "--no-progress",
                 "--steps", "2"]) == 0
    assert sizes == {"digits": {12}, "numbers_en_de": {8}}

    # A run on 2 ranks drew twice as many examples per batch: the baselines train on those.
    meta_path = ckpt.resolve_checkpoint(run) / "meta.json"
    original = meta_path.read_text()
    meta_path.write_text(json.dumps({**json.loads(original), "world_size": 2}))
    sizes.clear()
    try:
        assert main(["experiment", "baselines", "--run", str(run), "--out", str(tmp_path / "two"), "--no-progress",
                     "--steps", "2"]) == 0
    finally:
        meta_path.write_text(original)  # byte for byte: the checkpoint's manifest must still hold
    assert sizes == {"digits": {24}, "numbers_en_de": {16}}
    payload = json.loads((tmp_path / "two" / "results.json").read_text())
    assert payload["batch_sizes"] == {"digits": 24, "numbers_en_de": 16} and payload["run_world_size"] == 2
    assert "over the run's 2 ranks" in (tmp_path / "two" / "results.md").read_text()


def test_the_data_fingerprint_changes_with_any_target_and_reads_lazy_examples_without_decoding():
    from types import SimpleNamespace

    from multimodel.data.example import Example, LazyExamples
    from multimodel.experiments.baselines import data_fingerprint

    def examples(targets):
        return [Example(inputs=f"x{i}", target=t) for i, t in enumerate(targets)]

    base = data_fingerprint(SimpleNamespace(train=examples(["a", "b", "c"]), test=examples(["d"])))
    assert base == data_fingerprint(SimpleNamespace(train=examples(["a", "b", "c"]), test=examples(["d"])))
    assert base != data_fingerprint(SimpleNamespace(train=examples(["a", "b", "C"]), test=examples(["d"])))
    assert base != data_fingerprint(SimpleNamespace(train=examples(["a", "b", "c"]), test=examples(["d", "e"])))

    def decode(_i):
        raise AssertionError("the fingerprint decoded an input")

    light = examples(["a", "b", "c"])
    lazy = LazyExamples(3, decode, peek=light.__getitem__)
    assert data_fingerprint(SimpleNamespace(train=lazy, test=examples(["d"]))) == base


def test_old_runs_without_step_counts_get_them_from_the_task_schedule(tiny_run, tmp_path):
    _, run = tiny_run
    counted = read_run(run)
    meta_path = ckpt.resolve_checkpoint(run) / "meta.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    del meta["task_steps"]
    meta_path.write_text(json.dumps(meta))
    try:
        recomputed = read_run(run)
    finally:
        meta_path.write_text(original)  # byte for byte: the checkpoint's manifest must still hold
    assert recomputed.task_steps == counted.task_steps
    assert "recomputed" in recomputed.steps_source


def test_baselines_are_scored_at_the_runs_own_evaluation_steps_and_tabulated_beside_them(tmp_path, capsys):
    """--match-run-evals: each baseline is scored after exactly as many steps on its task as the
    run had had at each of its evaluations while training, and results.md sets the two side by side."""
    overrides = [f"data.data_dir={str(tmp_path / 'data')!r}", "data.tasks=digits,numbers_en_de", "train.steps=14",
                 "train.log_every=3", "train.eval_every=4", "data.eval_size=8"]
    cfg = load_config(TINY, overrides)
    run = tmp_path / "run"
    train_and_evaluate(cfg, run, progress=False, log=lambda _msg: None)
    info = read_run(run)
    order = schedule(mixing_of(info.cfg), info.cfg.data.seed, 14)
    for task in ("digits", "numbers_en_de"):
        assert [p["step"] for p in info.curve[task]] == [4, 8, 12]
        assert [p["task_steps"] for p in info.curve[task]] == [order[:s].count(task) for s in (4, 8, 12)]
    # Steps 4 and 8 are not log lines (every 3): their counts come from the task schedule, and
    # they equal what the log says where it has them (step 12).
    logged_12 = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
                 if json.loads(line).get("step") == 12 and "task_steps/digits" in line][-1]
    assert info.curve["digits"][-1]["task_steps"] == logged_12["task_steps/digits"]

    out = tmp_path / "out"
    assert main(["experiment", "baselines", "--run", str(run), "--out", str(out), "--no-progress",
                 "--match-run-evals"]) == 0
    payload = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert "| task | metric | run step | steps on the task | MultiModel | baseline |" in md
    for task, metric in (("digits", "accuracy"), ("numbers_en_de", "bleu")):
        record = payload["results"][task]
        wanted = sorted({p["task_steps"] for p in info.curve[task] if 0 < p["task_steps"] <= record["steps"]})
        assert [p["step"] for p in record["eval_curve"]] == wanted
        for point in info.curve[task]:
            if point["task_steps"] in wanted:
                baseline = next(p for p in record["eval_curve"] if p["step"] == point["task_steps"])
                assert (f"| {task} | {'top-1 acc %' if task == 'digits' else 'BLEU'} | {point['step']} |"
                        f" {point['task_steps']} | {point['metrics'][metric]:.1f} |"
                        f" {baseline['metrics'][metric]:.1f} |") in md
    assert payload["run_curve"]["digits"] == info.curve["digits"]
    assert "--match-run-evals" in payload["command"]
    # The figure draws the same points: the run's by its steps on the task, the baseline's by its own.
    panels = over_training_curves(payload)
    assert [(title, ylabel) for title, ylabel, _ in panels] == [("digits", "top-1 acc %"), ("numbers_en_de", "BLEU")]
    joint, alone = panels[0][2].values()
    assert list(joint[0]) == [p["task_steps"] for p in info.curve["digits"]]
    assert list(joint[1]) == [p["metrics"]["accuracy"] for p in info.curve["digits"]]
    assert list(alone[0]) == [p["step"] for p in payload["results"]["digits"]["eval_curve"]]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matching_the_runs_evaluations_needs_a_run_that_evaluated_while_training(tiny_run, capsys):
    root, run = tiny_run
    assert read_run(run).curve == {}
    code = main(["experiment", "baselines", "--run", str(run), "--out", str(root / "m"), "--match-run-evals"])
    assert code == 2
    assert "train.eval_every" in capsys.readouterr().err


def test_run_evaluations_reads_a_log_cut_short_and_a_repeated_step_once(tmp_path):
    cfg = load_config(TINY, ["data.tasks=digits"])
    lines = [{"step": 2, "event": "eval", "eval/digits/accuracy": 10.0},
             {"step": 2, "task_steps/digits": 2, "loss/digits": 1.0},
             {"step": 2, "event": "eval", "eval/digits/accuracy": 20.0},  # resumed: evaluated again
             {"step": 9, "event": "eval", "eval/digits/accuracy": 30.0}]  # beyond the checkpoint
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 4, "eve')
    assert run_evaluations(tmp_path, cfg, last_step=5) == {
        "digits": [{"step": 2, "task_steps": 2, "metrics": {"accuracy": 20.0}}]}


def test_baselines_command_refuses_tasks_the_run_did_not_train(tiny_run, capsys):
    root, run = tiny_run
    code = main(["experiment", "baselines", "--run", str(run), "--out", str(root / "x"), "--tasks", "speech_numbers"])
    assert code == 2
    assert "not trained on ['speech_numbers']" in capsys.readouterr().err


def test_baselines_end_their_training_the_way_the_run_did():
    cfg = apply_overrides(load_config("tiny"), ["train.cooldown_fraction=0.3"])
    assert baseline_config(cfg).cooldown_fraction == 0.3
    assert baseline_config(cfg, cooldown_fraction=0.0).cooldown_fraction == 0.0


def test_baselines_scale_their_updates_the_way_the_run_did():
    cfg = apply_overrides(load_config("tiny"), ["train.normalize_gradients=true"])
    assert baseline_config(cfg).normalize_gradients is True
    assert baseline_config(cfg, normalize_gradients=False).normalize_gradients is False
    assert baseline_config(load_config("tiny")).normalize_gradients is False


def test_baselines_normalise_speech_features_the_way_the_run_did():
    cfg = apply_overrides(load_config("tiny"), ["model.audio_normalize=true"])
    assert baseline_config(cfg).audio_normalize is True
    assert baseline_config(load_config("tiny")).audio_normalize is False


class _Scaled(torch.nn.Module):
    """A linear regression whose loss is multiplied by ``scale``, answering a baseline's calls."""

    def __init__(self, scale: float):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)
        self.scale = scale

    def forward(self, inputs, input_mask, targets, target_mask):
        from types import SimpleNamespace

        loss = self.scale * (self.linear(inputs).squeeze(-1) - targets).pow(2).mean()
        return SimpleNamespace(loss=SimpleNamespace(loss=loss))


class _Stream:
    task_name = "toy"

    def __init__(self):
        self.generator = torch.Generator().manual_seed(1)

    def next_batch(self):
        from types import SimpleNamespace

        x = torch.randn(8, 4, generator=self.generator)
        batch = SimpleNamespace(inputs=x, input_mask=None, targets=x.sum(-1), target_mask=None)
        batch.to = lambda device: batch
        return batch


@pytest.mark.parametrize("normalize", [True, False])
def test_a_baseline_with_normalized_gradients_takes_the_same_steps_whatever_its_loss_scale(normalize):
    """Rescaled to norm 1, a gradient 10^4 times larger moves Adam the same way; clipped, not."""
    trained = []
    for scale in (1e-2, 1e2):
        model = _Scaled(scale)
        train_baseline(model, _Stream(), 30, BaselineConfig(normalize_gradients=normalize, warmup_steps=1),
                       torch.device("cpu"), progress=False)
        trained.append(model.linear.weight.detach().clone())
    assert torch.allclose(trained[0], trained[1], rtol=1e-4, atol=1e-6) == normalize


@pytest.mark.parametrize("cooldown", [0.0, 0.2])
def test_a_baseline_of_zero_steps_trains_nothing(cooldown):
    """``--steps 0`` (or a task the run never drew) builds the schedule without training."""
    model = torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    curve = train_baseline(model, None, 0, BaselineConfig(cooldown_fraction=cooldown), torch.device("cpu"),
                           progress=False)
    assert curve == [] and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

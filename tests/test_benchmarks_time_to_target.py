"""Smoke test of benchmarks/time_to_target.py: a tiny joint run with mid-run evaluations and its
baselines with evaluation curves, read back into the minutes-to-target table."""


def test_time_to_target_quick(capsys, load_benchmark):
    module = load_benchmark("time_to_target")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| digits")
            or line.startswith("| numbers_en_de")}
    assert set(rows) == {"digits", "numbers_en_de"}
    # digits' target (0 %) is met at the first evaluation: step 4 of the run, step 2 of the baseline.
    assert "(4) |" in rows["digits"] and rows["digits"].rstrip().endswith("(2) |")
    # numbers_en_de's (BLEU 101) never is: both columns say so with their last evaluation.
    assert rows["numbers_en_de"].count("> ") == 2 and "(4; best" in rows["numbers_en_de"]
    assert "Every task at its target" not in out


def test_first_reached_respects_the_metric_direction(load_benchmark):
    module = load_benchmark("time_to_target")
    curve = [{"step": s, "train_seconds": 60.0 * s, "value": v} for s, v in ((1, 90.0), (2, 70.0), (3, 40.0))]
    assert module.first_reached(curve, "wer", 75.0)["step"] == 2
    assert module.first_reached(curve, "bleu", 75.0)["step"] == 1
    assert module.first_reached(curve, "wer", 10.0) is None


def test_a_baselines_final_evaluation_ends_its_curve(tmp_path, load_benchmark):
    import json

    module = load_benchmark("time_to_target")
    (tmp_path / "tasks").mkdir()
    record = {"task": "speech_numbers", "steps": 300, "train_seconds": 90.0, "eval": {"wer": 40.0},
              "eval_curve": [{"step": 200, "train_seconds": 60.0, "metrics": {"wer": 55.0}}]}
    (tmp_path / "tasks" / "speech_numbers.json").write_text(json.dumps(record))
    curve = module.baseline_curves(tmp_path)["speech_numbers"]
    assert [(p["step"], p["value"]) for p in curve] == [(200, 55.0), (300, 40.0)]
    assert module.first_reached(curve, "wer", 50.0)["train_seconds"] == 90.0

"""Smoke test of benchmarks/pipeline.py: real corpora, tokenizer and streams on two small tasks,
and with ``--declared`` a task declared in the config over an image folder it writes."""


def test_pipeline_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("pipeline")
    assert module.main(["--quick"]) == 0  # asserts that both streams produced the same batches
    out = capsys.readouterr().out
    assert "| pipeline |" in out and "| in memory |" in out and "Ratio time(in memory) / time(pipeline)" in out
    assert "| numbers_en_de |" in out and "(declared)" not in out
    assert "batches numbers_en_de 8, grammar_parsing 12;" in out  # the trainer's per-task batch sizes


def test_pipeline_benchmark_measures_a_declared_task(capsys, load_benchmark):
    module = load_benchmark("pipeline")
    assert module.main(["--quick", "--declared"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"| {module.DECLARED} (declared) |"))
    steps, collate_ms, step_s, share = [cell.strip() for cell in row.split("|")[2:6]]
    assert int(steps) >= 1 and float(collate_ms) > 0 and float(step_s) > 0 and share.endswith("%")

"""Smoke test of benchmarks/pipeline.py: real corpora, tokenizer and streams on two small tasks."""


def test_pipeline_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("pipeline")
    assert module.main(["--quick"]) == 0  # asserts that both streams produced the same batches
    out = capsys.readouterr().out
    assert "| pipeline |" in out and "| in memory |" in out and "Ratio time(in memory) / time(pipeline)" in out

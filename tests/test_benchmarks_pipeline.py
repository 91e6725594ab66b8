"""Smoke test of benchmarks/pipeline.py: real corpora, tokenizer and streams on two small tasks."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline.py"


def test_pipeline_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0  # asserts that both streams produced the same batches
    out = capsys.readouterr().out
    assert "| pipeline |" in out and "| in memory |" in out and "Ratio time(in memory) / time(pipeline)" in out

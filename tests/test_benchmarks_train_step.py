"""Smoke test of benchmarks/train_step.py: the --quick run prints every section."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def test_train_step_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| tiny (D=32) | classification |" in out and "| tiny (D=32) | text |" in out
    assert "Where the time goes" in out and "MFU ratio ours / nn.Transformer" in out
    assert "4 experts |" in out and "peak RSS (MB)" in out

"""Smoke test of benchmarks/moe.py: the --quick run prints every variant and ratio."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "moe.py"


def test_moe_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("moe_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "ours/floor" in out and "dense/ours" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("4 |", "8 |"))]
    assert len(rows) == 2 and all("skipped" not in row for row in rows)

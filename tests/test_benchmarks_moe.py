"""Smoke test of benchmarks/moe.py: the --quick run prints every variant and ratio."""


def test_moe_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("moe")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "ours/floor" in out and "dense/ours" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("4 |", "8 |"))]
    assert len(rows) == 2 and all("skipped" not in row for row in rows)

"""Smoke test of benchmarks/moe.py: the --quick run prints every variant and ratio, the
public ports' dispatch (``peer``) included."""


def test_moe_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("moe")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("ours/floor", "ours/peer", "padded/floor", "dense/ours"))
    rows = [line for line in out.splitlines() if line.strip().startswith(("4 |", "8 |"))]
    assert len(rows) == 2 and all("skipped" not in row for row in rows)

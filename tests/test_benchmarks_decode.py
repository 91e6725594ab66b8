"""Smoke test of benchmarks/decode.py: runs in --quick mode and checks its own assertions."""


def test_decode_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("decode")
    assert module.main(["--quick"]) == 0  # raises if incremental and recomputed tokens differ
    out = capsys.readouterr().out
    assert "speed-up" in out and "tokens identical" in out


def test_decode_benchmark_quick_with_a_beam(capsys, load_benchmark):
    module = load_benchmark("decode")
    assert module.main(["--quick", "--batch", "2", "--beam", "3"]) == 0  # raises if the hypotheses differ
    out = capsys.readouterr().out
    assert "beam 3 (6 rows)" in out and "hypotheses identical" in out

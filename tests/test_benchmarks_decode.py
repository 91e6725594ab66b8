"""Smoke test of benchmarks/decode.py: runs in --quick mode and checks its own assertions."""


def test_decode_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("decode")
    assert module.main(["--quick"]) == 0  # raises if incremental and recomputed tokens differ
    out = capsys.readouterr().out
    assert "speed-up" in out and "tokens identical" in out

"""Smoke test of benchmarks/decode.py: runs in --quick mode and checks its own assertions."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decode.py"


def test_decode_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("decode_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0  # raises if incremental and recomputed tokens differ
    out = capsys.readouterr().out
    assert "speed-up" in out and "tokens identical" in out

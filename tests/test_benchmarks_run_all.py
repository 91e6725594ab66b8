"""Smoke test of benchmarks/run_all.py: runs one benchmark's --quick mode into a scratch report
and keeps the hand-written part of the report."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


def test_run_all_quick_writes_between_markers(tmp_path):
    spec = importlib.util.spec_from_file_location("run_all_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = tmp_path / "benchmarks.md"
    old_run = f"{module.BEGIN}\nan earlier run\n{module.END}\n"
    report.write_text("# Benchmarks\n\n## Hand-written\n\nKeep me.\n\n" + old_run + "\n## After\n\nMe too.\n")
    assert module.main(["--quick", "--only", "pipeline", "--output", str(report)]) == 0
    text = report.read_text()
    assert "Keep me." in text and "Me too." in text and "an earlier run" not in text
    assert text.count(module.BEGIN) == 1 and text.count(module.END) == 1
    assert "benchmarks/pipeline.py --quick" in text and "Ratio time(in memory) / time(pipeline)" in text
    assert "Machine:" in text

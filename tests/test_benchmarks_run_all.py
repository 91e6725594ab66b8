"""Smoke test of benchmarks/run_all.py: runs one benchmark's --quick mode into a scratch report
and keeps the hand-written part of the report."""


def test_run_all_quick_writes_between_markers(tmp_path, load_benchmark):
    module = load_benchmark("run_all")
    report = tmp_path / "benchmarks.md"
    old_run = f"{module.BEGIN}\nan earlier run\n{module.END}\n"
    report.write_text("# Benchmarks\n\n## Hand-written\n\nKeep me.\n\n" + old_run + "\n## After\n\nMe too.\n")
    assert module.main(["--quick", "--only", "pipeline", "--output", str(report)]) == 0
    text = report.read_text()
    assert "Keep me." in text and "Me too." in text and "an earlier run" not in text
    assert text.count(module.BEGIN) == 1 and text.count(module.END) == 1
    assert "benchmarks/pipeline.py --quick" in text and "Ratio time(in memory) / time(pipeline)" in text
    assert "Machine:" in text


def test_only_replaces_the_sections_of_the_benchmarks_it_reruns(load_benchmark):
    module = load_benchmark("run_all")

    def body(stamp, command, sections):
        head = f"## Latest run of every benchmark ({stamp})\n\nCommand: `{command}`  \nMachine: x\n"
        return head + "".join(f"\n### `python benchmarks/{s}`\n\n{text}\n" for s, text in sections)

    old = body("day 1", "python benchmarks/run_all.py",
               [("train_step.py ", "old steps"), ("decode.py --batch 4", "old d4"),
                ("decode.py --batch 1", "old d1"), ("moe.py ", "old moe")])
    new = body("day 2", "python benchmarks/run_all.py --only decode",
               [("decode.py --batch 4", "new d4"), ("decode.py --batch 1", "new d1")])
    merged = module.merge(old, new)
    assert "old d4" not in merged and "old d1" not in merged
    # The other benchmarks keep their figures, and every section keeps its place.
    order = [merged.index(t) for t in ("old steps", "new d4", "new d1", "old moe")]
    assert order == sorted(order)
    assert "day 1" in merged and "Re-run later for decode.py: Latest run of every benchmark (day 2)" in merged

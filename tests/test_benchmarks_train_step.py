"""Smoke test of benchmarks/train_step.py: the --quick run prints every section."""


def test_train_step_benchmark_quick(capsys, load_benchmark):
    module = load_benchmark("train_step")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| tiny (D=32) | classification |" in out and "| tiny (D=32) | text |" in out
    assert "Where the time goes" in out and "MFU ratio ours / nn.Transformer" in out
    assert "the ratio per interleaved pair" in out
    assert "4 experts |" in out and "peak RSS (MB)" in out
    assert "Operators with the most self CPU time" in out and "| `aten::" in out


def test_the_benchmarks_time_the_trainers_own_step(load_benchmark):
    """benchmarks/train_step.py and benchmarks/pipeline.py call the trainer's ``train_step`` (not
    a copy of it), so their figures are those of the step training runs."""
    from multimodel.training import step

    for name in ("train_step", "pipeline"):
        module = load_benchmark(name)
        assert module.train_step is step.train_step, name

"""Smoke tests of the scale-out benchmarks: benchmarks/scaling_memory.py (per-rank memory from
the model's shapes), benchmarks/memory.py (the memory savers) and benchmarks/gpu_check.py (the
one-GPU check, here on the CPU); they time the trainer's own ``train_step``."""

import pytest


def test_scaling_memory_counts_the_paper_preset_on_the_meta_device(load_benchmark):
    module = load_benchmark("scaling_memory")
    model = module.build("paper")
    assert next(model.parameters()).is_meta  # nothing allocated
    counts = module.parameter_counts(model)
    assert counts["dense"] + counts["experts"] == counts["total"] and counts["experts"] > 0.8 * counts["total"]
    assert module.expert_parallel(64, 240) == 16 and module.expert_parallel(64, 240, cap=8) == 8
    rows = {name: (dense, experts) for name, dense, experts in module.layouts(counts, 8)}
    assert rows["DDP"] == (counts["dense"], counts["experts"])
    assert rows["expert parallel 8 + FSDP"] == (counts["dense"] / 8, counts["experts"] / 8)


def test_scaling_memory_tiny(capsys, load_benchmark):
    module = load_benchmark("scaling_memory")
    assert module.main(["--config", "tiny", "--length", "16", "--few-experts", "2"]) == 0
    out = capsys.readouterr().out
    assert "| float32 | no |" in out and "| bf16 | yes |" in out
    assert "| 64 | expert parallel 4 + FSDP |" in out


def test_gpu_check_runs_on_the_cpu(capsys, load_benchmark, tmp_path):
    module = load_benchmark("gpu_check")
    assert module.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "| text | bf16 |" in out and "| bf16 | yes |" in out
    assert module.paper_eighth().moe.num_experts == 30


def test_the_scale_out_benchmarks_time_the_trainers_own_step(load_benchmark):
    from multimodel.training import step

    for name in ("memory", "gpu_check"):
        assert load_benchmark(name).train_step is step.train_step, name


@pytest.mark.slow
def test_memory_quick(capsys, load_benchmark):
    module = load_benchmark("memory")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| text | bf16 + checkpointing |" in out

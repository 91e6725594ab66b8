"""Suite-wide settings and fixtures.

One intra-op thread per test process: `make test` runs two pytest-xdist workers on a 2-core
machine; with PyTorch's default of one thread per core each, the workers oversubscribe the CPU
and tiny ops slow down many times. Subprocesses started by tests inherit OMP_NUM_THREADS=1 for
the same reason.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Shared test helpers (``host_reads``) import as top-level modules from tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def load_benchmark():
    """Import a script of benchmarks/ by name ("moe" -> benchmarks/moe.py) as a module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def shared_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder every pytest-xdist worker of this run sees (the workers' common
    parent); fixtures that build something once per run put it here under a file lock."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

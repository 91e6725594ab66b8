"""Suite-wide settings: one intra-op thread per test process.

`make test` runs two pytest-xdist workers on a 2-core machine; with PyTorch's default of one
thread per core each, the workers oversubscribe the CPU and tiny ops slow down many times.
Subprocesses started by tests inherit OMP_NUM_THREADS=1 for the same reason.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

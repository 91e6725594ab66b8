"""Run the experts of a mixture side by side on the CPU's cores.

With hundreds of experts each expert sees only tens of token-slots (4,096 tokens × top-4 over
256 experts is 64 rows each). A (64 × 512) @ (512 × 1024) matmul is too small to split across
cores well: every core packs the same 2 MB weight and waits for the others, and MKL reaches
about half its large-matrix speed. Running *different experts* on different cores, each
expert's matmuls single-threaded, keeps every core busy on whole matrices instead
(``benchmarks/moe.py`` measures both against the compute floor).

:class:`ExpertThreads` owns one worker thread per intra-op thread of the process. In each
worker, MKL (``MKL_Set_Num_Threads_Local``) and OpenMP (``omp_set_num_threads``, a per-thread
setting) are limited to one thread, so the work on a worker never fans out again. PyTorch
releases the GIL inside every kernel, so the workers run truly in parallel. Each expert's
matmuls run on one thread whichever worker takes them, so results are deterministic; they
agree with the multi-threaded serial loop to rounding (MKL may order its sums differently
on one thread than on several).

This needs a PyTorch build with MKL and GNU OpenMP (the x86-64 Linux wheels);
:func:`expert_threads` returns ``None`` elsewhere and the caller runs the experts in a plain
loop. Work submitted from inside a worker runs inline (no nested pools).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.overrides import _get_current_function_mode
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

__all__ = ["ExpertThreads", "expert_threads", "balanced_groups"]


def _thread_limiters() -> tuple[Callable[[int], object], Callable[[int], object]] | None:
    """(MKL per-thread limit, OpenMP per-thread limit) from torch's own libraries, or None."""
    if not torch.backends.mkl.is_available():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    try:
        torch_cpu = ctypes.CDLL(str(lib_dir / "libtorch_cpu.so"))
        gomp = ctypes.CDLL(str(lib_dir / "libgomp.so.1"))
        mkl_local = torch_cpu.MKL_Set_Num_Threads_Local  # C interface: takes an int
        omp_threads = gomp.omp_set_num_threads
    except (OSError, AttributeError):
        return None
    return mkl_local, omp_threads


class ExpertThreads:
    """A pool of ``num_threads`` workers, each with single-threaded MKL and OpenMP.

    Args:
        num_threads: workers (one per core the process may use).
    """

    def __init__(self, num_threads: int) -> None:
        limiters = _thread_limiters()
        if limiters is None:
            raise RuntimeError("per-thread MKL/OpenMP control is not available in this build")
        self._mkl_local, self._omp_threads = limiters
        self.num_threads = num_threads
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            num_threads, thread_name_prefix="moe-expert", initializer=self._init_worker
        )

    def _init_worker(self) -> None:
        # A first parallel op makes ATen initialise this thread's OpenMP setting from the
        # process-wide one; only then can it be lowered for this thread alone.
        torch.ones(1 << 16).add_(1)
        self._omp_threads(1)
        self._mkl_local(1)
        self._local.is_worker = True

    def run(self, fn: Callable[[Sequence[int]], None], groups: Sequence[Sequence[int]]) -> None:
        """Call ``fn(group)`` for every group, the groups side by side; re-raises errors.

        ``fn`` runs in the caller's grad mode and inference mode (both are per thread).
        """
        if getattr(self._local, "is_worker", False) or len(groups) <= 1:
            for group in groups:
                fn(group)
            return
        # Grad mode and inference mode are per thread: carry the caller's over.
        grad_enabled, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def call(group: Sequence[int]) -> None:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad_enabled):
                fn(group)

        futures = [self._pool.submit(call, group) for group in groups]
        for future in futures:
            future.result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


_POOL: ExpertThreads | None = None
_POOL_PID: int | None = None
_POOL_LOCK = threading.Lock()
_UNAVAILABLE = False


def expert_threads() -> ExpertThreads | None:
    """The process's pool, sized to ``torch.get_num_threads()``; None if it cannot help.

    None when the process runs one intra-op thread, when the build lacks per-thread MKL and
    OpenMP control, when called from one of the pool's own workers, and while CPU autocast, a
    ``__torch_dispatch__`` / ``__torch_function__`` mode or a ``torch.compile`` trace is
    active: these are per thread, so work on the workers would escape them (a
    ``FlopCounterMode`` would not count the experts' FLOPs). The pool is rebuilt after
    ``torch.set_num_threads`` changes the thread count and after a ``fork``.
    """
    global _POOL, _POOL_PID, _UNAVAILABLE
    threads = torch.get_num_threads()
    if threads <= 1 or _UNAVAILABLE or _mode_active():
        return None
    with _POOL_LOCK:
        pool = _POOL
        if pool is not None and getattr(pool._local, "is_worker", False):
            return None
        if pool is None or pool.num_threads != threads or _POOL_PID != os.getpid():
            if pool is not None and _POOL_PID == os.getpid():
                pool.shutdown()
            try:
                _POOL = ExpertThreads(threads)
            except RuntimeError:
                _UNAVAILABLE = True
                return None
            _POOL_PID = os.getpid()
        return _POOL


def _mode_active() -> bool:
    """Whether this thread runs under a Python dispatch/function mode, a compiler trace, or
    CPU autocast (whose casts, per thread too, would not apply on the workers)."""
    return (
        torch.is_autocast_enabled("cpu")
        or is_in_torch_dispatch_mode()
        or _get_current_function_mode() is not None
        or torch.compiler.is_compiling()
    )


def balanced_groups(items: Sequence[int], weights: Sequence[int], num_groups: int) -> list[list[int]]:
    """Split ``items`` into ``num_groups`` groups of near-equal total weight.

    Greedy "longest processing time first": the heaviest item goes to the lightest group.
    Items of weight 0 are left out; empty groups are dropped. Deterministic.
    """
    order = sorted(
        (i for i in range(len(items)) if weights[i] > 0), key=lambda i: (-weights[i], i)
    )
    groups: list[list[int]] = [[] for _ in range(num_groups)]
    totals = [0] * num_groups
    for i in order:
        g = min(range(num_groups), key=lambda j: (totals[j], j))
        groups[g].append(items[i])
        totals[g] += weights[i]
    return [group for group in groups if group]

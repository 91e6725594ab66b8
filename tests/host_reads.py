"""Count the places where library code reads a tensor's value on the host.

On an accelerator, each of these reads (``.item()``, ``.tolist()``, ``bool(t)``, ``int(t)``,
``float(t)``, ``t.__index__()``, ``.cpu()``, ``.numpy()``, ``.to("cpu")``, and operations whose
output size depends on the values: ``nonzero``, ``bincount``, ``x[bool_mask]``, ...) makes
the host wait for the device to finish everything queued before it: a synchronisation, which
stalls the device's queue, breaks CUDA graphs and splits ``torch.compile`` graphs. On the CPU the same
reads are cheap, so a CPU-only test suite would never notice them: this counter finds them
by name instead of by cost.

    with count_host_reads() as reads:
        out = model(...)
        loss.backward()
    assert [r.where for r in reads.in_package()] == ["layers/moe.py:_dispatch"]

It is a ``torch.overrides.TorchFunctionMode``, so it sees every tensor method and torch
function called from Python, in this thread only (the MoE's expert threads stay off while a
mode is active, see ``layers/expert_threads.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import multimodel

PACKAGE = Path(multimodel.__file__).resolve().parent
"""src/multimodel: reads whose caller lies here are the library's own."""

HOST_READS = frozenset(
    {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}
)
"""Tensor methods that copy a value to the host."""

SIZE_READS = frozenset(
    {"nonzero", "argwhere", "masked_select", "bincount", "unique", "unique_consecutive", "histc"}
)
"""Operations whose output size (or bin count) depends on the values: on an accelerator they
read a count or a maximum on the host before they can allocate their output."""

_THIS_FILE = str(Path(__file__).resolve())
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


@dataclass(frozen=True)
class HostRead:
    """One host read: the tensor method and the first caller outside torch."""

    func: str
    """Method name, e.g. ``"tolist"``."""
    file: str
    """Caller's file: relative to src/multimodel when it lies there, else absolute."""
    line: int
    function: str
    """Caller's function name."""
    in_package: bool

    @property
    def where(self) -> str:
        """``"layers/moe.py:_dispatch"``: file and function, stable under edits that move lines."""
        return f"{self.file}:{self.function}"

    def __str__(self) -> str:
        return f"{self.func}() at {self.file}:{self.line} in {self.function}"


@dataclass
class HostReads:
    """The reads recorded inside one ``count_host_reads()`` block, in order."""

    records: list[HostRead] = field(default_factory=list)

    def in_package(self) -> list[HostRead]:
        """The reads made by the library's own code (not by tests or torch's Python code)."""
        return [r for r in self.records if r.in_package]

    def __iter__(self) -> Iterator[HostRead]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _is_bool_index(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _is_read(name: str, args: tuple, kwargs: dict) -> bool:
    if name in HOST_READS or name in SIZE_READS:
        return True
    if name in ("__getitem__", "__setitem__") and len(args) > 1:
        return _is_bool_index(args[1])  # x[mask] has as many rows as mask has True values
    if name == "repeat_interleave":  # with tensor repeats, the output size is their sum
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    if name == "to":  # .to("cpu") / .to(torch.device("cpu")) / .to(device="cpu")
        if isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu":
            return False  # already on the host: a move to the tensor's own device, no copy, no wait
        targets = list(args[1:]) + [kwargs.get("device")]
        return any(
            (isinstance(t, str) and t.startswith("cpu"))
            or (isinstance(t, torch.device) and t.type == "cpu")
            for t in targets
        )
    return False


def _caller() -> tuple[str, int, str, bool]:
    """File, line and function of the innermost frame outside torch and this module."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path != _THIS_FILE and not path.startswith(_TORCH_DIR):
            break
        frame = frame.f_back
    if frame is None:
        return "?", 0, "?", False
    path = Path(frame.f_code.co_filename).resolve()
    try:
        return str(path.relative_to(PACKAGE)), frame.f_lineno, frame.f_code.co_name, True
    except ValueError:
        return str(path), frame.f_lineno, frame.f_code.co_name, False


class _HostReadMode(TorchFunctionMode):
    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if _is_read(name, args, kwargs):
            file, line, function, in_package = _caller()
            self.reads.records.append(HostRead(name, file, line, function, in_package))
        return func(*args, **kwargs)


@contextmanager
def count_host_reads() -> Iterator[HostReads]:
    """Record every host read of a tensor made in this thread inside the block.

    Autograd's backward runs in C++ and reads nothing through Python, except for custom
    ``autograd.Function.backward`` methods, which are Python and are counted too.
    """
    reads = HostReads()
    with _HostReadMode(reads):
        yield reads

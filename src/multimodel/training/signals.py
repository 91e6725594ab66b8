"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM (e.g. a scheduler pre-empting the job).

The first signal only asks the loop to stop: it finishes the step it is in, writes a
checkpoint and raises KeyboardInterrupt. Raising at once instead would land anywhere (e.g.
inside TensorBoard's writer while it holds the lock that the clean-up then waits for forever).
A second signal interrupts at once. Every rank installs the handlers (torchrun forwards
signals to all of them); the loop makes the ranks agree on the step to stop at.
"""

from __future__ import annotations

import signal
from typing import Any


class StopRequests:
    """A context manager that records stop signals while it is active and restores the
    previous handlers on exit. ``requested`` is True once a signal arrived."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def _interrupt_now(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        raise KeyboardInterrupt

    def _request_stop(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.received.append(signum)
        for number in self._previous:
            signal.signal(number, self._interrupt_now)

    def __enter__(self) -> "StopRequests":
        for number in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if number is None:
                continue
            try:
                self._previous[number] = signal.signal(number, self._request_stop)
            except ValueError:  # not in the main thread: signals keep their handlers
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


__all__ = ["StopRequests"]

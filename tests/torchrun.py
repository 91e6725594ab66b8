"""Launch a command under ``torch.distributed.run`` from a test, and never leave ranks behind.

    done = torchrun(["-m", "multimodel", "train", ...], ranks=2)
    assert done.returncode == 0, done.stdout + done.stderr
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; past ``timeout``, kill the whole group and fail.

    ``subprocess.run(timeout=...)`` kills only the process it started: torchrun's rank processes
    would live on. Killing the group takes them too.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, signal.SIGKILL)  # a new session's group id is its leader's pid

    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group()
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} ran past {timeout} s; killed its process group\n{stdout}{stderr}")
    except BaseException:  # e.g. Ctrl-C on pytest: leave no ranks behind either
        kill_group()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def torchrun(args: list[str], ranks: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node ranks <args>`` on CPU (gloo)."""
    return run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
                "127.0.0.1", "--master-port", str(free_port()), *args], timeout=timeout)

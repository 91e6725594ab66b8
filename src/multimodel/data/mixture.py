"""Which task trains at each step (one task per batch, as in the original MultiModel).

The original sampled tasks uniformly or per worker. We offer the strategies used in
multilingual and multi-task training since: proportional to data size, uniform,
temperature-scaled (p_i ∝ n_i^(1/T), Arivazhagan et al. 2019) and fixed weights.

The task of step ``s`` is a pure function of (seed, s), so resuming needs no sampler state
and every rank of a distributed run trains the same task at the same step.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from multimodel.config import MIXING_STRATEGIES, ConfigError

STRATEGIES = MIXING_STRATEGIES


def mixing_probabilities(
    sizes: Mapping[str, int],
    strategy: str,
    temperature: float = 1.0,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Sampling probability of each task.

    Args:
        sizes: training examples per task.
        strategy: one of ``STRATEGIES``.
        temperature: T for 'temperature' (T=1 is proportional, T→∞ uniform).
        weights: unnormalised weights for 'weights'; tasks not listed get 0.
    """
    names = list(sizes)
    if not names:
        raise ValueError("no tasks to mix")
    n = np.asarray([max(0, int(sizes[k])) for k in names], dtype=np.float64)
    if strategy == "proportional":
        raw = n
    elif strategy == "uniform":
        raw = np.ones_like(n)
    elif strategy == "temperature":
        if temperature <= 0:
            raise ConfigError(f"train.temperature must be > 0, got {temperature}")
        raw = n ** (1.0 / temperature)
    elif strategy == "weights":
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConfigError(f"train.task_weights names tasks not being trained: {unknown}; tasks: {names}")
        raw = np.asarray([float(weights.get(k, 0.0)) for k in names])
        if (raw < 0).any():
            raise ConfigError("train.task_weights must be non-negative")
    else:
        raise ConfigError(f"unknown train.mixing {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    total = raw.sum()
    if total <= 0:
        raise ConfigError(f"mixing strategy {strategy!r} gives every task zero probability")
    return {k: float(v / total) for k, v in zip(names, raw)}


class TaskSampler:
    """Draws the task of each step from fixed probabilities, statelessly.

    Args:
        probabilities: task name → probability (from :func:`mixing_probabilities`).
        seed: sampling seed.
    """

    def __init__(self, probabilities: Mapping[str, float], seed: int):
        self.names: Sequence[str] = list(probabilities)
        self.cdf = np.cumsum([probabilities[k] for k in self.names])
        self.cdf[-1] = 1.0
        self.seed = seed

    def task_at(self, step: int) -> str:
        digest = hashlib.sha256(f"{self.seed}/{step}".encode()).digest()
        u = int.from_bytes(digest[:8], "little") / 2.0**64  # uniform in [0, 1)
        return self.names[int(np.searchsorted(self.cdf, u, side="right"))]

    def counts(self, steps: int, start: int = 0) -> dict[str, int]:
        """Batches each task draws in global steps ``start`` … ``steps`` - 1."""
        counts = dict.fromkeys(self.names, 0)
        for s in range(start, steps):
            counts[self.task_at(s)] += 1
        return counts

"""Dropout (Srivastava et al. 2014) with its keep mask drawn as random integers.

The same maths as ``torch.nn.Dropout``: in training each value is kept with probability
1 − p and kept values are scaled by 1 / (1 − p); at evaluation it is the identity. The mask
compares uniform random 31-bit integers (``random_()`` on int32, uniform on [0, 2³¹)) with
p · 2³¹, so p is honoured to 2⁻³¹ whatever the input dtype (a p within 2⁻³² of 1 keeps
values with probability 2⁻³¹). On CPU that is cheaper than ``torch.rand`` (no float
conversion) or ``bernoulli_`` (docs/benchmarks.md has the timings).
"""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout; identity at evaluation.

    Args:
        p: probability of zeroing a value, in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()  # uniform on [0, 2^31)
        keep = draws >= min(round(self.p * 2**31), 2**31 - 1)  # 2^31 itself would wrap around in int32
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"

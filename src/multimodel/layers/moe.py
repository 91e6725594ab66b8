"""Sparsely-gated mixture of experts (Shazeer et al. 2017 §2.1, §4; MultiModel §2.3).

Work in progress: a simple correct version; a faster dispatch follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodel.config import MoEConfig

NOISE_EPSILON = 1e-2
CV_EPSILON = 1e-10


@dataclass
class RoutingStats:
    """Routing statistics of one or more forward passes (detached tensors)."""

    tokens_per_expert: Tensor
    gate_sum_per_expert: Tensor
    num_tokens: Tensor

    def merge(self, other: RoutingStats) -> RoutingStats:
        return RoutingStats(
            tokens_per_expert=self.tokens_per_expert + other.tokens_per_expert,
            gate_sum_per_expert=self.gate_sum_per_expert + other.gate_sum_per_expert,
            num_tokens=self.num_tokens + other.num_tokens,
        )

    __add__ = merge

    def detach(self) -> RoutingStats:
        return RoutingStats(
            self.tokens_per_expert.detach(),
            self.gate_sum_per_expert.detach(),
            self.num_tokens.detach(),
        )


def _cv_squared(x: Tensor) -> Tensor:
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.var(unbiased=False) / (x.mean() ** 2 + CV_EPSILON)


class MixtureOfExperts(nn.Module):
    def __init__(self, hidden_size: int, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        E, D, H = config.num_experts, hidden_size, config.expert_hidden_size
        self.num_experts, self.top_k = E, config.top_k
        self.w_gate = nn.Parameter(torch.zeros(D, E))
        self.w_noise = nn.Parameter(torch.zeros(D, E))
        self.w1 = nn.Parameter(torch.empty(E, D, H))
        self.b1 = nn.Parameter(torch.empty(E, H))
        self.w2 = nn.Parameter(torch.empty(E, H, D))
        self.b2 = nn.Parameter(torch.empty(E, D))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        D, H = self.w1.shape[1], self.w1.shape[2]
        for w, b, fan_in in ((self.w1, self.b1, D), (self.w2, self.b2, H)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        nn.init.zeros_(self.w_gate)
        nn.init.zeros_(self.w_noise)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, RoutingStats]:
        B, T, D = x.shape
        E, K = self.num_experts, self.top_k
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        flat_mask = mask.reshape(B * T)
        xs = x.reshape(B * T, D)[flat_mask]  # (N, D)
        x32 = xs.float()
        clean = x32 @ self.w_gate.float()
        noisy_on = self.training and self.config.noisy_gating
        if noisy_on:
            std = F.softplus(x32 @ self.w_noise.float()) + NOISE_EPSILON
            logits = clean + torch.randn_like(clean) * std
        else:
            logits = clean
        top_vals, top_idx = logits.topk(min(K + 1, E), dim=-1)
        gates_k = torch.softmax(top_vals[:, :K], dim=-1)
        idx_k = top_idx[:, :K]
        gates = torch.zeros_like(clean).scatter(1, idx_k, gates_k)  # (N, E)
        importance = gates.sum(0)
        if noisy_on and K < E:
            normal = torch.distributions.Normal(0.0, 1.0)
            in_top = gates > 0
            thr_in = top_vals[:, K : K + 1]
            thr_out = top_vals[:, K - 1 : K]
            p = torch.where(in_top, normal.cdf((clean - thr_in) / std), normal.cdf((clean - thr_out) / std))
            load = p.sum(0)
        else:
            load = (gates > 0).float().sum(0)
        aux = self.config.aux_loss_coef * (_cv_squared(importance) + _cv_squared(load))
        out = xs.new_zeros(xs.shape)
        for e in range(E):
            tok, slot = (idx_k == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = F.relu(xs[tok] @ self.w1[e] + self.b1[e])
            y = h @ self.w2[e] + self.b2[e]
            out = out.index_add(0, tok, y * gates_k[tok, slot, None].to(y.dtype))
        full = x.new_zeros(B * T, D)
        full = full.masked_scatter(flat_mask[:, None], out)
        stats = RoutingStats(
            tokens_per_expert=(gates > 0).float().sum(0).detach(),
            gate_sum_per_expert=importance.detach(),
            num_tokens=flat_mask.sum().float(),
        )
        return full.reshape(B, T, D), aux, stats

"""Per-slot pooling of a packed sequence: masked mean, or a MAP head.

Both return ``[B, E, D]`` float32, one vector per example slot (zero for empty
slots), computed with segment reductions (no loop over examples).

:class:`MAPHead` is multihead attention pooling as in SigLIP / NaViT: a learned
probe attends over the slot's tokens (per head), the result is projected, then
``x + MLP(LayerNorm(x))``.
"""

from __future__ import annotations

import torch
from torch import nn

from .segments import segment_softmax, segment_sum

__all__ = ["masked_mean", "MAPHead"]


def masked_mean(x: torch.Tensor, segment_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Mean of ``x`` ``[B, L, D]`` over each slot's tokens: ``[B, E, D]`` float32."""
    seg = segment_ids.long()
    sums = segment_sum(x.float(), seg, num_slots + 1)[:, 1:]
    counts = segment_sum(torch.ones_like(seg, dtype=torch.float32), seg, num_slots + 1)[:, 1:]
    return sums / counts.clamp(min=1)[..., None]


class MAPHead(nn.Module):
    """``forward(x [B, L, D], segment_ids [B, L], num_slots) -> [B, E, D]``: attention pooling + LN + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.probe = nn.Parameter(torch.randn(dim) * 0.02)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
        b, l, d = x.shape
        seg = segment_ids.long()
        q = self.q(self.probe).float().reshape(self.heads, self.head_dim)
        k, v = self.kv(x).float().reshape(b, l, 2, self.heads, self.head_dim).unbind(2)  # [B, L, H, Dh]
        scores = (k * q).sum(-1) * self.head_dim**-0.5  # [B, L, H]
        a = segment_softmax(scores, seg, num_slots + 1)
        pooled = segment_sum(a[..., None] * v, seg, num_slots + 1)[:, 1:]  # [B, E, H, Dh]
        y = self.proj(pooled.reshape(b, num_slots, d)).float()
        return y + self.mlp(self.norm(y)).float()

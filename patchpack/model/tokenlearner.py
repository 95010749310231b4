"""TokenLearner V1.1 (arXiv 2106.11297) per example inside packed sequences.

Each example (and, for video, each of its time steps) is summarised into ``K``
learned tokens: an MLP on the layer-normalised tokens gives ``K`` attention
logits per token, a softmax over **that example's own tokens** (of that time
step) turns them into ``K`` spatial attention maps, and each learned token is the
attention-weighted sum of the example's tokens. Nothing crosses examples.

Output layout (slot-major): with ``E`` slots in use (the largest segment id in
the batch) and ``T`` time steps at most, the learned sequence has ``E * T * K`` positions; group ``g = (slot - 1) * T + t``
owns positions ``g*K .. g*K + K - 1``. Groups without tokens (empty slots,
shorter videos) are padding: segment id 0, zero features. Learned tokens keep
their example's slot id, have position ``(t, 0, k)`` and the slot grid becomes
``(T_e, 1, K)``.

:class:`TokenFuser` (V1.1) maps learned tokens back onto the original tokens:
the ``K`` tokens of a group are mixed by a linear map over ``K``, and every
original token takes a sigmoid-gated combination of its own group's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import segment_softmax

__all__ = ["TokenLearnerConfig", "TokenLearner", "TokenFuser", "LearnedTokens", "token_groups"]


@dataclass(frozen=True)
class TokenLearnerConfig:
    """Where and how to learn tokens.

    Attributes:
        num_tokens: ``K`` learned tokens per example (per time step for video).
        bottleneck: hidden width of the attention-map MLP.
        at_layer: number of transformer blocks run before the TokenLearner;
            ``None`` = half of the blocks.
        fuser: apply a :class:`TokenFuser` after ``fuser_blocks`` blocks on the
            learned tokens, returning to the full-length sequence for the rest.
        fuser_blocks: blocks run on the learned tokens before fusing back.
        max_frames: static bound on time steps per example for the output layout;
            ``None`` takes it from the batch's grids.
    """

    num_tokens: int = 8
    bottleneck: int = 64
    at_layer: int | None = None
    fuser: bool = False
    fuser_blocks: int = 1
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or self.bottleneck < 1 or self.fuser_blocks < 1:
            raise ValueError("num_tokens, bottleneck and fuser_blocks must be >= 1")
        if self.at_layer is not None and self.at_layer < 0:
            raise ValueError("at_layer must be >= 0")


@dataclass
class LearnedTokens:
    """A packed sequence of learned tokens.

    Attributes:
        x: ``[B, G*K, D]`` features (``G = E * frames`` groups, ``E`` = slots in use).
        segment_ids: int64 ``[B, G*K]``, slot id of each token, 0 for empty groups.
        positions: int64 ``[B, G*K, 3]``, ``(t, 0, k)``.
        grids: int64 ``[B, E, 3]``, ``(T_e, 1, K)`` per slot, 0 for empty slots.
        onehot: float ``[B, L, G]``, input token -> group membership (zero rows for padding).
        frames: ``T``, time steps per slot in the layout.
    """

    x: torch.Tensor
    segment_ids: torch.Tensor
    positions: torch.Tensor
    grids: torch.Tensor
    onehot: torch.Tensor
    frames: int


def token_groups(segment_ids: torch.Tensor, positions: torch.Tensor, num_slots: int, frames: int) -> torch.Tensor:
    """Group id ``(slot - 1) * frames + t`` of each token ``[B, L]``; padding gets ``num_slots * frames``."""
    seg = segment_ids.long()
    t = positions[..., 0].long().clamp(0, frames - 1)
    g = (seg - 1).clamp(min=0) * frames + t
    return torch.where(seg > 0, g, torch.full_like(g, num_slots * frames))


def _mlp(dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))


class TokenLearner(nn.Module):
    """``forward(x [B, L, D], segment_ids [B, L], positions [B, L, 3], grids [B, E, 3]) -> LearnedTokens``."""

    def __init__(self, dim: int, cfg: TokenLearnerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TokenLearnerConfig()
        self.norm = nn.LayerNorm(dim)
        self.attn = _mlp(dim, cfg.bottleneck, cfg.num_tokens)

    def frames(self, grids: torch.Tensor) -> int:
        if self.cfg.max_frames is not None:
            return int(self.cfg.max_frames)
        return max(1, int(grids[..., 0].max())) if grids.numel() else 1

    def forward(
        self, x: torch.Tensor, segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor
    ) -> LearnedTokens:
        b, l, d = x.shape
        k = self.cfg.num_tokens
        # slots in use (rows are filled from slot 1), so unused trailing slots cost nothing
        e = max(1, int(segment_ids.max())) if segment_ids.numel() else 1
        t = self.frames(grids)
        g = e * t
        group = token_groups(segment_ids, positions, e, t)  # [B, L] in [0, G]
        logits = self.attn(self.norm(x))  # [B, L, K]
        weights = segment_softmax(logits.float(), group, g + 1)  # softmax over each group's tokens
        onehot = F.one_hot(group, g + 1)[..., :g].to(x.dtype)  # [B, L, G]; padding -> zero row
        w = (onehot[..., None] * weights.to(x.dtype)[:, :, None, :]).reshape(b, l, g * k)
        out = torch.bmm(w.transpose(1, 2), x)  # [B, G*K, D]

        present = onehot.sum(1) > 0  # [B, G]: group has at least one token
        slot = torch.arange(e, device=x.device).repeat_interleave(t) + 1  # [G]
        seg_out = torch.where(present, slot[None], torch.zeros_like(slot)[None]).repeat_interleave(k, 1)
        tt = torch.arange(t, device=x.device).repeat(e).repeat_interleave(k)  # [G*K]
        kk = torch.arange(k, device=x.device).repeat(g)
        pos_out = torch.stack([tt, torch.zeros_like(tt), kk], -1)[None].expand(b, -1, -1)
        pos_out = pos_out * (seg_out > 0)[..., None]
        grids = grids.long()
        grids_out = torch.stack([grids[..., 0], torch.ones_like(grids[..., 0]), torch.full_like(grids[..., 0], k)], -1)
        grids_out = grids_out * (grids.prod(-1) > 0)[..., None]
        return LearnedTokens(out, seg_out, pos_out, grids_out, onehot, t)


class TokenFuser(nn.Module):
    """``forward(tokens: LearnedTokens-shaped [B, G*K, D], original [B, L, D], onehot [B, L, G]) -> [B, L, D]``.

    Padding tokens of ``original`` receive zeros.
    """

    def __init__(self, dim: int, cfg: TokenLearnerConfig | None = None):
        super().__init__()
        cfg = cfg or TokenLearnerConfig()
        k = cfg.num_tokens
        self.k = k
        self.norm_in = nn.LayerNorm(dim)
        self.mix = nn.Linear(k, k)  # over the K tokens of a group
        self.norm_out = nn.LayerNorm(dim)
        self.norm_orig = nn.LayerNorm(dim)
        self.gate = _mlp(dim, cfg.bottleneck, k)

    def forward(self, tokens: torch.Tensor, original: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        b, l, d = original.shape
        g, k = onehot.shape[-1], self.k
        y = self.norm_in(tokens).reshape(b, g, k, d)
        y = self.mix(y.transpose(2, 3)).transpose(2, 3)  # mix along K
        y = self.norm_out(y).reshape(b, g * k, d)
        gate = torch.sigmoid(self.gate(self.norm_orig(original)))  # [B, L, K]
        w = (onehot[..., None] * gate.to(onehot.dtype)[:, :, None, :]).reshape(b, l, g * k)
        return torch.bmm(w, y.to(w.dtype))

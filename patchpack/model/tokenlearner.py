"""TokenLearner (arXiv 2106.11297) per example inside packed sequences, and TokenFuser.

Each example (and, for video, each of its time steps: a *group*) is summarised
into ``K`` learned tokens. An MLP on the layer-normalised tokens gives ``K``
attention logits per token; the maps are normalised over **that group's own
tokens** and each learned token is the map-weighted sum of the group's tokens.
Nothing crosses examples.

* ``version="1.1"`` (default; the paper's recommended module): softmax over the
  group's tokens, weighted sum.
* ``version="1"``: sigmoid spatial attention with sum pooling, as the paper's
  original module. Its 4-layer 3x3 conv stack is replaced by the same per-token
  MLP as V1.1, because packed examples may have dropped tokens and no dense grid.

Layout per row: the row's groups in slot-then-time order are numbered by rank
(0, 1, ...) and group ``r`` owns learned positions ``r*K .. r*K + K - 1``, so a
row uses ``K * sum(T_i)`` positions over its own examples, and the rest of the
fixed ``learned_len`` is padding (segment id 0). ``learned_len`` is static: by
default ``K * max_frames * E`` (``E`` = slots per row = the loader's
``max_per_seq``), which holds for any batch the loader can make; a smaller
value may be configured when the packer caps groups per row (checked on the
device). Ranks, segment ids and positions are built with scatters and cumsums,
with no host sync. Learned tokens keep their example's slot id, have position
``(t, 0, k)``, and the slot grid becomes ``(T_e, 1, K)``.

:class:`TokenFuser` maps learned tokens back onto the original tokens (V1.1
design): the ``K`` tokens of a group are mixed by a linear map over ``K``
(zero-initialised), and every original token takes a sigmoid-gated combination
of its own group's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .segments import check, segment_softmax, segment_sum

__all__ = ["TokenLearnerConfig", "TokenLearner", "TokenFuser", "LearnedTokens", "token_groups", "learned_layout", "VERSIONS", "FUSERS"]

VERSIONS = ("1", "1.1")
FUSERS = ("none", "once", "per_block")


@dataclass(frozen=True)
class TokenLearnerConfig:
    """Where and how to learn tokens.

    Attributes:
        num_tokens: ``K`` learned tokens per example (per time step for video).
        bottleneck: hidden width of the attention-map MLP.
        version: ``"1.1"`` (softmax maps) or ``"1"`` (sigmoid maps, sum pooling).
        at_layer: transformer blocks run before the (first) TokenLearner;
            ``None`` = half of the blocks.
        fuser: ``"none"`` (default: the remaining blocks run on the learned tokens,
            the cheapest and the paper's image-classification setting);
            ``"per_block"`` (the paper's TokenLearner + TokenFuser design: every
            block from ``at_layer`` on learns its own tokens from the full sequence,
            runs on them and is fused back, with a residual); ``"once"`` (learn once,
            run ``fuser_blocks`` blocks on the learned tokens, fuse back, continue at
            full length). ``True``/``False`` mean ``"per_block"``/``"none"``.
        fuser_blocks: blocks on the learned tokens before fusing back (``"once"``).
        max_frames: ``T_max``, time steps per example the layout holds (1 for
            images; the loader's frame budget divided by the tubelet length for
            video). Checked on the device.
        learned_len: learned tokens per row; ``None`` = ``K * max_frames * E``.
            Must be a multiple of ``K``; a row needing more fails the device check.
    """

    num_tokens: int = 8
    bottleneck: int = 64
    version: str = "1.1"
    at_layer: int | None = None
    fuser: str = "none"
    fuser_blocks: int = 1
    max_frames: int = 1
    learned_len: int | None = None

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or self.bottleneck < 1 or self.fuser_blocks < 1:
            raise ValueError("num_tokens, bottleneck and fuser_blocks must be >= 1")
        if self.at_layer is not None and self.at_layer < 0:
            raise ValueError("at_layer must be >= 0")
        if isinstance(self.fuser, bool) or self.fuser is None:
            object.__setattr__(self, "fuser", "per_block" if self.fuser else "none")
        if self.fuser not in FUSERS:
            raise ValueError(f"unknown fuser {self.fuser!r}; expected one of {FUSERS}")
        object.__setattr__(self, "version", str(self.version))
        if self.version not in VERSIONS:
            raise ValueError(f"unknown TokenLearner version {self.version!r}; expected one of {VERSIONS}")
        if self.max_frames is None:
            object.__setattr__(self, "max_frames", 1)
        if self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if self.learned_len is not None and (self.learned_len < self.num_tokens or self.learned_len % self.num_tokens):
            raise ValueError(f"learned_len={self.learned_len} must be a positive multiple of num_tokens={self.num_tokens}")

    def length(self, num_slots: int) -> int:
        """Learned tokens per row for rows of ``num_slots`` example slots."""
        return self.learned_len if self.learned_len is not None else self.num_tokens * self.max_frames * num_slots


@dataclass
class LearnedTokens:
    """A packed sequence of learned tokens (``N`` = ``learned_len`` per row, ``R = N / K`` group places).

    Attributes:
        x: ``[B, N, D]`` features (float32); padding places are zero.
        segment_ids: int64 ``[B, N]``, slot id of each learned token, 0 for padding.
        positions: int64 ``[B, N, 3]``, ``(t, 0, k)``.
        grids: int64 ``[B, E, 3]``, ``(T_e, 1, K)`` per slot, 0 for empty slots.
        token_rank: int64 ``[B, L]``, the group place of each input token (``R`` for padding).
        groups: ``R``.
    """

    x: torch.Tensor | None
    segment_ids: torch.Tensor
    positions: torch.Tensor
    grids: torch.Tensor
    token_rank: torch.Tensor
    groups: int

    @property
    def padding_fraction(self) -> torch.Tensor:
        """Share of learned places that are padding (a 0-d tensor; read it outside the step)."""
        return (self.segment_ids == 0).float().mean()


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

    def layout(self, segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor) -> LearnedTokens:
        """The learned sequence's layout (``x`` is ``None``); it depends only on the batch, so
        several learners over the same batch share one."""
        k, t, e = self.cfg.num_tokens, self.cfg.max_frames, grids.shape[1]
        return learned_layout(segment_ids, positions, grids, k, t, self.cfg.length(e))

    def forward(
        self,
        x: torch.Tensor,
        segment_ids: torch.Tensor,
        positions: torch.Tensor,
        grids: torch.Tensor,
        layout: LearnedTokens | None = None,
    ) -> LearnedTokens:
        b, l, d = x.shape
        lay = layout if layout is not None else self.layout(segment_ids, positions, grids)
        k, r = self.cfg.num_tokens, lay.groups
        logits = self.attn(self.norm(x)).float()  # [B, L, K]
        if self.cfg.version == "1.1":
            weights = segment_softmax(logits, lay.token_rank, r + 1)
        else:
            weights = torch.sigmoid(logits)
        contrib = (weights[..., None] * x.float()[:, :, None, :]).reshape(b * l, k * d)
        flat = (lay.token_rank + torch.arange(b, device=x.device)[:, None] * (r + 1)).reshape(-1)
        pooled = contrib.new_zeros(b * (r + 1), k * d).index_add(0, flat, contrib)
        out = pooled.reshape(b, r + 1, k, d)[:, :r].reshape(b, r * k, d)  # float32
        return replace(lay, x=out)


def learned_layout(
    segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor, k: int, t: int, n: int
) -> LearnedTokens:
    """Per-row layout of ``K`` learned tokens per group in ``n`` places (see the module docstring)."""
    b, l = segment_ids.shape
    e = grids.shape[1]
    r, g = n // k, e * t
    dev = segment_ids.device
    seg = segment_ids.long()
    check((positions[..., 0] < t) | (seg == 0),
          f"an example has more than token_learner.max_frames={t} time steps; set max_frames to the "
          "loader's frame budget / tubelet")
    group = token_groups(seg, positions, e, t)  # [B, L] in [0, G]
    counts = segment_sum(torch.ones_like(group), group, g + 1)[:, :g]  # [B, G] tokens per group
    present = counts > 0
    rank = torch.cumsum(present.long(), 1) - 1  # place of each present group in its row
    check(rank[:, -1] < r, f"a row needs more than learned_len={n} learned tokens "
          f"(= {k} x its examples' time steps); raise token_learner.learned_len or leave it None")
    rank = torch.where(present, rank.clamp(max=r), torch.full_like(rank, r))  # absent -> dump place R
    token_rank = torch.cat([rank, rank.new_full((b, 1), r)], 1).gather(1, group)  # [B, L]; padding -> R

    gi = torch.arange(g, device=dev)
    slot_of = torch.where(present, (gi // t + 1)[None], torch.zeros_like(rank))
    time_of = (gi % t)[None].expand(b, -1)
    seg_r = torch.zeros(b, r + 1, dtype=torch.long, device=dev).scatter(1, rank, slot_of)[:, :r]
    t_r = torch.zeros(b, r + 1, dtype=torch.long, device=dev).scatter(1, rank, time_of)[:, :r]
    seg_out = seg_r.repeat_interleave(k, 1)
    kk = torch.arange(k, device=dev).repeat(r)[None].expand(b, -1)
    pos_out = torch.stack([t_r.repeat_interleave(k, 1), torch.zeros_like(kk), kk], -1) * (seg_out > 0)[..., None]
    gl = grids.long()
    grids_out = torch.stack([gl[..., 0], torch.ones_like(gl[..., 0]), torch.full_like(gl[..., 0], k)], -1)
    grids_out = grids_out * (gl.prod(-1) > 0)[..., None]
    return LearnedTokens(None, seg_out, pos_out, grids_out, token_rank, r)


class TokenFuser(nn.Module):
    """``forward(tokens [B, R*K, D], original [B, L, D], token_rank [B, L]) -> [B, L, D]`` (float32).

    Every original token reads only its own group's ``K`` learned tokens; padding
    tokens (rank ``R``) receive zeros.
    """

    def __init__(self, dim: int, cfg: TokenLearnerConfig | None = None):
        super().__init__()
        cfg = cfg or TokenLearnerConfig()
        k = cfg.num_tokens
        self.k = k
        self.norm_in = nn.LayerNorm(dim)
        self.mix = nn.Linear(k, k)  # over the K tokens of a group
        nn.init.zeros_(self.mix.weight)
        self.norm_out = nn.LayerNorm(dim)
        self.norm_orig = nn.LayerNorm(dim)
        self.gate = _mlp(dim, cfg.bottleneck, k)

    def forward(self, tokens: torch.Tensor, original: torch.Tensor, token_rank: torch.Tensor) -> torch.Tensor:
        b, l, d = original.shape
        k = self.k
        r = tokens.shape[1] // k
        y = self.norm_in(tokens).reshape(b, r, k, d)
        y = self.mix(y.transpose(2, 3)).transpose(2, 3)  # mix along K
        y = self.norm_out(y).float().reshape(b * r, k * d)
        y = torch.cat([y, y.new_zeros(1, k * d)], 0)  # the dump place: padding reads zeros
        flat = token_rank + torch.arange(b, device=tokens.device)[:, None] * r
        flat = torch.where(token_rank >= r, torch.full_like(flat, b * r), flat).reshape(-1)
        mine = y.index_select(0, flat).reshape(b, l, k, d)  # each token's own group
        gate = torch.sigmoid(self.gate(self.norm_orig(original)).float())  # [B, L, K]
        return torch.einsum("blk,blkd->bld", gate, mine).float()

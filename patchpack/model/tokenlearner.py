"""TokenLearner (arXiv 2106.11297) per example inside packed sequences, and TokenFuser.

Each example (per time step for video: a *group*) is summarised into ``K`` learned
tokens (§2.1, Eq. 1-2): ``z_i = A_i(X) = rho(X ⊙ gamma(alpha_i(X)))``, ``i = 1..K``, where
``alpha_i`` is a spatial attention map over the group's tokens, ``gamma`` broadcasts it
over channels and ``rho`` pools over space. Maps and pooling run over **the group's own
tokens**; nothing crosses examples. Versions (``TokenLearnerConfig.version``), as the
paper's code (scenic ``projects/token_learner``):

* ``"1.0"``: ``alpha`` is a stack of four 3 x 3 convolutions (``K`` channels, no bias,
  GELU between) over the layer-normalised spatial map, then a sigmoid; ``rho`` is a sum
  (``pooling="sum"``, scenic's default) or a mean over the group's tokens (``"mean"``).
  In a packed row each convolution runs over the example's own grid and time step: a
  token's neighbours are found from its ``(t, y, x)`` (:func:`~.segments.grid_neighbours`);
  cells outside the grid and dropped tokens are holes, zero at every layer (``SAME``
  zero padding on the example's grid). Padding and other examples are never read.
* ``"1.1"`` (default; the paper's recommended module): ``alpha`` is an MLP
  (LayerNorm, ``bottleneck`` hidden units, GELU, dropout) per token, normalised by a
  softmax over the group's tokens; ``rho`` is the weighted sum.

Both pool the un-normalised input tokens. The learned tokens of the whole batch are
laid out by :mod:`.learned_layout` (``learned_slots`` example places per row, per batch
or static); learned token ``k`` of group ``t`` has position ``(t, 0, k)``.

:class:`TokenFuser` (§2.2) maps learned tokens back onto the
original tokens: a group's ``K`` tokens are mixed by a linear map over ``K``
(zero-initialised), and every original token takes a sigmoid-gated combination (an MLP
with dropout on the LayerNorm-ed token) of its own group's tokens, then dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .learned_layout import LearnedLayout, learned_layout
from .segments import segment_softmax

__all__ = ["TokenLearnerConfig", "TokenLearner", "TokenFuser", "conv3x3", "VERSIONS", "POOLINGS", "FUSERS"]

VERSIONS = ("1.0", "1.1")
POOLINGS = ("sum", "mean")
FUSERS = ("none", "once", "per_block")
CONV_LAYERS = 4  # the paper's V1.0 attention: four 3 x 3 convolutions


@dataclass(frozen=True)
class TokenLearnerConfig:
    """Where and how to learn tokens.

    Attributes:
        num_tokens: ``K`` learned tokens per example (per time step for video).
        version: ``"1.1"`` (MLP + softmax maps) or ``"1.0"`` (3 x 3 conv stack + sigmoid maps).
        pooling: ``rho`` of V1.0: ``"sum"`` (scenic's default) or ``"mean"`` over the
            group's tokens. V1.1's softmax-weighted sum ignores it.
        bottleneck: hidden width of V1.1's attention MLP and of the fuser's gate MLP.
        dropout: dropout in V1.1's attention MLP and in the TokenFuser (training only).
        at_layer: transformer blocks run before the (first) TokenLearner;
            ``None`` = half of the blocks.
        fuser: ``"none"`` (default: the remaining blocks run on the learned tokens,
            the cheapest and the paper's image-classification setting);
            ``"per_block"`` (TokenLearner + TokenFuser: every block from ``at_layer`` on
            learns its own tokens from the full sequence, runs on them and is fused
            back, with a residual); ``"once"`` (learn once, run ``fuser_blocks`` blocks on
            the learned tokens, fuse back, continue at full length). ``True``/``False``
            mean ``"per_block"``/``"none"``.
        fuser_blocks: blocks on the learned tokens before fusing back (``"once"``).
        max_frames: ``T``, time steps per example the layout holds (1 for images; the
            loader's frame budget divided by the tubelet length for video). Checked on
            the device.
        learned_slots: example places per learned row (:mod:`.learned_layout`).
            ``None``: chosen per batch from the examples present (one host read per
            forward, bucketed). An int: static, no host read (the batch's examples must
            fit in ``B x learned_slots``; the loader's ``max_per_seq`` always does).
    """

    num_tokens: int = 8
    version: str = "1.1"
    pooling: str = "sum"
    bottleneck: int = 64
    dropout: float = 0.0
    at_layer: int | None = None
    fuser: str = "none"
    fuser_blocks: int = 1
    max_frames: int = 1
    learned_slots: int | None = None

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or self.bottleneck < 1 or self.fuser_blocks < 1:
            raise ValueError("num_tokens, bottleneck and fuser_blocks must be >= 1")
        if self.at_layer is not None and self.at_layer < 0:
            raise ValueError("at_layer must be >= 0")
        if isinstance(self.fuser, bool) or self.fuser is None:
            object.__setattr__(self, "fuser", "per_block" if self.fuser else "none")
        for name, value, allowed in (("fuser", self.fuser, FUSERS), ("TokenLearner version", self.version, VERSIONS),
                                     ("TokenLearner pooling", self.pooling, POOLINGS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        if self.max_frames is None:
            object.__setattr__(self, "max_frames", 1)
        if self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.learned_slots is not None and self.learned_slots < 1:
            raise ValueError("learned_slots must be >= 1 (or None: chosen per batch)")


def _mlp(dim: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    """scenic's ``MlpBlock``: dense, GELU, dropout, dense, dropout."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out),
                         nn.Dropout(dropout))


def conv3x3(x: torch.Tensor, neighbours: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A ``3 x 3`` convolution (``nn.Conv2d`` ``weight [C_out, C_in, 3, 3]``, padding 1) over packed grids.

    ``out[l] = sum_o W[:, :, o] x[neighbours[l, o]]``, a hole (index ``L``) reading zero:
    per offset ``o`` the projection ``x @ W_o`` is computed once for every token and gathered
    from the neighbour, so the work is ``L x C_in x 9 C_out`` (no ``[L, 9, C_in]`` copy).
    """
    b, l, c = x.shape
    k = weight.shape[0]
    y = (x @ weight.permute(1, 2, 3, 0).reshape(c, 9 * k).to(x.dtype)).reshape(b, l, 9, k)
    y = torch.cat([y, y.new_zeros(b, 1, 9, k)], 1)  # the hole row at L
    return y.gather(1, neighbours[..., None].expand(b, l, 9, k)).sum(2)


class TokenLearner(nn.Module):
    """``forward(x [B, L, D], layout) -> [B, R * T * K, D]`` float32 learned tokens (module docstring)."""

    def __init__(self, dim: int, cfg: TokenLearnerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TokenLearnerConfig()
        k = cfg.num_tokens
        self.norm = nn.LayerNorm(dim)
        if cfg.version == "1.0":
            self.convs = nn.ModuleList(nn.Conv2d(dim if i == 0 else k, k, 3, padding=1, bias=False)
                                       for i in range(CONV_LAYERS))
        else:
            self.attn = _mlp(dim, cfg.bottleneck, k, cfg.dropout)

    def layout(self, segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor,
               slots: int) -> LearnedLayout:
        """The batch's learned layout with ``slots`` places per row; it depends only on the
        batch, so several learners over one batch share it."""
        cfg = self.cfg
        return learned_layout(segment_ids, positions, grids, num_tokens=cfg.num_tokens, frames=cfg.max_frames,
                              slots=slots, neighbours=cfg.version == "1.0")

    def maps(self, x: torch.Tensor, layout: LearnedLayout) -> torch.Tensor:
        """Attention weights ``[B, L, K]`` float32: V1.0 sigmoid maps, V1.1 softmax over each group."""
        h = self.norm(x)
        if self.cfg.version == "1.0":
            for i, conv in enumerate(self.convs):
                h = conv3x3(h, layout.neighbours, conv.weight)
                h = F.gelu(h) if i < len(self.convs) - 1 else h
            return torch.sigmoid(h.float())
        b, l, k = *x.shape[:2], self.cfg.num_tokens
        logits = self.attn(h).float().reshape(1, b * l, k)
        return segment_softmax(logits, layout.token_group.reshape(1, -1), layout.num_groups + 1).reshape(b, l, k)

    def forward(self, x: torch.Tensor, layout: LearnedLayout) -> torch.Tensor:
        b, l, d = x.shape
        k, g = self.cfg.num_tokens, layout.num_groups
        weights = self.maps(x, layout)
        group, xf = layout.token_group.reshape(-1), x.float().reshape(b * l, d)
        w = weights.reshape(b * l, k)
        # rho: per learned token k, sum over each group's tokens (K passes keep memory at [B*L, D])
        pooled = torch.stack([xf.new_zeros(g + 1, d).index_add(0, group, w[:, i : i + 1] * xf) for i in range(k)], 1)
        pooled = pooled[:g]  # [G, K, D]; the dump group (padding) dropped
        if self.cfg.version == "1.0" and self.cfg.pooling == "mean":
            pooled = pooled / layout.group_sizes.clamp(min=1)[:, None, None]
        return pooled.reshape(b, -1, d)


class TokenFuser(nn.Module):
    """``forward(tokens [B, R*T*K, D], original [B, L, D], layout) -> [B, L, D]`` (float32).

    Every original token reads only its own group's ``K`` learned tokens; padding tokens
    receive zeros.
    """

    def __init__(self, dim: int, cfg: TokenLearnerConfig | None = None):
        super().__init__()
        cfg = cfg or TokenLearnerConfig()
        self.k = k = cfg.num_tokens
        self.norm_in = nn.LayerNorm(dim)
        self.mix = nn.Linear(k, k)  # over the K tokens of a group
        nn.init.zeros_(self.mix.weight)
        self.norm_out = nn.LayerNorm(dim)
        self.norm_orig = nn.LayerNorm(dim)
        self.gate = _mlp(dim, cfg.bottleneck, k, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, original: torch.Tensor, layout: LearnedLayout) -> torch.Tensor:
        b, l, d = original.shape
        k = self.k
        y = self.norm_in(tokens).reshape(-1, k, d)  # [G, K, D]
        y = self.mix(y.transpose(1, 2)).transpose(1, 2)  # mix along K
        y = self.norm_out(y).float().reshape(-1, k * d)
        y = torch.cat([y, y.new_zeros(1, k * d)], 0)  # the dump group: padding reads zeros
        mine = y.index_select(0, layout.token_group.reshape(-1)).reshape(b, l, k, d)
        gate = torch.sigmoid(self.gate(self.norm_orig(original)).float())  # [B, L, K]
        return self.drop(torch.einsum("blk,blkd->bld", gate, mine)).float()

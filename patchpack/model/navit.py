"""Reference NaViT over packed batches (arXiv 2307.06304), with optional TokenLearner.

Input is a :class:`patchpack.batch.PackedBatch` (or its tensors):
uint8 ``patches [B, L, D]`` (normalised here, on the device), ``segment_ids [B, L]``,
``positions [B, L, 3]`` and ``grids [B, E, 3]``. Output is ``logits [B, E, C]``,
one row per example slot; empty slots get zero logits (never NaN) and are
ignored by :meth:`NaViT.loss` (label -1).

Flow: normalise -> linear patch embedding + factorised positional embedding ->
pre-norm transformer blocks with attention masked to each example's segment ->
(TokenLearner after ``at_layer`` blocks, optionally TokenFuser) -> per-slot
masked pooling (mean or attention) -> LayerNorm + linear head.

Token dropping happens in the data pipeline (``patchpack.drop``) and is off for
evaluation loaders; the model itself has no stochastic layers unless
``dropout > 0``, which ``model.eval()`` turns off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SegmentMask, attend, build_mask, segment_softmax, segment_sum
from .posemb import FactorizedPosEmb, PosEmbConfig, token_grid_sizes
from .tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig

__all__ = ["NaViTConfig", "NaViT", "POOLS"]

POOLS = ("mean", "attention")
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class NaViTConfig:
    """NaViT hyper-parameters.

    Attributes:
        patch_size: ``p`` in pixels; tokens carry ``tubelet * p * p * channels`` values.
        tubelet: ``pt`` frames per token (1 for images).
        channels: ``C``.
        dim: model width.
        depth: transformer blocks.
        heads: attention heads (``dim`` must divide evenly).
        mlp_ratio: MLP hidden width / ``dim``.
        num_classes: classifier outputs.
        posemb: positional embedding (:class:`PosEmbConfig`).
        pool: ``"mean"`` (masked mean per slot) or ``"attention"`` (a learned query
            attending over each slot's tokens).
        qk_norm: LayerNorm on queries and keys (NaViT uses it for stability).
        dropout: dropout on attention/MLP outputs (training only).
        attention: attention backend, ``"auto"`` or one of ``attention.BACKENDS``.
        token_learner: :class:`TokenLearnerConfig` or ``None`` for none.
        pixel_mean, pixel_std: per-channel normalisation of 0..255 pixels.
    """

    patch_size: int = 16
    tubelet: int = 1
    channels: int = 3
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    posemb: PosEmbConfig = field(default_factory=PosEmbConfig)
    pool: str = "mean"
    qk_norm: bool = True
    dropout: float = 0.0
    attention: str = "auto"
    token_learner: TokenLearnerConfig | None = None
    pixel_mean: tuple[float, ...] = _IMAGENET_MEAN
    pixel_std: tuple[float, ...] = _IMAGENET_STD

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}; expected one of {POOLS}")
        if len(self.pixel_mean) != self.channels or len(self.pixel_std) != self.channels:
            raise ValueError("pixel_mean and pixel_std need one value per channel")
        if isinstance(self.posemb, dict):
            self.posemb = PosEmbConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.posemb.items()})
        if isinstance(self.token_learner, dict):
            self.token_learner = TokenLearnerConfig(**self.token_learner)
        tl = self.token_learner
        if tl is not None and self.learner_layer > self.depth:
            raise ValueError(f"token_learner.at_layer={tl.at_layer} exceeds depth={self.depth}")

    @property
    def token_dim(self) -> int:
        return self.tubelet * self.patch_size**2 * self.channels

    @property
    def learner_layer(self) -> int:
        """Blocks before the TokenLearner (meaningful when one is configured)."""
        tl = self.token_learner
        return (self.depth // 2 if tl.at_layer is None else tl.at_layer) if tl is not None else self.depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NaViTConfig":
        d = dict(d)
        for k in ("pixel_mean", "pixel_std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).reshape(b, l, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        out = attend(q, k, v, mask).transpose(1, 2).reshape(b, l, d)
        return self.drop(self.proj(out))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class AttentionPool(nn.Module):
    """A learned query per head attending over each slot's tokens (multi-head attention pooling)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Parameter(torch.randn(heads, self.head_dim) * 0.02)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
        b, l, d = x.shape
        k, v = self.kv(x).reshape(b, l, 2, self.heads, self.head_dim).unbind(2)  # [B, L, H, Dh]
        scores = (k.float() * self.query).sum(-1) * self.head_dim**-0.5  # [B, L, H]
        a = segment_softmax(scores, segment_ids, num_slots + 1)
        pooled = segment_sum(a[..., None] * v.float(), segment_ids, num_slots + 1)[:, 1:]  # [B, E, H, Dh]
        return self.proj(pooled.reshape(b, num_slots, d).to(x.dtype))


def _unpack(batch: Any, segment_ids, positions, grids):
    if segment_ids is None:  # a PackedBatch (or anything with its fields)
        return batch.patches, batch.segment_ids, batch.positions, batch.grids
    return batch, segment_ids, positions, grids


class NaViT(nn.Module):
    """NaViT classifier over packed sequences; see the module docstring."""

    def __init__(self, cfg: NaViTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or NaViTConfig()
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std, dtype=torch.float32), persistent=False)
        self.embed = nn.Linear(cfg.token_dim, cfg.dim)
        self.posemb = FactorizedPosEmb(cfg.dim, cfg.posemb)
        self.embed_norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.dropout) for _ in range(cfg.depth)
        )
        self.learner = TokenLearner(cfg.dim, cfg.token_learner) if cfg.token_learner is not None else None
        self.fuser = (
            TokenFuser(cfg.dim, cfg.token_learner)
            if cfg.token_learner is not None and cfg.token_learner.fuser
            else None
        )
        self.attn_pool = AttentionPool(cfg.dim, cfg.heads) if cfg.pool == "attention" else None
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ pieces

    def normalize(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[B, L, D]`` -> float32 normalised, channels last inside a token."""
        c = self.cfg.channels
        x = patches.float().reshape(*patches.shape[:-1], -1, c)
        return ((x - self.pixel_mean) / self.pixel_std).reshape(patches.shape)

    def _mask(self, segment_ids: torch.Tensor, x: torch.Tensor) -> SegmentMask:
        dtype = x.dtype
        if x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        requires_grad = torch.is_grad_enabled() and self.training
        return build_mask(segment_ids, self.cfg.attention, dtype=dtype, requires_grad=requires_grad)

    def forward_features(
        self,
        batch: Any,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        grids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled [B, E, dim], present bool [B, E])``; pooled is zero for empty slots."""
        patches, segment_ids, positions, grids = _unpack(batch, segment_ids, positions, grids)
        seg = segment_ids.long()
        num_slots = grids.shape[1]
        sizes = token_grid_sizes(grids, seg)
        x = self.embed(self.normalize(patches)) + self.posemb(positions, sizes)
        x = self.embed_norm(x)
        mask = self._mask(seg, x)
        cfg = self.cfg
        stop = cfg.learner_layer if self.learner is not None else cfg.depth
        for blk in self.blocks[:stop]:
            x = blk(x, mask)
        if self.learner is not None:
            learned = self.learner(x, seg, positions, grids)
            lmask = self._mask(learned.segment_ids, x)
            y = learned.x
            if self.fuser is None:
                for blk in self.blocks[stop:]:
                    y = blk(y, lmask)
                x, seg = y, learned.segment_ids
            else:
                mid = min(cfg.depth, stop + cfg.token_learner.fuser_blocks)
                for blk in self.blocks[stop:mid]:
                    y = blk(y, lmask)
                x = x + self.fuser(y, x, learned.onehot)
                for blk in self.blocks[mid:]:
                    x = blk(x, mask)
        counts = segment_sum(torch.ones_like(seg, dtype=torch.float32), seg, num_slots + 1)[:, 1:]  # [B, E]
        if self.attn_pool is not None:
            pooled = self.attn_pool(x, seg, num_slots)
        else:
            sums = segment_sum(x.float(), seg, num_slots + 1)[:, 1:]
            pooled = (sums / counts.clamp(min=1)[..., None]).to(x.dtype)
        present = (counts > 0) & (grids.prod(-1) > 0)
        return pooled * present[..., None], present

    def forward(
        self,
        batch: Any,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, E, num_classes]``; ``forward(batch)`` or ``forward(patches, segment_ids, positions, grids)``."""
        patches, segment_ids, positions, grids = _unpack(batch, segment_ids, positions, grids)
        pooled, present = self.forward_features(patches, segment_ids, positions, grids)
        logits = self.head(self.norm(pooled))
        return logits * present[..., None]

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over filled slots (``labels >= 0``); 0 when there are none."""
        valid = labels >= 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[valid].float(), labels[valid], label_smoothing=label_smoothing)

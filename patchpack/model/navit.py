"""Reference NaViT over packed batches (arXiv 2307.06304), with optional TokenLearner.

Input is a :class:`patchpack.loader.batch.PackedBatch` (or its tensors):
uint8 ``patches [B, L, D]`` (normalised here, on the device), ``segment_ids [B, L]``,
``positions [B, L, 3]`` and ``grids [B, E, 3]``. Output is ``logits [B, E, C]``,
one row per example slot; empty slots get zero logits (never NaN) and are
ignored by :meth:`NaViT.loss` (label -1).

Flow (§2.1): normalise -> linear patch embedding + positional embedding (:mod:`.posemb`) ->
pre-norm transformer blocks with attention masked to each example's segment ->
(TokenLearner after ``at_layer`` blocks; TokenFuser per block or once, see
:class:`TokenLearnerConfig`) -> per-slot pooling (masked mean or MAP head) ->
LayerNorm + linear head.

Each attention mask is built once per forward (one for the input layout, one
for the learned layout) and shared by all blocks and learners. The residual
stream stays float32 under bf16 autocast (every branch is added back in fp32).
The forward reads no tensor on the host (with a TokenLearner and
``learned_slots=None``, exactly one integer: the batch's example count, see
:mod:`.learned_layout`): shapes come from the batch's static sizes and the config,
and broken contracts (an example longer than
``max_example_tokens``, a position outside the tables, more time steps than
``token_learner.max_frames``) fail through device-side checks.

Token dropping happens in the data pipeline and is off for evaluation loaders;
the model itself has no stochastic layers unless ``dropout > 0``, which
``model.eval()`` turns off.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import BACKENDS, AttentionRequest, SegmentMask, attend, build_mask, explain_backend
from .heads import MAPHead, masked_mean
from .learned_layout import HostInt, slots_for
from .posemb import PosEmb, PosEmbConfig, token_grid_sizes
from .segments import real_slots
from .tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig

log = logging.getLogger("patchpack.model")

__all__ = ["NaViTConfig", "NaViT", "Block", "POOLS"]

POOLS = ("mean", "map")
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
        num_classes: classifier outputs; 0: no classifier (``forward`` returns the normalised
            pooled features ``[B, E, dim]``, e.g. for an image tower).
        posemb: positional embedding (:class:`PosEmbConfig`).
        pool: ``"mean"`` (masked mean per slot) or ``"map"`` (multihead attention
            pooling + LayerNorm + MLP, as NaViT/SigLIP).
        qk_norm: LayerNorm on queries and keys (NaViT uses it for stability).
        dropout: dropout on attention/MLP outputs (training only).
        attention: attention backend, ``"auto"`` or a name in :data:`~.backends.BACKENDS`
            (which one runs and why: :meth:`NaViT.attention_backend`, logged at build).
        max_example_tokens: static bound on tokens per example (the loader's patch
            budget x time steps); lets ``"auto"`` pick the linear-memory ``window``
            backend on CPU. ``None``: no bound known (dense ``sdpa`` on CPU).
        token_learner: :class:`TokenLearnerConfig` or ``None`` for none.
        save_memory: recompute cheap parts in backward instead of storing them (pixel
            normalisation before the embedding; GELU and the MLP's second matmul;
            the ``window`` attention kernel from q, k, v). Measured at B=8, L=4096,
            dim 128: about 40% less peak memory for a few % more step time.
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
    max_example_tokens: int | None = None
    token_learner: TokenLearnerConfig | None = None
    save_memory: bool = True
    pixel_mean: tuple[float, ...] = _IMAGENET_MEAN
    pixel_std: tuple[float, ...] = _IMAGENET_STD

    def __post_init__(self) -> None:
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {self.num_classes}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}; expected one of {POOLS}")
        if len(self.pixel_mean) != self.channels or len(self.pixel_std) != self.channels:
            raise ValueError("pixel_mean and pixel_std need one value per channel")
        if self.attention != "auto" and self.attention not in BACKENDS:
            raise ValueError(BACKENDS.unknown(self.attention))
        if self.max_example_tokens is not None and self.max_example_tokens < 1:
            raise ValueError("max_example_tokens must be >= 1 (or None)")
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
    def __init__(self, dim: int, heads: int, qk_norm: bool, dropout: float, save_memory: bool = False):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.save_memory = save_memory
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).reshape(b, l, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        if self.save_memory and mask.backend == "window":
            # store q, k, v rather than the ~3x larger key/value windows and their mask-shaped products
            out = _recompute(lambda q, k, v: attend(q, k, v, mask), q, k, v)
        else:
            out = attend(q, k, v, mask)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, l, d)))


def _recompute(fn, *args):
    """``fn(*args)`` storing only ``args`` for backward (``fn`` runs again there) while autograd records."""
    if torch.is_grad_enabled() and any(a.requires_grad for a in args if isinstance(a, torch.Tensor)):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class Block(nn.Module):
    """Pre-norm transformer block; the residual stream stays float32.

    With ``save_memory`` the GELU and the MLP's second matmul are recomputed in
    backward, so the block stores the ``[B, L, hidden]`` pre-activation once instead
    of twice, and ``window`` attention is recomputed from q, k, v instead of storing
    its key/value windows.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float, save_memory: bool = False):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm, dropout, save_memory)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.save_memory = save_memory

    def forward(self, x: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask).float()
        h = self.mlp[0](self.norm2(x))
        tail = lambda h: self.mlp[3](self.mlp[2](self.mlp[1](h)))  # noqa: E731
        return x + (_recompute(tail, h) if self.save_memory else tail(h)).float()


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
        self.posemb = PosEmb(cfg.dim, cfg.posemb)
        self.embed_norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.dropout, cfg.save_memory) for _ in range(cfg.depth)
        )
        tl = cfg.token_learner
        stop = cfg.learner_layer
        n_learners = 0 if tl is None else (cfg.depth - stop if tl.fuser == "per_block" else 1)
        n_fusers = 0 if tl is None or tl.fuser == "none" else n_learners
        self.learners = nn.ModuleList(TokenLearner(cfg.dim, tl) for _ in range(n_learners))
        self.fusers = nn.ModuleList(TokenFuser(cfg.dim, tl) for _ in range(n_fusers))
        self.map_head = MAPHead(cfg.dim, cfg.heads, cfg.mlp_ratio) if cfg.pool == "map" else None
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.apply(self._init)
        for f in self.fusers:  # the fuser's token mix starts at zero (official TokenFuser init)
            nn.init.zeros_(f.mix.weight)
        self._explained: set = set()
        log.info("NaViT built; %s", self._build_note())

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ pieces

    def attention_backend(self, device: torch.device | str, dtype: torch.dtype = torch.float32,
                          requires_grad: bool = True, length: int | None = None) -> tuple[str, str]:
        """``(backend, reason)`` for the input rows on ``device`` (one line: which runs and why).

        ``length=None`` (not known before a batch) assumes rows long enough for ``window``.
        """
        req = AttentionRequest(torch.device(device), dtype, requires_grad, self.cfg.dim // self.cfg.heads, length,
                               self.cfg.max_example_tokens)
        return explain_backend(self.cfg.attention, req)

    def _build_note(self) -> str:
        """The backend training would use on this machine's default device, or why it cannot train."""
        cuda = torch.cuda.is_available()
        device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
        try:
            return self.attention_backend(device, dtype)[1]
        except ValueError as exc:
            return f"{exc} (inference only)"

    def normalize(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[B, L, D]`` -> float32 normalised, channels last inside a token."""
        c = self.cfg.channels
        x = patches.float().reshape(*patches.shape[:-1], -1, c)
        return ((x - self.pixel_mean) / self.pixel_std).reshape(patches.shape)

    def _mask(self, segment_ids: torch.Tensor, x: torch.Tensor, bound: int | None, num_slots: int) -> SegmentMask:
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        # a backward can follow whenever autograd records, in train() or eval() alike
        requires_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        mask = build_mask(segment_ids, self.cfg.attention, max_segment_len=bound, num_slots=num_slots,
                          dtype=dtype, requires_grad=requires_grad, head_dim=self.cfg.dim // self.cfg.heads)
        if not torch.compiler.is_compiling() and mask.reason not in self._explained:  # each new choice once
            self._explained.add(mask.reason)
            log.info("NaViT %s", mask.reason)
        return mask

    def _embed(self, patches: torch.Tensor, positions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        embed = lambda p: self.embed(self.normalize(p))  # noqa: E731
        if self.cfg.save_memory and torch.is_grad_enabled() and self.embed.weight.requires_grad:
            # store the uint8 pixels, not their float32 normalisation (4x the bytes)
            x = checkpoint(embed, patches, use_reentrant=False).float()
        else:
            x = embed(patches).float()
        return self.embed_norm(x + self.posemb(positions, sizes)).float()

    def _learned_slots(self, grids: torch.Tensor) -> HostInt | int:
        """``learned_slots`` (static), or the batch's example count on its way to the host."""
        tl = self.cfg.token_learner
        if tl.learned_slots is not None:
            return tl.learned_slots
        return HostInt(real_slots(grids).sum())

    def _learned(self, x, seg, positions, grids, mask, slots) -> tuple[torch.Tensor, Any]:
        """Blocks from ``at_layer`` on with TokenLearner (+ TokenFuser): ``(x, layout or None)``;
        the layout is returned when the tail ran on learned tokens (pool over it)."""
        cfg, tl = self.cfg, self.cfg.token_learner
        b, stop = seg.shape[0], cfg.learner_layer
        r = slots if isinstance(slots, int) else slots_for(slots.value(), b)
        layout = self.learners[0].layout(seg, positions, grids, r)
        lmask = self._mask(layout.segment_ids, x, tl.num_tokens * tl.max_frames, r)
        if tl.fuser == "per_block":  # learn -> block -> fuse, with a residual, at every block
            for blk, learner, fuser in zip(self.blocks[stop:], self.learners, self.fusers):
                x = x + fuser(blk(learner(x, layout), lmask), x, layout)
            return x, None
        y = self.learners[0](x, layout)
        if tl.fuser == "none":
            for blk in self.blocks[stop:]:
                y = blk(y, lmask)
            return y, layout
        mid = min(cfg.depth, stop + tl.fuser_blocks)
        for blk in self.blocks[stop:mid]:
            y = blk(y, lmask)
        x = x + self.fusers[0](y, x, layout)
        for blk in self.blocks[mid:]:
            x = blk(x, mask)
        return x, None

    def _pool(self, x: torch.Tensor, seg: torch.Tensor, num_slots: int) -> torch.Tensor:
        if self.map_head is not None:
            return self.map_head(x, seg, num_slots)
        return masked_mean(x, seg, num_slots)

    def forward_features(
        self,
        batch: Any,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        grids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled [B, E, dim] float32, present bool [B, E])``; pooled is zero for empty slots."""
        patches, segment_ids, positions, grids = _unpack(batch, segment_ids, positions, grids)
        cfg = self.cfg
        seg = segment_ids.long()
        num_slots = grids.shape[1]
        slots = self._learned_slots(grids) if self.learners else None  # started early, read late
        x = self._embed(patches, positions, token_grid_sizes(grids, seg))
        mask = self._mask(seg, x, cfg.max_example_tokens, num_slots)
        for blk in self.blocks[: cfg.learner_layer if self.learners else cfg.depth]:
            x = blk(x, mask)
        layout = None
        if self.learners:
            x, layout = self._learned(x, seg, positions, grids, mask, slots)
        if layout is not None:
            pooled = layout.to_slots(self._pool(x, layout.segment_ids, layout.slots))
        else:
            pooled = self._pool(x, seg, num_slots)
        present = real_slots(grids)
        return pooled * present[..., None], present

    def forward(
        self,
        batch: Any,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, E, num_classes]`` (features ``[B, E, dim]`` when ``num_classes=0``); ``forward(batch)``
        or ``forward(patches, segment_ids, positions, grids)``."""
        patches, segment_ids, positions, grids = _unpack(batch, segment_ids, positions, grids)
        pooled, present = self.forward_features(patches, segment_ids, positions, grids)
        logits = self.head(self.norm(pooled))
        return logits * present[..., None]

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over filled slots (``labels >= 0``); 0 when there are none.

        Sync-free: per-slot losses are masked and divided by ``max(1, filled slots)``.
        """
        valid = labels >= 0
        per_slot = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.clamp(min=0).reshape(-1),
            label_smoothing=label_smoothing, reduction="none",
        )
        return (per_slot * valid.reshape(-1)).sum() / valid.sum().clamp(min=1)

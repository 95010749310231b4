"""Factorised positional embeddings over ``(t, y, x)`` token positions.

Each axis is embedded on its own and the axis embeddings are combined (NaViT
§3.1 "factorized & fractional positional embeddings"). Kinds (``PosEmbConfig.kind``):

* ``"learned"``: a learned table per axis indexed by the absolute grid position.
  The default tables (``max_size = (16, 256, 256)``) cover every side the default
  fitter can produce (a side is at most the patch budget, 256, for a 1-patch-wide
  image); a position beyond a table fails a device-side check with a hint, never
  silently sharing the last row.
* ``"fractional"``: a learned table per axis indexed by the fractional position
  ``(pos + 0.5) / size`` (``size`` = the example's grid size on that axis),
  quantised to ``buckets`` bins, so every resolution spans the whole table.
* ``"sinusoidal"``: fixed sin/cos features of the absolute position.
* ``"fourier"``: learned Fourier features ``sin/cos(2 pi f c)`` of the
  fractional coordinate ``c`` with learned frequencies ``f``, then a linear map.
* ``"none"``: zeros.

Combination (``PosEmbConfig.combine``): ``"sum"`` (each axis embeds to ``dim``),
``"concat"`` (the axes split ``dim``), ``"product"`` (elementwise; learned tables
then start around 1). ``temporal=True`` includes the ``t`` axis (tubelets);
images have ``t = 0`` everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .segments import check

__all__ = ["PosEmbConfig", "FactorizedPosEmb", "token_grid_sizes", "KINDS", "COMBINES"]

KINDS = ("learned", "fractional", "sinusoidal", "fourier", "none")
COMBINES = ("sum", "concat", "product")


@dataclass(frozen=True)
class PosEmbConfig:
    """Positional embedding choice.

    Attributes:
        kind: one of :data:`KINDS`.
        combine: one of :data:`COMBINES`.
        max_size: ``(T, H, W)`` table sizes in tokens for ``learned``; must cover the
            loader's largest grid (time steps, and the fitter's patch budget per side).
        buckets: bins of the fractional coordinate for ``fractional``.
        num_frequencies: Fourier frequencies per axis (``fourier``).
        fourier_std: std of the initial frequencies (cycles per example side).
        temporal: embed the ``t`` axis too (needed for video tubelets).
    """

    kind: str = "learned"
    combine: str = "sum"
    max_size: tuple[int, int, int] = (16, 256, 256)
    buckets: int = 32
    num_frequencies: int = 16
    fourier_std: float = 4.0
    temporal: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown positional embedding {self.kind!r}; expected one of {KINDS}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combination {self.combine!r}; expected one of {COMBINES}")
        if min(self.max_size) < 1 or self.buckets < 1 or self.num_frequencies < 1:
            raise ValueError("max_size, buckets and num_frequencies must be >= 1")


def token_grid_sizes(grids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Per-token grid size ``[B, L, 3]`` (``(T, H, W)`` of the token's example; 1 for padding).

    Args:
        grids: int ``[B, E, 3]``.
        segment_ids: int ``[B, L]``, 0 = padding, ``1..E`` = slot.
    """
    slot = (segment_ids.long() - 1).clamp(min=0)
    sizes = grids.long().gather(1, slot[..., None].expand(-1, -1, 3))
    sizes = sizes.masked_fill((segment_ids == 0)[..., None], 1)
    return sizes.clamp(min=1)


def _sinusoid(pos: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / max(1, half))
    ang = pos.float()[..., None] * freq
    out = torch.cat([ang.sin(), ang.cos()], -1)
    if dim % 2:
        out = torch.cat([out, out.new_zeros(*out.shape[:-1], 1)], -1)
    return out


class _Axis(nn.Module):
    """Embedding of one axis to ``dim`` features."""

    def __init__(self, dim: int, kind: str, table: int, cfg: PosEmbConfig, around_one: bool):
        super().__init__()
        self.kind, self.dim, self.buckets = kind, dim, cfg.buckets
        if kind in ("learned", "fractional"):
            rows = table if kind == "learned" else cfg.buckets
            self.table = nn.Parameter(torch.randn(rows, dim) * 0.02 + (1.0 if around_one else 0.0))
        elif kind == "fourier":
            self.freq = nn.Parameter(torch.randn(cfg.num_frequencies) * cfg.fourier_std)
            self.proj = nn.Linear(2 * cfg.num_frequencies, dim)

    def forward(self, pos: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        if self.kind == "learned":
            rows = self.table.shape[0]
            check(pos < rows, f"a token position is beyond the learned position table ({rows} rows on this axis); "
                  "raise PosEmbConfig.max_size to the loader's largest grid (the fit patch budget per side)")
            return self.table[pos.long().clamp(0, rows - 1)]
        if self.kind == "sinusoidal":
            return _sinusoid(pos, self.dim)
        frac = (pos.float() + 0.5) / size.float()
        if self.kind == "fractional":
            idx = (frac * self.buckets).long().clamp(0, self.buckets - 1)
            return self.table[idx]
        if self.kind == "fourier":
            ang = 2 * math.pi * frac[..., None] * self.freq
            return self.proj(torch.cat([ang.sin(), ang.cos()], -1))
        return pos.new_zeros((*pos.shape, self.dim), dtype=torch.float32)


class FactorizedPosEmb(nn.Module):
    """``forward(positions [B, L, 3], sizes [B, L, 3]) -> [B, L, dim]`` float embeddings.

    ``sizes`` is each token's example grid (:func:`token_grid_sizes`); only the
    fractional kinds use it.
    """

    def __init__(self, dim: int, cfg: PosEmbConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PosEmbConfig()
        self.dim = dim
        self.axes = [0, 1, 2] if cfg.temporal else [1, 2]
        n = len(self.axes)
        if cfg.combine == "concat":
            widths = [dim // n + (1 if i < dim % n else 0) for i in range(n)]
        else:
            widths = [dim] * n
        self.widths = widths
        around_one = cfg.combine == "product"
        self.embed = nn.ModuleList(
            _Axis(w, cfg.kind, cfg.max_size[a], cfg, around_one) for w, a in zip(widths, self.axes)
        )

    def forward(self, positions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        parts = [emb(positions[..., a], sizes[..., a]) for emb, a in zip(self.embed, self.axes)]
        if self.cfg.combine == "concat":
            return torch.cat(parts, -1)
        out = parts[0]
        for p in parts[1:]:
            out = out + p if self.cfg.combine == "sum" else out * p
        return out

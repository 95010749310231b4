"""Positional embeddings over ``(t, y, x)`` token positions: NaViT's comparison grid.

NaViT (arXiv 2307.06304) §2.1 "Factorized & fractional positional embeddings" embeds each
axis on its own and combines the axis embeddings; §3.4 compares the variants below
against two baselines. ``PosEmbConfig.kind`` picks the function, ``coords`` the schema
(factorized kinds only) and ``combine`` how the axes meet:

Factorized kinds: ``phi_a(u_a)`` per axis ``a`` in ``(t,) y, x``, where the coordinate is

* ``coords="absolute"``: the patch index, ``u = p`` (§2.1: ``phi(p): [0, maxLen] -> R^D``);
* ``coords="fractional"``: the relative distance along the example, ``r = p / n`` with
  ``n`` the example's grid side on that axis (§2.1: ``phi(r): [0, 1] -> R^D``), scaled to
  ``u = r * S`` with ``S = fractional_scale``. ``u`` is exact and continuous: nothing is
  quantised, so two positions of one example never share an embedding, whatever ``n``.

and the per-axis function is

* ``"learned"``: a learned table. Absolute: row ``p`` of a table of ``max_size[a]`` rows.
  Fractional: a table of ``S + 1`` rows sampled at ``r = j / S``, linearly interpolated:
  ``phi(u) = (1 - w) T[i] + w T[i + 1]`` with ``i = floor(u)``, ``w = u - i``.
* ``"sinusoidal"``: ``phi(u) = [sin(u w_j), cos(u w_j)]_j`` with ``w_j = 10000^(-j / h)``,
  ``j < h = D_a / 2`` (Transformer sin-cos). Fractional at ``n = S`` equals absolute.
* ``"fourier"``: learned Fourier features (the NeRF-style embedding §2.1 names):
  ``phi(c) = W [sin(2 pi f c), cos(2 pi f c)] + b`` with learned frequencies ``f`` and
  ``c = p / max_size[a]`` (absolute) or ``c = r`` (fractional).

Combination (§2.1 sums; §3.4 also tries stacking and multiplying): ``"sum"``
``phi_t + phi_y + phi_x`` (each ``D`` wide), ``"concat"`` ``[phi_t; phi_y; phi_x]`` (the axes
split ``D``), ``"product"`` ``phi_t * phi_y * phi_x`` elementwise (learned tables then start
around 1).

Baselines of §3.4 (not factorized; ``combine="sum"``, ``coords="absolute"`` only):

* ``"learned_2d"``: Pix2Struct's learned table over ``(y, x)`` pairs,
  ``T[y * max_size[2] + x]``: every pair must be seen in training.
* ``"vit_1d"``: ViT's learned 1-D table for a reference grid ``reference_grid = (H0, W0)``,
  bilinearly resized to each example's own grid ``(h, w)``, exactly as
  ``F.interpolate(T.view(H0, W0, D), (h, w), mode="bilinear", align_corners=False)``:
  source coordinate ``s = (y + 0.5) * H0 / h - 0.5`` clamped at 0, then linear between
  ``floor(s)`` and the next row (clamped at ``H0 - 1``); likewise for ``x``. Computed
  per token (no per-example loop, no host read).

With ``temporal=True`` the ``t`` axis is embedded too (tubelets); the two baselines then
add a factorized learned ``t`` term of the same ``coords``. ``"none"`` gives zeros.
Every variant is a function of a token's position and its own example's grid only, so
an example's embeddings do not depend on what it is packed with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .segments import check

__all__ = ["PosEmbConfig", "PosEmb", "token_grid_sizes", "sinusoidal", "resized_table", "KINDS", "FACTORIZED", "COORDS",
           "COMBINES"]

KINDS = ("learned", "sinusoidal", "fourier", "learned_2d", "vit_1d", "none")
FACTORIZED = ("learned", "sinusoidal", "fourier")
COORDS = ("absolute", "fractional")
COMBINES = ("sum", "concat", "product")


@dataclass(frozen=True)
class PosEmbConfig:
    """Positional embedding choice (module docstring).

    Attributes:
        kind: one of :data:`KINDS`.
        coords: ``"absolute"`` (patch index) or ``"fractional"`` (``p / n`` of the
            example's side); factorized kinds only.
        combine: one of :data:`COMBINES`; factorized kinds only.
        max_size: ``(T, H, W)`` rows of the absolute tables (and ``learned_2d``'s
            ``H x W`` table); must exceed the loader's largest position (time steps, and
            the fitter's patch budget per side). Also ``fourier``'s absolute scale.
        fractional_scale: ``S``: fractional coordinates ``r`` in ``[0, 1)`` become
            ``u = r * S``; the learned fractional table has ``S + 1`` rows (linearly
            interpolated), sin-cos reads ``u`` like an absolute index.
        reference_grid: ``(H0, W0)`` of ``vit_1d``'s table (``H0 * W0`` rows).
        num_frequencies: Fourier frequencies per axis (``fourier``).
        fourier_std: std of the initial frequencies (cycles per unit of ``c``).
        temporal: embed the ``t`` axis too (needed for video tubelets).
    """

    kind: str = "learned"
    coords: str = "absolute"
    combine: str = "sum"
    max_size: tuple[int, int, int] = (16, 256, 256)
    fractional_scale: int = 64
    reference_grid: tuple[int, int] = (16, 16)
    num_frequencies: int = 16
    fourier_std: float = 4.0
    temporal: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (("positional embedding", self.kind, KINDS), ("coords", self.coords, COORDS),
                                     ("combination", self.combine, COMBINES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        if self.kind in ("learned_2d", "vit_1d") and (self.combine != "sum" or self.coords != "absolute"):
            raise ValueError(f"posemb kind {self.kind!r} is not factorized: it takes combine='sum' and "
                             "coords='absolute' only (pick kind='learned' or 'sinusoidal' to vary them)")
        if min(self.max_size) < 1 or min(self.reference_grid) < 1 or self.fractional_scale < 1 \
                or self.num_frequencies < 1:
            raise ValueError("max_size, reference_grid, fractional_scale and num_frequencies must be >= 1")


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


def sinusoidal(u: torch.Tensor, dim: int) -> torch.Tensor:
    """``[sin(u w_j), cos(u w_j)]`` with ``w_j = 10000^(-j / h)``, ``h = dim // 2`` (odd ``dim``: a zero last)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=u.device, dtype=torch.float32) / max(1, half))
    ang = u.float()[..., None] * freq
    out = torch.cat([ang.sin(), ang.cos()], -1)
    if dim % 2:
        out = torch.cat([out, out.new_zeros(*out.shape[:-1], 1)], -1)
    return out


def _table(rows: int, dim: int, around_one: bool = False) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, dim) * 0.02 + (1.0 if around_one else 0.0))


def _lerp_rows(table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(1 - w) T[i] + w T[i + 1]`` at continuous row coordinates ``u >= 0`` (``i + 1`` clamped)."""
    last = table.shape[0] - 1
    i = u.floor().clamp(0, last)
    w = (u - i).clamp(0, 1)[..., None]
    lo, hi = i.long(), (i.long() + 1).clamp(max=last)
    return table[lo] * (1 - w) + table[hi] * w


def _check_table(pos: torch.Tensor, rows: int, axis: str) -> None:
    check(pos < rows, lambda: f"a token position is beyond the learned position table ({rows} rows on axis {axis}); "
          "raise PosEmbConfig.max_size to the loader's largest grid (the fit patch budget per side)")


class _Axis(nn.Module):
    """One axis of a factorized embedding: ``phi(pos, size) -> [..., dim]``."""

    def __init__(self, dim: int, axis: int, cfg: PosEmbConfig, kind: str, around_one: bool):
        super().__init__()
        self.dim, self.axis, self.kind, self.cfg = dim, axis, kind, cfg
        self.fractional = cfg.coords == "fractional"
        if kind == "learned":
            rows = cfg.fractional_scale + 1 if self.fractional else cfg.max_size[axis]
            self.table = _table(rows, dim, around_one)
        elif kind == "fourier":
            self.freq = nn.Parameter(torch.randn(cfg.num_frequencies) * cfg.fourier_std)
            self.proj = nn.Linear(2 * cfg.num_frequencies, dim)

    def coordinate(self, pos: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """``u``: ``p`` (absolute) or ``p / n * S`` (fractional), float32."""
        if self.fractional:
            return pos.float() / size.float() * self.cfg.fractional_scale
        return pos.float()

    def forward(self, pos: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return pos.new_zeros((*pos.shape, self.dim), dtype=torch.float32)
        if self.kind == "learned" and not self.fractional:
            _check_table(pos, self.table.shape[0], "tyx"[self.axis])
            return self.table[pos.long().clamp(0, self.table.shape[0] - 1)]
        u = self.coordinate(pos, size)
        if self.kind == "learned":
            return _lerp_rows(self.table, u)
        if self.kind == "sinusoidal":
            return sinusoidal(u, self.dim)
        c = u / (self.cfg.fractional_scale if self.fractional else self.cfg.max_size[self.axis])
        ang = 2 * math.pi * c[..., None] * self.freq
        return self.proj(torch.cat([ang.sin(), ang.cos()], -1))


class PosEmb(nn.Module):
    """``forward(positions [B, L, 3], sizes [B, L, 3]) -> [B, L, dim]`` float32 embeddings.

    ``sizes`` is each token's example grid (:func:`token_grid_sizes`); the fractional
    coordinates and ``vit_1d`` use it.
    """

    def __init__(self, dim: int, cfg: PosEmbConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PosEmbConfig()
        self.dim = dim
        self.axes = [0, 1, 2] if cfg.temporal else [1, 2]
        if cfg.kind in FACTORIZED or cfg.kind == "none":
            n = len(self.axes)
            self.widths = [dim // n + (1 if i < dim % n else 0) for i in range(n)] if cfg.combine == "concat" \
                else [dim] * n
            self.embed = nn.ModuleList(_Axis(w, a, cfg, cfg.kind, cfg.combine == "product")
                                       for w, a in zip(self.widths, self.axes))
            return
        self.widths = [dim]
        self.time = _Axis(dim, 0, cfg, "learned", False) if cfg.temporal else None
        if cfg.kind == "learned_2d":
            self.table = _table(cfg.max_size[1] * cfg.max_size[2], dim)
        else:
            self.table = _table(cfg.reference_grid[0] * cfg.reference_grid[1], dim)

    def forward(self, positions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind in ("learned_2d", "vit_1d"):
            out = self._joint(positions, sizes)
            return out + self.time(positions[..., 0], sizes[..., 0]) if self.time is not None else out
        parts = [emb(positions[..., a], sizes[..., a]) for emb, a in zip(self.embed, self.axes)]
        if self.cfg.combine == "concat":
            return torch.cat(parts, -1)
        out = parts[0]
        for p in parts[1:]:
            out = out + p if self.cfg.combine == "sum" else out * p
        return out

    def _joint(self, positions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        y, x = positions[..., 1], positions[..., 2]
        if self.cfg.kind == "learned_2d":
            hmax, wmax = self.cfg.max_size[1:]
            _check_table(y, hmax, "y")
            _check_table(x, wmax, "x")
            return self.table[y.long().clamp(0, hmax - 1) * wmax + x.long().clamp(0, wmax - 1)]
        return resized_table(self.table, self.cfg.reference_grid, y, x, sizes[..., 1], sizes[..., 2])


def _source_rows(dst: torch.Tensor, out_size: torch.Tensor, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source rows ``(lo, hi, weight of hi)`` as ``F.interpolate(align_corners=False)`` computes them."""
    s = ((dst.float() + 0.5) * (in_size / out_size.float()) - 0.5).clamp(min=0)
    lo = s.floor().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo.long(), hi.long(), s - lo


def resized_table(table: torch.Tensor, grid: tuple[int, int], y: torch.Tensor, x: torch.Tensor,
                  h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row ``(y, x)`` of ``table`` (``[H0 * W0, D]``, a ``grid`` in row-major order) bilinearly
    resized to ``(h, w)``, per token: ``[..., D]``."""
    h0, w0 = grid
    y0, y1, wy = _source_rows(y, h, h0)
    x0, x1, wx = _source_rows(x, w, w0)
    wy, wx = wy[..., None], wx[..., None]
    row = lambda yy, xx: table[yy * w0 + xx]  # noqa: E731
    return (row(y0, x0) * (1 - wx) + row(y0, x1) * wx) * (1 - wy) + (row(y1, x0) * (1 - wx) + row(y1, x1) * wx) * wy

"""Choose each example's resolution under a token/pixel budget, keeping its aspect ratio.

All sizes are in pixels; grids are in patches. The output size is always a
multiple of the patch size with at least one patch per side.

Modes (``FitConfig.mode``):

* ``"native"``: keep the source size, shrunk to satisfy ``max_patches`` and
  ``max_pixels``. With ``allow_upsample`` the size is scaled, up or down, to the
  largest one the budget allows (aspect kept): small images are enlarged to fill
  it. Without any budget there is nothing to fill and the source size is kept.
* ``"side-uniform"`` / ``"side-truncnorm"``: NaViT §3.2 resolution sampling. A
  target side ``R`` is drawn from ``U(side_min, side_max)`` or a normal with
  ``side_mean`` / ``side_std`` truncated to ``[side_min, side_max]``; the
  *longer* side is resized to ``R``.
* ``"area-uniform"`` / ``"area-truncnorm"``: the same draw, but ``R`` is the
  geometric-mean side (``sqrt(h*w) = R``), so area is sampled instead.

Sampled sizes are then capped by the same budget as native. Defined edge cases:

* Tiny images (smaller than a patch) are enlarged to one patch on the short
  side: every example has at least one token, whether or not
  ``allow_upsample`` is set (that flag governs only enlargement beyond this).
* Extreme aspect ratios (1x5000, 5000x1): the short side gets one patch and
  the long side is capped by the budget, so the aspect ratio is kept only
  as far as the budget allows (the grid is ``1 x max_patches`` at worst).
* Rounding is to the nearest patch multiple; if that overshoots the budget,
  the side that is relatively most enlarged loses a patch until it fits.
* ``grid_multiple = m > 1`` (Qwen2-VL's ``merge_size``: its vision tower merges ``m x m``
  patches): the grid is then moved by :func:`merge_grid` to sides that are multiples of
  ``m``, at least ``m x m``, still under the budget (which must allow ``m * m`` patches);
  a side may grow by up to ``m - 1`` patches past the source size when rounding up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FitConfig", "fit", "fit_grid", "merge_grid", "MODES"]

MODES = ("native", "side-uniform", "side-truncnorm", "area-uniform", "area-truncnorm")


@dataclass(frozen=True)
class FitConfig:
    """How to choose an example's resolution.

    Attributes:
        patch_size: patch side ``p`` in pixels.
        max_patches: cap on ``(H/p) * (W/p)`` per frame; ``None`` for no cap.
        max_pixels: cap on ``H * W`` per frame; ``None`` for no cap.
        mode: one of :data:`MODES`.
        side_min, side_max: range of the sampled side in pixels (sampled modes).
        side_mean, side_std: truncated-normal parameters in pixels (``*-truncnorm``);
            default mean is the middle of the range and std a quarter of it.
        allow_upsample: whether sizes may exceed the source size (always true up
            to one patch). In ``"native"`` mode it enlarges each example to fill the
            patch budget; in sampled modes it lets the drawn side exceed the source.
        grid_multiple: ``m``, both grid sides are multiples of it (1: any grid). 2 for
            Qwen2-VL's 2x2 patch merge; the patch budget must allow ``m * m`` patches.
    """

    patch_size: int = 16
    max_patches: int | None = 256
    max_pixels: int | None = None
    mode: str = "native"
    side_min: int = 64
    side_max: int = 512
    side_mean: float | None = None
    side_std: float | None = None
    allow_upsample: bool = False
    grid_multiple: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fit mode {self.mode!r}; expected one of {MODES}")
        if self.patch_size < 1:
            raise ValueError("patch_size must be >= 1")
        if self.max_patches is not None and self.max_patches < 1:
            raise ValueError("max_patches must be >= 1")
        if self.max_pixels is not None and self.max_pixels < self.patch_size**2:
            raise ValueError("max_pixels must allow at least one patch")
        if not 0 < self.side_min <= self.side_max:
            raise ValueError("need 0 < side_min <= side_max")
        m = self.grid_multiple
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"grid_multiple must be an integer >= 1, got {m!r}")
        if self.patch_budget is not None and self.patch_budget < m * m:
            raise ValueError(f"grid_multiple={m} needs a budget of at least {m * m} patches per frame, "
                             f"got {self.patch_budget} (raise max_patches/max_pixels)")

    @property
    def patch_budget(self) -> int | None:
        """Largest number of patches per frame any fitted example may have."""
        caps = []
        if self.max_patches is not None:
            caps.append(self.max_patches)
        if self.max_pixels is not None:
            caps.append(self.max_pixels // self.patch_size**2)
        return min(caps) if caps else None


def _sample_side(cfg: FitConfig, rng: np.random.Generator) -> float:
    lo, hi = float(cfg.side_min), float(cfg.side_max)
    if cfg.mode.endswith("uniform"):
        return float(rng.uniform(lo, hi))
    mean = cfg.side_mean if cfg.side_mean is not None else (lo + hi) / 2
    std = cfg.side_std if cfg.side_std is not None else (hi - lo) / 4
    if std <= 0:
        return min(max(mean, lo), hi)
    for _ in range(64):  # rejection sampling; acceptance is high for sane parameters
        r = rng.normal(mean, std)
        if lo <= r <= hi:
            return float(r)
    return float(min(max(mean, lo), hi))


def merge_grid(grid_h: int, grid_w: int, merge_size: int = 2, max_patches: int | None = None) -> tuple[int, int]:
    """A grid moved to the nearest sides that are multiples of ``merge_size`` (``m``), in patches.

    Each side is rounded to the nearest multiple of ``m`` (at least ``m``); while the product
    exceeds ``max_patches`` one side loses ``m``: the one whose loss keeps the aspect ratio
    closest to the input's. The result never goes below ``m x m`` (so ``max_patches < m*m``
    yields ``m x m``). :func:`fit_grid` applies it with ``FitConfig.grid_multiple``.
    """
    m = int(merge_size)
    if m < 1 or grid_h < 1 or grid_w < 1:
        raise ValueError(f"need positive grid sides and merge_size, got {grid_h}x{grid_w}, m={m}")
    gh = max(m, int(math.floor(grid_h / m + 0.5)) * m)
    gw = max(m, int(math.floor(grid_w / m + 0.5)) * m)
    if max_patches is not None:
        aspect = math.log(grid_w / grid_h)
        while gh * gw > max_patches and (gh > m or gw > m):
            cut_h = abs(math.log(gw / (gh - m)) - aspect) if gh > m else math.inf
            cut_w = abs(math.log((gw - m) / gh) - aspect) if gw > m else math.inf
            if cut_h <= cut_w:
                gh -= m
            else:
                gw -= m
    return gh, gw


def fit_grid(height: int, width: int, cfg: FitConfig, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Grid ``(gh, gw)`` in patches for a ``height x width`` source (see module doc)."""
    gh, gw = _patch_grid(height, width, cfg, rng)
    if cfg.grid_multiple > 1:
        gh, gw = merge_grid(gh, gw, cfg.grid_multiple, cfg.patch_budget)
    return gh, gw


def _patch_grid(height: int, width: int, cfg: FitConfig, rng: np.random.Generator | None) -> tuple[int, int]:
    """:func:`fit_grid` before the ``grid_multiple`` rounding."""
    if height < 1 or width < 1:
        raise ValueError(f"source size must be positive, got {height}x{width}")
    p = cfg.patch_size
    h, w = float(height), float(width)
    scale = 1.0
    if cfg.mode != "native":
        if rng is None:
            raise ValueError(f"fit mode {cfg.mode!r} samples a size and needs an rng")
        r = _sample_side(cfg, rng)
        scale = r / max(h, w) if cfg.mode.startswith("side") else r / math.sqrt(h * w)
    elif cfg.allow_upsample and cfg.patch_budget is not None:
        scale = math.inf  # native with upsampling: as large as the budget allows (capped below)
    if not cfg.allow_upsample:
        scale = min(scale, 1.0)
    budget = cfg.patch_budget
    if budget is not None:
        scale = min(scale, math.sqrt(budget * p * p / (h * w)))
    gh = max(1, round(h * scale / p))
    gw = max(1, round(w * scale / p))
    if budget is not None:
        gh, gw = min(gh, budget), min(gw, budget)  # a 1-patch side leaves the other at most `budget`
        while gh * gw > budget:
            # shrink the side enlarged most relative to the source aspect
            if gh > 1 and (gw == 1 or gh / h >= gw / w):
                gh -= 1
            else:
                gw -= 1
    if cfg.mode == "native" and cfg.allow_upsample and budget is not None and gh * gw < budget:
        # rounding at the budget can lose a whole row of a thin grid: never fewer tokens than without the flag
        plain = FitConfig(patch_size=p, max_patches=cfg.max_patches, max_pixels=cfg.max_pixels)
        kept = _patch_grid(height, width, plain, None)
        if kept[0] * kept[1] > gh * gw:
            return kept
    return gh, gw


def fit(height: int, width: int, cfg: FitConfig, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Fitted ``(height, width)`` in pixels: multiples of ``cfg.patch_size``, aspect kept."""
    gh, gw = fit_grid(height, width, cfg, rng)
    return gh * cfg.patch_size, gw * cfg.patch_size

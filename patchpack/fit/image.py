"""Choose each example's resolution under a token/pixel budget, keeping its aspect ratio.

All sizes are in pixels; grids are in patches. The output size is always a
multiple of the patch size with at least one patch per side.

Modes (``FitConfig.mode``):

* ``"native"``: keep the source size, shrunk to satisfy ``max_patches`` and
  ``max_pixels``. With ``allow_upsample`` the size is scaled, up or down, to the
  largest one the budget allows (aspect kept): small images are enlarged to fill
  it. Without any budget there is nothing to fill and the source size is kept.
* The sampled modes, NaViT §3.2 "Resolution sampling strategies" (arXiv 2307.06304).
  The paper's resolution ``R`` is the *effective* side: an ``h x w`` image has
  resolution ``R = sqrt(h * w)`` (the side of the square of the same area), and a
  drawn ``R`` resizes it to ``(h * R / sqrt(h*w), w * R / sqrt(h*w))``, aspect kept
  (A.1: "resized the image to have a total of r² pixels"). One ``u`` is drawn per
  example from a distribution ``D`` on ``[-1, 1]`` and rescaled linearly, with
  ``t = (u + 1) / 2`` and ``[lo, hi] = [side_min, side_max]``:

  - ``"side-uniform"``: ``u ~ U(-1, 1)``, ``R = lo + t * (hi - lo)``, so ``R ~ U(lo, hi)``
    (the side length is uniform; biased toward short sequences, as ``tokens ∝ R²``).
  - ``"side-truncnorm"``: ``u ~ N(truncnorm_mean, truncnorm_std²)`` truncated to
    ``[-1, 1]``, ``R = lo + t * (hi - lo)``. The paper's best setting (Figure 7) is the
    default: ``N_t(-0.5, 1)``, a bias toward low resolutions.
  - ``"area-uniform"``: ``u ~ U(-1, 1)``, ``R² = lo² + t * (hi² - lo²)``, so the area
    ``R²`` (the sequence length) is uniform: ``P(R <= r) = (r² - lo²) / (hi² - lo²)``.
  - ``"area-truncnorm"``: the truncated normal ``u`` above, rescaled to the area.

  ``side_max`` defaults to the budget's side ``p * sqrt(patch budget)`` (256 at
  ``p=16``, ``max_patches=256``, the paper's ``r ∈ [64, 256]`` of A.1), so no draw is
  cut by the budget. Sampled modes resize every image to its drawn ``R``, up or down, as the
  paper does (``allow_upsample=False`` keeps a draw above the source's own ``R`` at the source
  size instead).

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
from statistics import NormalDist

import numpy as np

__all__ = ["FitConfig", "fit", "fit_grid", "merge_grid", "sample_side", "truncated_normal", "MODES"]

MODES = ("native", "side-uniform", "side-truncnorm", "area-uniform", "area-truncnorm")

_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class FitConfig:
    """How to choose an example's resolution.

    Attributes:
        patch_size: patch side ``p`` in pixels.
        max_patches: cap on ``(H/p) * (W/p)`` per frame; ``None`` for no cap.
        max_pixels: cap on ``H * W`` per frame; ``None`` for no cap.
        mode: one of :data:`MODES` (formulas in the module doc).
        side_min, side_max: range ``[lo, hi]`` of the sampled effective side
            ``R = sqrt(h*w)`` in pixels (sampled modes; area modes draw ``R²`` in
            ``[lo², hi²]``). ``side_max=None``: ``p * sqrt(patch budget)``, the largest
            side the budget holds (needs a budget in sampled modes).
        truncnorm_mean, truncnorm_std: the normal of ``u`` before its truncation to
            ``[-1, 1]`` (``*-truncnorm``), in the paper's units of ``u``: the range
            ``[lo, hi]`` is ``[-1, 1]``. Default ``N_t(-0.5, 1)``, the paper's best.
        allow_upsample: whether sizes may exceed the source size (always true up
            to one patch). In ``"native"`` mode it enlarges each example to fill the
            patch budget; in sampled modes it lets the drawn side exceed the source.
            ``None`` (default): ``False`` in native mode, ``True`` in the sampled modes, which
            resize every image to its drawn ``R`` as the paper does (§3.2).
        grid_multiple: ``m``, both grid sides are multiples of it (1: any grid). 2 for
            Qwen2-VL's 2x2 patch merge; the patch budget must allow ``m * m`` patches.
    """

    patch_size: int = 16
    max_patches: int | None = 256
    max_pixels: int | None = None
    mode: str = "native"
    side_min: int = 64
    side_max: int | None = None
    truncnorm_mean: float = -0.5
    truncnorm_std: float = 1.0
    allow_upsample: bool | None = None
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
        m = self.grid_multiple
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"grid_multiple must be an integer >= 1, got {m!r}")
        if self.patch_budget is not None and self.patch_budget < m * m:
            raise ValueError(f"grid_multiple={m} needs a budget of at least {m * m} patches per frame, "
                             f"got {self.patch_budget} (raise max_patches/max_pixels)")
        if self.mode != "native":
            self._check_sampling()

    def _check_sampling(self) -> None:
        if self.side_max is None and self.patch_budget is None:
            raise ValueError(f"fit mode {self.mode!r} without max_patches/max_pixels needs side_max")
        lo, hi = self.side_range
        if not 0 < lo <= hi:
            how = "" if self.side_max is not None else f" (= patch_size * sqrt({self.patch_budget} patches))"
            raise ValueError(f"need 0 < side_min <= side_max, got side_min={lo}, side_max={hi:g}{how}: "
                             "lower side_min or set side_max")
        if self.mode.endswith("truncnorm"):
            if not self.truncnorm_std > 0:
                raise ValueError(f"truncnorm_std must be > 0, got {self.truncnorm_std}")
            if _normal_mass(self.truncnorm_mean, self.truncnorm_std, -1.0, 1.0) < 1e-9:
                raise ValueError(f"truncnorm_mean={self.truncnorm_mean} with truncnorm_std={self.truncnorm_std} "
                                 "leaves no probability in [-1, 1] (u is in units of the range [side_min, side_max])")

    @property
    def upsamples(self) -> bool:
        """Whether fitted sizes may exceed the source size (:attr:`allow_upsample` resolved)."""
        return self.mode != "native" if self.allow_upsample is None else bool(self.allow_upsample)

    @property
    def patch_budget(self) -> int | None:
        """Largest number of patches per frame any fitted example may have."""
        caps = []
        if self.max_patches is not None:
            caps.append(self.max_patches)
        if self.max_pixels is not None:
            caps.append(self.max_pixels // self.patch_size**2)
        return min(caps) if caps else None

    @property
    def side_range(self) -> tuple[float, float]:
        """``(lo, hi)``: the sampled effective side's range in pixels (``side_max`` resolved)."""
        hi = self.side_max
        if hi is None:
            budget = self.patch_budget
            hi = self.patch_size * math.sqrt(budget) if budget is not None else math.inf
        return float(self.side_min), float(hi)


def _normal_cdf(z: float) -> float:
    """``Φ(z)``, accurate in the lower tail (``erfc`` keeps the digits ``1 + erf`` loses)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _tail_bounds(mean: float, std: float, lo: float, hi: float) -> tuple[float, float, bool]:
    """Standardized bounds, mirrored when both lie above the mean (so ``Φ`` works in its precise tail)."""
    a, b = (lo - mean) / std, (hi - mean) / std
    return (-b, -a, True) if a > 0 else (a, b, False)


def _normal_mass(mean: float, std: float, lo: float, hi: float) -> float:
    """``P(lo <= X <= hi)`` for ``X ~ N(mean, std²)``."""
    a, b, _ = _tail_bounds(mean, std, lo, hi)
    return _normal_cdf(b) - _normal_cdf(a)


def truncated_normal(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float) -> float:
    """One draw of ``N(mean, std²)`` truncated to ``[lo, hi]``, by inverse-CDF sampling.

    ``x = mean + std * Φ⁻¹(Φ(α) + q * (Φ(β) - Φ(α)))`` with ``α = (lo - mean) / std``,
    ``β = (hi - mean) / std`` and ``q ~ U(0, 1)``: exactly one uniform draw from ``rng``
    whatever the parameters (so replaying a draw advances a generator the same way),
    no rejection loop, and a continuous law with no mass at the bounds (unlike a
    clipped normal). ``std <= 0`` or ``lo == hi``: the mean clipped to the bounds.

    Raises:
        ValueError: ``lo > hi``, or an interval so far in the tail that it holds no
            probability in double precision.
    """
    if not lo <= hi:
        raise ValueError(f"truncated_normal needs lo <= hi, got [{lo}, {hi}]")
    q = float(rng.random())
    if std <= 0 or lo == hi:
        return min(max(float(mean), lo), hi)
    a, b, mirrored = _tail_bounds(mean, std, lo, hi)
    pa, pb = _normal_cdf(a), _normal_cdf(b)
    if not pb > pa:
        raise ValueError(f"N({mean}, {std}²) has no probability in [{lo}, {hi}]")
    p = min(max(pa + q * (pb - pa), math.nextafter(0.0, 1.0)), math.nextafter(1.0, 0.0))
    z = min(max(_STANDARD_NORMAL.inv_cdf(p), a), b)
    return float(mean + std * (-z if mirrored else z))


def sample_side(cfg: FitConfig, rng: np.random.Generator) -> float:
    """The effective side ``R = sqrt(h*w)`` in pixels that a sampled mode draws (one uniform draw).

    See the module doc for each mode's formula (NaViT §3.2): ``u`` on ``[-1, 1]`` is
    rescaled linearly to ``[side_min, side_max]`` (``side-*``) or to
    ``[side_min², side_max²]`` (``area-*``, then ``R = sqrt(area)``).
    """
    if cfg.mode == "native":
        raise ValueError("fit mode 'native' draws no size")
    lo, hi = cfg.side_range
    if cfg.mode.endswith("truncnorm"):
        u = truncated_normal(rng, cfg.truncnorm_mean, cfg.truncnorm_std, -1.0, 1.0)
    else:
        u = float(rng.uniform(-1.0, 1.0))
    t = (u + 1.0) / 2.0
    if cfg.mode.startswith("side"):
        return lo + t * (hi - lo)
    return math.sqrt(lo * lo + t * (hi * hi - lo * lo))


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
        scale = sample_side(cfg, rng) / math.sqrt(h * w)  # the drawn R is the effective side sqrt(h*w)
    elif cfg.upsamples and cfg.patch_budget is not None:
        scale = math.inf  # native with upsampling: as large as the budget allows (capped below)
    if not cfg.upsamples:
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
    if cfg.mode == "native" and cfg.upsamples and budget is not None and gh * gw < budget:
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

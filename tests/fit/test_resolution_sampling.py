"""NaViT §3.2 resolution sampling: each sampled mode's drawn sizes against its formula."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.fit import FitConfig, fit_grid
from patchpack.fit.image import sample_side, truncated_normal

SAMPLED = ("side-uniform", "side-truncnorm", "area-uniform", "area-truncnorm")


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def u_cdf(mode: str, u: float, mean: float, std: float) -> float:
    """CDF of the paper's ``u`` on ``[-1, 1]``: uniform, or N(mean, std²) truncated to [-1, 1]."""
    if mode.endswith("uniform"):
        return (u + 1) / 2
    lo, hi = phi((-1 - mean) / std), phi((1 - mean) / std)
    return (phi((u - mean) / std) - lo) / (hi - lo)


def side_cdf(mode: str, r: float, lo: float, hi: float, mean: float = -0.5, std: float = 1.0) -> float:
    """P(R <= r): ``u`` rescaled linearly to [lo, hi] (side) or to [lo², hi²] (area)."""
    t = (r - lo) / (hi - lo) if mode.startswith("side") else (r * r - lo * lo) / (hi * hi - lo * lo)
    return u_cdf(mode, 2 * t - 1, mean, std)


def ks_distance(samples: np.ndarray, cdf) -> float:
    x = np.sort(samples)
    f = np.array([cdf(v) for v in x])
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(SAMPLED), lo=st.integers(8, 300), span=st.integers(1, 600),
       mean=st.floats(-1.5, 1.5), std=st.floats(0.2, 3.0), seed=st.integers(0, 2**32 - 1))
def test_drawn_side_follows_the_mode_formula(mode, lo, span, mean, std, seed):
    cfg = FitConfig(patch_size=16, max_patches=None, mode=mode, side_min=lo, side_max=lo + span,
                    truncnorm_mean=mean, truncnorm_std=std)
    rng = np.random.default_rng(seed)
    r = np.array([sample_side(cfg, rng) for _ in range(4000)])
    assert r.min() >= lo and r.max() <= lo + span
    # 4000 draws: the KS distance of the true law exceeds 0.04 with probability ~1e-5
    assert ks_distance(r, lambda v: side_cdf(mode, v, lo, lo + span, mean, std)) < 0.04


@pytest.mark.parametrize("mode", SAMPLED)
def test_fitted_square_sizes_follow_the_formula(mode):
    """Through the fit itself, at one pixel per patch: the grid side of a square source is round(R)."""
    cfg = FitConfig(patch_size=1, max_patches=None, mode=mode, side_min=64, side_max=384, allow_upsample=True)
    rng = np.random.default_rng(7)
    grids = np.array([fit_grid(1000, 1000, cfg, rng) for _ in range(6000)])
    assert np.all(grids[:, 0] == grids[:, 1])
    # rounding moves R by <= 0.5 px: compare with the formula's CDF at the rounded values
    assert ks_distance(grids[:, 0].astype(float), lambda v: side_cdf(mode, min(max(v, 64), 384), 64, 384)) < 0.03


def test_uniform_area_and_uniform_side_differ_as_the_paper_says():
    """Uniform side biases toward short sequences, uniform area toward long sides (§3.2)."""
    draws = {}
    for mode in ("side-uniform", "area-uniform"):
        cfg = FitConfig(patch_size=1, max_patches=None, mode=mode, side_min=64, side_max=384, allow_upsample=True)
        rng = np.random.default_rng(3)
        draws[mode] = np.array([fit_grid(500, 500, cfg, rng)[0] for _ in range(4000)], float)
    assert abs(np.median(draws["side-uniform"]) - 224) < 8  # the median side of U(64, 384)
    assert abs(np.median(draws["area-uniform"]) - math.sqrt((64**2 + 384**2) / 2)) < 8  # ~275: median area


@settings(max_examples=150, deadline=None)
@given(mode=st.sampled_from(SAMPLED), h=st.integers(1, 5000), w=st.integers(1, 5000),
       p=st.sampled_from([1, 8, 14, 16]), seed=st.integers(0, 10_000))
def test_the_drawn_side_is_the_effective_side_aspect_kept(mode, h, w, p, seed):
    """The resize sets sqrt(h' * w') = R (the paper's effective resolution), not the longer side."""
    cfg = FitConfig(patch_size=p, max_patches=None, mode=mode, side_min=32, side_max=640, allow_upsample=True)
    r = sample_side(cfg, np.random.default_rng(seed))
    scale = r / math.sqrt(h * w)
    want = (max(1, round(h * scale / p)), max(1, round(w * scale / p)))
    assert fit_grid(h, w, cfg, np.random.default_rng(seed)) == want


def test_side_modes_resize_the_effective_side_not_the_longer_one():
    cfg = FitConfig(patch_size=16, max_patches=None, mode="side-uniform", side_min=160, side_max=160,
                    allow_upsample=True)
    gh, gw = fit_grid(100, 400, cfg, np.random.default_rng(0))
    assert (gh, gw) == (5, 20)  # 80 x 320 px: sqrt(80 * 320) = 160 (the longer side would be 160 px: 3 x 10)


def test_default_range_fills_the_budget_without_hitting_it():
    """Defaults: side_max is the budget's side p*sqrt(max_patches) (A.1's r in [64, 256] at p=16, 256 patches)."""
    assert FitConfig(mode="side-uniform").side_range == (64.0, 256.0)
    assert FitConfig(patch_size=14, max_patches=256, mode="area-uniform").side_range == (64.0, 224.0)
    for mode in SAMPLED:
        capped = FitConfig(mode=mode, allow_upsample=True)
        free = FitConfig(mode=mode, allow_upsample=True, max_patches=None, side_max=256)
        a, b = np.random.default_rng(1), np.random.default_rng(1)
        cut = sum(fit_grid(3000, 4000, capped, a) != fit_grid(3000, 4000, free, b) for _ in range(2000))
        assert cut < 0.05 * 2000, (mode, cut)  # the old default side_max=512 cut about half the draws


def test_truncnorm_default_is_the_papers_best_low_biased_normal():
    cfg = FitConfig(mode="side-truncnorm")
    assert (cfg.truncnorm_mean, cfg.truncnorm_std) == (-0.5, 1.0)
    rng = np.random.default_rng(0)
    r = np.array([sample_side(cfg, rng) for _ in range(4000)])
    assert r.mean() < 150  # below the middle of [64, 256]: biased toward low resolutions


def test_sampling_validation():
    with pytest.raises(ValueError, match="side_min"):
        FitConfig(patch_size=8, max_patches=48, mode="side-uniform")  # budget side 55 px < side_min 64
    FitConfig(patch_size=8, max_patches=48)  # native mode does not sample: fine
    with pytest.raises(ValueError, match="side_max"):
        FitConfig(max_patches=None, mode="area-uniform")
    with pytest.raises(ValueError, match="truncnorm_std"):
        FitConfig(mode="side-truncnorm", truncnorm_std=0.0)
    with pytest.raises(ValueError, match="no probability"):
        FitConfig(mode="area-truncnorm", truncnorm_mean=80.0, truncnorm_std=1.0)
    with pytest.raises(ValueError, match="native"):
        sample_side(FitConfig(), np.random.default_rng(0))


@settings(max_examples=200, deadline=None)
@given(mean=st.floats(-50, 50), std=st.floats(1e-3, 20), lo=st.floats(-30, 30), width=st.floats(1e-3, 30),
       seed=st.integers(0, 2**32 - 1))
def test_truncated_normal_stays_strictly_inside_and_draws_once(mean, std, lo, width, seed):
    hi = lo + width
    a, b = (lo - mean) / std, (hi - mean) / std
    if phi_tail_mass(a, b) < 1e-250:
        return  # no probability in double precision: a ValueError, tested below
    rng, twin = np.random.default_rng(seed), np.random.default_rng(seed)
    x = truncated_normal(rng, mean, std, lo, hi)
    twin.random()
    assert lo <= x <= hi
    assert rng.random() == twin.random()  # exactly one uniform consumed


def phi_tail_mass(a: float, b: float) -> float:
    if a > 0:
        a, b = -b, -a
    return 0.5 * math.erfc(-b / math.sqrt(2)) - 0.5 * math.erfc(-a / math.sqrt(2))


def test_truncated_normal_law_and_no_mass_at_the_bounds():
    rng = np.random.default_rng(0)
    x = np.array([truncated_normal(rng, 0.3, 0.5, 0.0, 0.6) for _ in range(6000)])
    assert not np.any((x == 0.0) | (x == 0.6))
    cdf = lambda v: (phi((v - 0.3) / 0.5) - phi(-0.6)) / (phi(0.6) - phi(-0.6))  # noqa: E731
    assert ks_distance(x, cdf) < 0.03
    far = np.array([truncated_normal(rng, 0.0, 1.0, 10.0, 12.0) for _ in range(2000)])  # deep upper tail
    assert np.all((far > 10.0) & (far < 12.0))
    assert abs(far.mean() - 10.0981) < 0.01  # E[X | X > 10] = φ(10) / (1 - Φ(10)) for N(0, 1)
    with pytest.raises(ValueError, match="no probability"):
        truncated_normal(rng, 0.0, 1.0, 100.0, 101.0)
    assert truncated_normal(rng, 5.0, 0.0, 0.0, 1.0) == 1.0  # std 0: the mean, clipped

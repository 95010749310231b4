import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.fit import MODES, FitConfig, fit, fit_grid

sizes = st.integers(1, 6000)


@settings(max_examples=300, deadline=None)
@given(h=sizes, w=sizes, p=st.sampled_from([8, 14, 16, 32]), cap=st.integers(1, 2048),
       mode=st.sampled_from(MODES), up=st.booleans(), seed=st.integers(0, 100))
def test_grid_within_budget_and_at_least_one_patch(h, w, p, cap, mode, up, seed):
    cfg = FitConfig(patch_size=p, max_patches=cap, mode=mode, allow_upsample=up, side_min=32, side_max=800)
    gh, gw = fit_grid(h, w, cfg, np.random.default_rng(seed))
    assert gh >= 1 and gw >= 1 and gh * gw <= cap
    H, W = fit(h, w, cfg, np.random.default_rng(seed))
    assert (H, W) == (gh * p, gw * p)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(64, 4000), w=st.integers(64, 4000))
def test_native_keeps_aspect_ratio_and_never_upsamples(h, w):
    cfg = FitConfig(patch_size=16, max_patches=256)
    gh, gw = fit_grid(h, w, cfg)
    assert gh * 16 <= h + 8 and gw * 16 <= w + 8  # rounding to the nearest patch only
    if min(gh, gw) >= 4:  # aspect kept up to one patch of rounding per side
        assert abs(math.log((gh / gw) / (h / w))) < math.log((min(gh, gw) + 1) / (min(gh, gw) - 1)) + 1e-9


def test_native_uses_budget_for_large_images():
    gh, gw = fit_grid(3000, 4000, FitConfig(patch_size=16, max_patches=256))
    assert 240 <= gh * gw <= 256 and gw > gh


def test_tiny_and_extreme_aspect():
    cfg = FitConfig(patch_size=16, max_patches=256)
    assert fit_grid(3, 3, cfg) == (1, 1)  # enlarged to one patch even without upsampling
    assert fit_grid(1, 5000, cfg) == (1, 256)
    assert fit_grid(5000, 1, cfg) == (256, 1)
    assert fit_grid(10, 5000, FitConfig(patch_size=16, max_patches=None)) == (1, 312)


def test_upsample_flag():
    rng = np.random.default_rng
    assert fit_grid(40, 80, FitConfig(patch_size=16)) == (2, 5)  # native never enlarges (round(2.5) = 2)
    up = FitConfig(patch_size=16, max_patches=None, mode="side-uniform", side_min=400, side_max=400,
                   allow_upsample=True)
    assert fit_grid(40, 80, up, rng(0)) == (18, 35)  # sqrt(h*w) = 400 px: 283 x 566 px, aspect 1:2 kept
    assert fit_grid(40, 80, replace(up, allow_upsample=None), rng(0)) == (18, 35)  # sampled modes resize by default
    no_up = FitConfig(patch_size=16, max_patches=None, mode="side-uniform", side_min=400, side_max=400,
                      allow_upsample=False)
    assert fit_grid(40, 80, no_up, rng(0)) == (2, 5)
    capped = FitConfig(patch_size=16, max_patches=100, mode="side-uniform", side_min=400, side_max=400,
                       allow_upsample=True)
    gh, gw = fit_grid(40, 80, capped, rng(0))
    assert gh * gw <= 100 and gw == 2 * gh


def test_sampling_is_seeded_and_spread():
    cfg = FitConfig(patch_size=16, max_patches=None, mode="side-uniform", side_min=64, side_max=512,
                    allow_upsample=True)
    a = [fit_grid(1000, 1000, cfg, np.random.default_rng(s)) for s in range(50)]
    b = [fit_grid(1000, 1000, cfg, np.random.default_rng(s)) for s in range(50)]
    assert a == b
    sides = [g[0] for g in a]
    assert min(sides) <= 10 and max(sides) >= 25
    area = FitConfig(patch_size=16, max_patches=None, mode="area-truncnorm", side_min=160, side_max=160,
                     allow_upsample=True)
    gh, gw = fit_grid(100, 400, area, np.random.default_rng(0))
    assert abs(gh * gw - 100) <= 15  # sqrt(area) = 160 px -> ~100 patches


def test_max_pixels_and_validation():
    gh, gw = fit_grid(1000, 1000, FitConfig(patch_size=16, max_patches=None, max_pixels=64 * 64))
    assert gh * gw <= 16
    with pytest.raises(ValueError):
        fit_grid(0, 10, FitConfig())
    with pytest.raises(ValueError):
        fit_grid(10, 10, FitConfig(mode="side-uniform"))  # needs an rng
    with pytest.raises(ValueError):
        FitConfig(mode="bogus")

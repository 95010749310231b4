"""FitConfig.grid_multiple: grid sides multiples of m (Qwen2-VL's merge size), under the budget."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.fit import MODES, FitConfig, fit, fit_grid, fit_video
from patchpack.fit.image import merge_grid


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 5000), w=st.integers(1, 5000), p=st.sampled_from([8, 14, 16]), m=st.integers(1, 4),
       cap=st.integers(1, 2048), mode=st.sampled_from(MODES), up=st.booleans(), seed=st.integers(0, 50))
def test_sides_are_multiples_under_the_budget(h, w, p, m, cap, mode, up, seed):
    cap = max(cap, m * m)
    cfg = FitConfig(patch_size=p, max_patches=cap, mode=mode, allow_upsample=up, side_min=32, side_max=800,
                    grid_multiple=m)
    gh, gw = fit_grid(h, w, cfg, np.random.default_rng(seed))
    assert gh % m == 0 and gw % m == 0
    assert gh >= m and gw >= m
    assert gh * gw <= cap
    assert fit(h, w, cfg, np.random.default_rng(seed)) == (gh * p, gw * p)
    # the rule is the plain fit moved by merge_grid; with m = 1 nothing moves
    plain = fit_grid(h, w, replace(cfg, grid_multiple=1), np.random.default_rng(seed))
    assert (gh, gw) == merge_grid(*plain, m, cap)
    assert merge_grid(*plain, 1, cap) == plain
    if m == 1:
        assert (gh, gw) == plain


def test_grid_multiple_one_equals_the_default_fit():
    rng = np.random.default_rng(0)
    for h, w in rng.integers(1, 3000, size=(200, 2)):
        for kw in ({}, {"allow_upsample": True}, {"max_patches": 7}, {"max_pixels": 64 * 64}):
            assert fit_grid(int(h), int(w), FitConfig(**kw)) == fit_grid(int(h), int(w), FitConfig(grid_multiple=1, **kw))


def test_grid_multiple_examples_and_aspect():
    cfg = FitConfig(patch_size=16, max_patches=256, grid_multiple=2)
    assert fit_grid(3000, 4000, cfg) == (14, 18)  # 13x18 before: 13 -> 14, 252 <= 256
    assert fit_grid(16, 16, cfg) == (2, 2)  # one patch becomes the smallest 2x2 window
    gh, gw = fit_grid(1, 5000, cfg)
    assert (gh, gw) == (2, 128)  # extreme aspect: the short side is one window, the long one takes the rest
    gh, gw = fit_grid(900, 1600, FitConfig(patch_size=14, max_patches=1024, grid_multiple=2))
    assert gh % 2 == gw % 2 == 0 and abs(math.log((gw / gh) / (1600 / 900))) < 0.1


def test_grid_multiple_validation():
    with pytest.raises(ValueError, match="grid_multiple must be an integer >= 1"):
        FitConfig(grid_multiple=0)
    with pytest.raises(ValueError, match="grid_multiple=3 needs a budget of at least 9"):
        FitConfig(max_patches=8, grid_multiple=3)
    FitConfig(max_patches=None, grid_multiple=3)  # no budget: nothing to violate


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 2000), w=st.integers(1, 2000), frames=st.integers(1, 40), pt=st.integers(1, 3),
       m=st.integers(1, 3), budget=st.one_of(st.none(), st.integers(9, 3000)),
       trade=st.sampled_from(["balanced", "frames", "resolution"]), max_patches=st.integers(9, 512))
def test_video_fit_honours_grid_multiple(h, w, frames, pt, m, budget, trade, max_patches):
    fit = FitConfig(patch_size=8, max_patches=max_patches, grid_multiple=m)
    vf = fit_video(h, w, frames, fit, tubelet=pt, max_tokens=budget, trade=trade)
    t, gh, gw = vf.grid
    assert gh % m == 0 and gw % m == 0 and gh >= m and gw >= m and t >= 1
    assert gh * gw <= max_patches
    if budget is not None:
        assert vf.tokens <= budget


def test_video_budget_below_one_window_is_refused():
    with pytest.raises(ValueError, match="below one 2x2 grid"):
        fit_video(64, 64, 8, FitConfig(patch_size=8, grid_multiple=2), max_tokens=3)


import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from patchpack.fit import FitConfig, fit_grid
from patchpack.fit.video import fit_video, round_frames

FIT = FitConfig(patch_size=16, max_patches=256)


def test_no_budget_keeps_the_image_fit_per_frame():
    vf = fit_video(720, 1280, 16, FIT, tubelet=2)
    assert vf.grid[1:] == fit_grid(720, 1280, FIT)
    assert vf.frames == 16 and vf.grid[0] == 8
    assert vf.size == (vf.grid[1] * 16, vf.grid[2] * 16)
    assert vf.tokens == 8 * vf.grid[1] * vf.grid[2]


def test_rounding_to_the_tubelet_multiple():
    assert round_frames(7, 2, "up") == 8
    assert round_frames(7, 2, "down") == 6
    assert round_frames(1, 4, "down") == 4  # never below one tubelet
    assert round_frames(8, 4, "up") == 8
    assert fit_video(64, 64, 7, FIT, tubelet=4, rounding="up").frames == 8
    assert fit_video(64, 64, 7, FIT, tubelet=4, rounding="down").frames == 4
    assert fit_video(64, 64, 3, FIT, tubelet=4, rounding="down").frames == 4


def test_budget_trades_frames_against_resolution():
    base = fit_video(512, 512, 32, FIT, tubelet=2)  # 16 tubelets x 16x16 = 4096 tokens
    assert base.tokens == 4096
    budget = 1024
    frames = fit_video(512, 512, 32, FIT, tubelet=2, max_tokens=budget, trade="frames")
    res = fit_video(512, 512, 32, FIT, tubelet=2, max_tokens=budget, trade="resolution")
    bal = fit_video(512, 512, 32, FIT, tubelet=2, max_tokens=budget, trade="balanced")
    assert frames.grid == (4, 16, 16)  # full resolution, a quarter of the frames
    assert res.grid == (16, 8, 8)  # all frames, half the side
    assert bal.grid[0] == 8 and bal.grid[1] * bal.grid[2] <= 128  # half the frames, sqrt(1/2) of the side
    for vf in (frames, res, bal):
        assert vf.tokens <= budget
        assert vf.frames == 2 * vf.grid[0]


def test_balanced_spends_rounding_slack_on_frames():
    vf = fit_video(300, 500, 40, FitConfig(patch_size=16, max_patches=1000), tubelet=2, max_tokens=700)
    t, gh, gw = vf.grid
    assert vf.tokens <= 700
    assert (t + 1) * gh * gw > 700 or t == 20  # no further tubelet would have fitted


def test_tiny_budget_gives_one_patch_per_frame_then_fewer_frames():
    vf = fit_video(256, 256, 16, FIT, tubelet=1, max_tokens=5, trade="resolution")
    assert vf.grid == (5, 1, 1)
    vf = fit_video(256, 256, 16, FIT, tubelet=1, max_tokens=5, trade="frames")
    assert vf.tokens <= 5 and vf.grid[0] == 1
    vf = fit_video(256, 256, 16, FIT, tubelet=1, max_tokens=1)
    assert vf.grid == (1, 1, 1)


def test_sampled_fit_draws_one_size_for_the_video():
    fit = FitConfig(patch_size=16, max_patches=None, mode="side-uniform", side_min=64, side_max=512)
    a = fit_video(480, 640, 8, fit, rng=np.random.default_rng(5))
    b = fit_video(480, 640, 8, fit, rng=np.random.default_rng(5))
    assert a == b
    assert a.grid[1:] == fit_grid(480, 640, fit, np.random.default_rng(5))


def test_bad_arguments():
    with pytest.raises(ValueError):
        fit_video(64, 64, 8, FIT, trade="nope")
    with pytest.raises(ValueError):
        fit_video(64, 64, 8, FIT, max_tokens=0)
    with pytest.raises(ValueError):
        fit_video(64, 64, 0, FIT)


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 2000),
    w=st.integers(1, 2000),
    frames=st.integers(1, 64),
    pt=st.integers(1, 4),
    budget=st.one_of(st.none(), st.integers(1, 3000)),
    trade=st.sampled_from(["balanced", "frames", "resolution"]),
    rounding=st.sampled_from(["up", "down"]),
    max_patches=st.integers(1, 512),
)
@example(h=12, w=12, frames=2, pt=1, budget=2, trade="frames", rounding="up", max_patches=4)  # shrunk grid frees a frame
def test_video_fit_invariants(h, w, frames, pt, budget, trade, rounding, max_patches):
    fit = FitConfig(patch_size=8, max_patches=max_patches)
    vf = fit_video(h, w, frames, fit, tubelet=pt, max_tokens=budget, trade=trade, rounding=rounding)
    t, gh, gw = vf.grid
    assert vf.frames == t * pt and t >= 1 and gh >= 1 and gw >= 1
    assert gh * gw <= max_patches
    assert vf.frames <= round_frames(frames, pt, rounding)
    if budget is not None:
        assert vf.tokens <= budget
    else:
        assert vf.frames == round_frames(frames, pt, rounding)
    g0 = fit_grid(h, w, fit)
    assert gh <= g0[0] and gw <= g0[1]  # the budget only ever shrinks the per-frame grid
    if budget is not None and vf.tokens < budget and t * pt < round_frames(frames, pt, rounding):
        # frames were cut: then no extra tubelet would have fitted at this size
        assert (t + 1) * gh * gw > budget

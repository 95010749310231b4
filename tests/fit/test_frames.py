import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.decode.video import VideoConfig
from patchpack.fit.frames import clip_timestamps, pad_indices, sample_frames, thin_indices


def cfg(**kw):
    return VideoConfig(**kw)


# ----------------------------------------------------------------- spread


def test_spread_centre_takes_segment_middles():
    assert sample_frames(10, 25, cfg(frames=5, clip="centre")).tolist() == [1, 3, 5, 7, 9]
    assert sample_frames(100, None, cfg(frames=4, clip="centre")).tolist() == [12, 37, 62, 87]


def test_spread_start_takes_segment_starts():
    assert sample_frames(12, None, cfg(frames=4, clip="start")).tolist() == [0, 3, 6, 9]


def test_spread_random_is_seeded_and_stays_in_its_segment():
    a = sample_frames(100, None, cfg(frames=10, clip="random"), np.random.default_rng(3))
    b = sample_frames(100, None, cfg(frames=10, clip="random"), np.random.default_rng(3))
    c = sample_frames(100, None, cfg(frames=10, clip="random"), np.random.default_rng(4))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(a))


def test_random_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        sample_frames(100, None, cfg(frames=4, clip="random"))


def test_spread_short_repeat_repeats_each_frame_in_order():
    assert sample_frames(3, None, cfg(frames=6, clip="centre", short="repeat")).tolist() == [0, 0, 1, 1, 2, 2]


def test_spread_short_fewer_takes_every_frame_once():
    assert sample_frames(3, None, cfg(frames=6, short="fewer")).tolist() == [0, 1, 2]
    assert sample_frames(3, None, cfg(frames=2, short="fewer", clip="centre")).tolist() == [0, 2]


def test_spread_all_frames_when_frames_is_none():
    assert sample_frames(7, None, cfg(frames=None)).tolist() == list(range(7))


# ----------------------------------------------------------------- rate


def test_rate_takes_every_third_frame_of_a_30fps_clip_at_10fps():
    idx = sample_frames(300, 30.0, cfg(frames=8, fps=10, clip="start"))
    assert idx.tolist() == list(range(0, 24, 3))
    centre = sample_frames(300, 30.0, cfg(frames=8, fps=10, clip="centre"))
    assert np.all(np.diff(centre) == 3)
    # the window is centred: as much clip before it as after it (to a frame)
    assert abs(centre[0] - (299 - centre[-1])) <= 3


def test_rate_above_source_rate_repeats_frames():
    idx = sample_frames(100, 10.0, cfg(frames=6, fps=20, clip="start"))
    assert idx.tolist() == [0, 0, 1, 1, 2, 2]


def test_rate_random_window_is_inside_the_clip_and_seeded():
    for seed in range(20):
        idx = sample_frames(90, 30.0, cfg(frames=10, fps=5, clip="random"), np.random.default_rng(seed))
        assert idx[0] >= 0 and idx[-1] < 90
        assert np.all(np.diff(idx) == 6)
    a = sample_frames(900, 30.0, cfg(frames=4, fps=1, clip="random"), np.random.default_rng(1))
    assert a.tolist() == sample_frames(900, 30.0, cfg(frames=4, fps=1, clip="random"), np.random.default_rng(1)).tolist()


def test_rate_short_clip_policies():
    # 1 s at 30 fps holds only 4 samples at 4 fps (0, .25, .5, .75 s)
    rep = sample_frames(30, 30.0, cfg(frames=8, fps=4, short="repeat"))
    assert rep.tolist() == [0, 7, 15, 22, 29, 29, 29, 29]  # then the last frame is held
    few = sample_frames(30, 30.0, cfg(frames=8, fps=4, short="fewer"))
    assert few.tolist() == [0, 7, 15, 22]


def test_rate_needs_source_fps_for_a_frame_count():
    with pytest.raises(ValueError, match="fps"):
        sample_frames(30, None, cfg(frames=4, fps=4))


def test_rate_frames_none_covers_the_whole_clip():
    assert sample_frames(30, 30.0, cfg(frames=None, fps=10)).tolist() == list(range(0, 30, 3))


# ----------------------------------------------------------------- variable frame rate


VFR_MS = [0, 40, 80, 300, 340, 1000, 1040, 1080, 1500, 1540]


def test_vfr_rate_sampling_takes_the_frame_shown_at_each_time():
    ts = np.asarray(VFR_MS) / 1000
    idx = sample_frames(ts, None, cfg(frames=8, fps=5, clip="start"))  # times 0, .2, .4, ... 1.4 s
    # 0->f0, .2->f2 (80ms), .4->f4 (340ms), .6->f4, .8->f4, 1.0->f5, 1.2->f7, 1.4->f7
    assert idx.tolist() == [0, 2, 4, 4, 4, 5, 7, 7]


def test_vfr_spread_is_by_time_not_by_index():
    ts = np.asarray(VFR_MS) / 1000  # end = 1.54 + 0.04
    idx = sample_frames(ts, None, cfg(frames=4, clip="centre"))  # .1975, .5925, .9875, 1.3825 s
    assert idx.tolist() == [2, 4, 4, 7]


def test_stride_is_by_index_even_for_vfr():
    ts = np.asarray(VFR_MS) / 1000
    assert sample_frames(ts, None, cfg(frames=3, stride=3, clip="start")).tolist() == [0, 3, 6]


def test_timestamps_are_validated():
    with pytest.raises(ValueError, match="non-decreasing"):
        clip_timestamps([0.0, 0.2, 0.1], None)
    with pytest.raises(ValueError):
        clip_timestamps([], None)
    ts, end = clip_timestamps([5.0, 5.1, 5.2], None)
    assert ts.tolist() == pytest.approx([0, 0.1, 0.2]) and end == pytest.approx(0.3)


# ----------------------------------------------------------------- stride


def test_stride_centre_and_random():
    assert sample_frames(20, None, cfg(frames=4, stride=2, clip="start")).tolist() == [0, 2, 4, 6]
    assert sample_frames(20, None, cfg(frames=4, stride=2, clip="centre")).tolist() == [6, 8, 10, 12]
    for seed in range(10):
        idx = sample_frames(20, None, cfg(frames=4, stride=5, clip="random"), np.random.default_rng(seed))
        assert np.all(np.diff(idx) == 5) and idx[-1] < 20


def test_stride_short_policies():
    assert sample_frames(5, None, cfg(frames=4, stride=2, short="repeat")).tolist() == [0, 2, 4, 4]
    assert sample_frames(5, None, cfg(frames=4, stride=2, short="fewer")).tolist() == [0, 2, 4]


# ----------------------------------------------------------------- thinning / padding


def test_thin_and_pad():
    assert thin_indices(np.arange(10), 5).tolist() == [1, 3, 5, 7, 9]
    assert thin_indices(np.arange(3), 5).tolist() == [0, 1, 2]
    assert pad_indices(np.array([4, 7]), 4).tolist() == [4, 7, 7, 7]


# ----------------------------------------------------------------- invariants


modes = st.sampled_from(["spread", "rate", "stride"])


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    src_fps=st.floats(1, 120),
    frames=st.one_of(st.none(), st.integers(1, 40)),
    mode=modes,
    rate=st.floats(0.2, 60),
    stride=st.integers(1, 10),
    clip=st.sampled_from(["random", "centre", "start"]),
    short=st.sampled_from(["repeat", "fewer"]),
    seed=st.integers(0, 2**16),
)
def test_indices_are_sorted_in_range_and_counted(n, src_fps, frames, mode, rate, stride, clip, short, seed):
    c = cfg(
        frames=frames, clip=clip, short=short,
        fps=rate if mode == "rate" else None, stride=stride if mode == "stride" else None,
    )
    idx = sample_frames(n, src_fps, c, np.random.default_rng(seed))
    assert idx.dtype == np.int64 and len(idx) >= 1
    assert np.all(np.diff(idx) >= 0)
    assert idx.min() >= 0 and idx.max() < n
    if frames is not None:
        if short == "repeat":
            assert len(idx) == frames
        else:
            assert len(idx) <= frames
            if mode == "spread":
                assert len(idx) == min(frames, n)
                assert len(np.unique(idx)) == len(idx)  # constant rate: distinct frames
    if mode == "stride" and (short == "fewer" or frames is None):
        assert np.all(np.diff(idx) == stride)


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 200), min_size=0, max_size=60),
    frames=st.integers(1, 30),
    rate=st.floats(0.5, 40),
    clip=st.sampled_from(["random", "centre", "start"]),
    seed=st.integers(0, 1000),
)
def test_vfr_rate_picks_the_frame_on_screen(gaps, frames, rate, clip, seed):
    ts = np.concatenate([[0], np.cumsum(gaps)]) / 1000.0
    idx = sample_frames(ts, None, cfg(frames=frames, fps=rate, clip=clip, short="fewer"), np.random.default_rng(seed))
    assert np.all(np.diff(idx) >= 0) and idx.max() < len(ts)
    # consecutive picks are at most one sample interval (plus a frame) apart in time
    if len(idx) > 1 and gaps:
        longest = max(gaps) / 1000.0
        assert np.all(np.diff(ts[idx]) <= 1.0 / rate + longest + 1e-9)

"""Video display rotation (phone video), tested as EXIF orientation is: a drawn pattern read back upright."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.decode.video import VideoConfig, materialize_video
from patchpack.decode.video.orientation import IDENTITY, display_transform, orient, rotation_degrees, transposes
from patchpack.fit import FitConfig
from patchpack.pipeline.admission import plan_media

from videos import encode_video, frame_pattern, read_indices

NATIVE = FitConfig(patch_size=16, max_patches=None)
H, W = 64, 96  # displayed size, landscape; 90 and 270 are stored portrait

CONTAINERS = {
    "mp4-h264": dict(fmt="mp4"),
    "mov-h264": dict(fmt="mov"),
    "mkv-h264": dict(fmt="matroska"),
    "webm-vp9": dict(fmt="webm", codec="libvpx-vp9"),
}


def decode(data, cfg, fit=NATIVE, stats=None):
    plan = plan_media(data, "video", fit, None, cfg, key="k")
    return plan, materialize_video(data, plan, cfg, key="k", stats=stats)


@pytest.mark.parametrize("name", list(CONTAINERS))
@pytest.mark.parametrize("rotation,hflip", [(90, False), (180, False), (270, False), (90, True), (0, True)])
def test_display_rotation_gives_the_displayed_frames(name, rotation, hflip):
    data = encode_video(9, H, W, rotation=rotation, hflip=hflip, **CONTAINERS[name])
    plan, clip = decode(data, VideoConfig(frames=6, tubelet=2))
    assert plan.source_size == (H, W)  # as displayed, whatever is stored
    assert clip.shape == (6, H, W, 3)
    assert plan.decode["rotation"] == rotation % 360 and plan.decode["mirrored"] == hflip
    assert read_indices(clip) == plan.frame_indices
    for frame, i in zip(clip, plan.frame_indices):  # upright and not mirrored, pixel for pixel
        assert np.abs(frame.astype(int) - frame_pattern(i, H, W)).mean() < 25


def test_rotated_clip_fitted_under_a_budget_keeps_the_displayed_aspect():
    data = encode_video(6, 48, 160, rotation=270)  # stored 160 x 48 (portrait), shown 48 x 160
    plan, clip = decode(data, VideoConfig(frames=4, tubelet=2), fit=FitConfig(patch_size=16, max_patches=12))
    gh, gw = plan.grid[1:]
    assert gw > gh and clip.shape[1:3] == (16 * gh, 16 * gw)
    assert read_indices(clip) == plan.frame_indices


def test_a_clip_without_a_display_matrix_is_used_as_stored():
    data = encode_video(5, H, W)
    assert display_transform(data) == IDENTITY
    plan, clip = decode(data, VideoConfig(frames=4, tubelet=1))
    assert "rotation" not in plan.decode and plan.source_size == (H, W)
    assert read_indices(clip) == plan.frame_indices


def test_garbage_has_no_orientation():
    assert display_transform(b"\x00\x00\x00\x20ftypisom" + bytes(100)) == IDENTITY
    assert display_transform(b"\x1a\x45\xdf\xa3\xff\xff") == IDENTITY
    assert display_transform(b"") == IDENTITY


SIGNED_PERMUTATIONS = [(1, 0, 0, 1), (-1, 0, 0, 1), (1, 0, 0, -1), (-1, 0, 0, -1),
                       (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, -1, 0), (0, -1, -1, 0)]  # (a, b, c, d)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SIGNED_PERMUTATIONS), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_orient_moves_each_pixel_where_the_display_matrix_sends_it(t, h, w, seed):
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    shown = orient(frame, t)
    a, b, c, d = t
    assert shown.shape[:2] == ((w, h) if transposes(t) else (h, w))
    xs = [a * x + c * y for y in range(h) for x in range(w)]
    ys = [b * x + d * y for y in range(h) for x in range(w)]
    x0, y0 = min(xs), min(ys)  # the matrix's offset keeps the picture on screen
    for k, (y, x) in enumerate((y, x) for y in range(h) for x in range(w)):
        assert np.array_equal(shown[ys[k] - y0, xs[k] - x0], frame[y, x])
    assert rotation_degrees(t) in (0, 90, 180, 270)

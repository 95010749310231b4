"""The frame decode plan: unwanted non-reference frames dropped, planned packets fed straight from the bytes."""

import numpy as np
import pytest

from patchpack.decode.video import VideoConfig, materialize_video
from patchpack.fit import FitConfig
from patchpack.pipeline.admission import plan_media

from videos import encode_video, read_indices


def decode(data, cfg, stats=None):
    plan = plan_media(data, "video", FitConfig(patch_size=16, max_patches=None), None, cfg, key="k")
    return plan, materialize_video(data, plan, cfg, key="k", stats=stats)


def test_unwanted_non_reference_frames_are_not_decoded():
    # one key frame, B-frames: the frames between the planned ones that nothing refers to are dropped
    data = encode_video(48, 32, 48, gop=48, options={"preset": "veryfast", "bf": "3", "b-pyramid": "none", "sc_threshold": "0"})
    stats = {}
    plan, clip = decode(data, VideoConfig(frames=4, tubelet=1, clip="centre"), stats=stats)
    assert read_indices(clip) == plan.frame_indices
    assert stats["seeks"] == 0
    assert stats["decoded"] < max(plan.frame_indices) * 0.7  # a forward decode returns every frame up to the last


FED = {  # codecs decoded by feeding the planned packets straight from the bytes
    "mp4-h264-bpyramid": dict(num_frames=37, gop=12, options={"preset": "medium", "bf": "3", "b-pyramid": "normal"}),
    "mkv-h264": dict(num_frames=21, fmt="matroska"),
    "webm-vp9": dict(num_frames=23, fmt="webm", codec="libvpx-vp9"),
    "mp4-hevc": dict(num_frames=15, codec="libx265", options={"preset": "ultrafast", "x265-params": "log-level=error"}),
}


@pytest.mark.parametrize("name", list(FED))
@pytest.mark.parametrize("frames", [3, 8])
def test_fed_packets_give_the_frames_the_container_gives(name, frames):
    data = encode_video(**FED[name])
    cfg = VideoConfig(frames=frames, tubelet=1, clip="centre")
    plan = plan_media(data, "video", FitConfig(patch_size=16, max_patches=64), None, cfg, key="k")
    assert "feed" in plan.decode  # found verbatim in the bytes: no demuxer at decode time
    fed = materialize_video(data, plan, cfg, key="k")
    plan.decode = {k: v for k, v in plan.decode.items() if k != "feed"}
    assert np.array_equal(fed, materialize_video(data, plan, cfg, key="k"))  # bit for bit
    assert read_indices(fed) == plan.frame_indices


def test_codecs_that_need_the_container_are_not_fed():
    for kw in (dict(num_frames=9, fmt="avi", codec="mpeg4"), dict(num_frames=9, fmt="mpegts")):
        plan, clip = decode(encode_video(**kw), VideoConfig(frames=4, tubelet=1))
        assert "feed" not in plan.decode and read_indices(clip) == plan.frame_indices

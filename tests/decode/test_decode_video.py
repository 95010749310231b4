import numpy as np
import pytest

from patchpack.decode.video import VIDEO_EXTS, VideoConfig, image_clip, materialize_video
from patchpack.pipeline.admission import plan_media
from patchpack.errors import ERROR_KINDS, SampleError
from patchpack.fit import FitConfig
from patchpack.fit.frames import sample_frames
from patchpack.tokenize import tubeletize, untubeletize

from videos import (
    encode_audio_only,
    encode_empty_stream,
    encode_gif,
    encode_video,
    frame_pattern,
    garbage,
    read_index,
    read_indices,
    unknown_codec_mkv,
)

FIT = FitConfig(patch_size=16, max_patches=64)

# (name, encode kwargs): several codecs and containers, odd sizes, odd frame counts
CLIPS = {
    "mp4-h264": dict(num_frames=23),
    "webm-vp9": dict(num_frames=23, fmt="webm", codec="libvpx-vp9"),
    "mkv-h264": dict(num_frames=21, fmt="matroska"),
    "avi-mpeg4": dict(num_frames=19, fmt="avi", codec="mpeg4"),
    "mp4-h264-odd-444": dict(num_frames=17, height=97, width=131, pix_fmt="yuv444p"),
    "webm-vp9-odd": dict(num_frames=15, height=97, width=131, fmt="webm", codec="libvpx-vp9"),
    "mkv-ffv1-odd": dict(num_frames=13, height=75, width=49, fmt="matroska", codec="ffv1"),
    "mov-h264-bframes": dict(num_frames=25, fmt="mov", options={"preset": "veryfast", "bf": "3"}),
    "mp4-h264-bpyramid": dict(num_frames=37, gop=12, options={"preset": "medium", "bf": "3", "b-pyramid": "normal"}),
    "ts-h264": dict(num_frames=19, fmt="mpegts"),
    "mp4-hevc": dict(num_frames=15, codec="libx265", options={"preset": "ultrafast", "x265-params": "log-level=error"}),
    "mov-mjpeg": dict(num_frames=12, fmt="mov", codec="mjpeg", pix_fmt="yuvj420p"),
}


@pytest.fixture(scope="module")
def clips():
    return {name: encode_video(**kw) for name, kw in CLIPS.items()}


def decode(data, cfg, fit=FIT, rng=None, stats=None):
    probe = plan_media(data, "video", fit, None, cfg, rng, key="k")
    return probe, materialize_video(data, probe, cfg, key="k", stats=stats)


def test_pattern_reads_back_after_resizing():
    for i in (0, 1, 77, 2047, 4095):
        assert read_index(frame_pattern(i, 97, 131)) == i
        assert read_index(frame_pattern(i, 24, 32)) == i


@pytest.mark.parametrize("name", list(CLIPS))
def test_right_frames_from_every_codec_and_container(clips, name):
    data, n = clips[name], CLIPS[name]["num_frames"]
    for cfg in (
        VideoConfig(frames=7, tubelet=2, clip="centre"),  # 7 -> 8 frames, last repeated
        VideoConfig(frames=5, tubelet=1, fps=10, clip="start"),
        VideoConfig(frames=4, stride=3, tubelet=2, clip="random"),
    ):
        probe, clip = decode(data, cfg, rng=np.random.default_rng(1))
        t, gh, gw = probe.grid
        assert clip.shape == (t * cfg.tubelet, gh * 16, gw * 16, 3) and clip.dtype == np.uint8
        assert tuple(probe.size) == clip.shape[1:3]
        assert len(probe.frame_indices) == t * cfg.tubelet
        assert max(probe.frame_indices) < n
        assert read_indices(clip) == probe.frame_indices
        assert probe.decode["num_frames"] == n
        h, w = CLIPS[name].get("height", 64), CLIPS[name].get("width", 96)
        assert probe.source_size == (h, w)


def test_sampling_matches_the_pure_function(clips):
    cfg = VideoConfig(frames=6, fps=12, clip="random", tubelet=1)
    probe, clip = decode(clips["mp4-h264"], cfg, rng=np.random.default_rng(7))
    # 25 fps source: frame i starts at i / 25 s
    expected = sample_frames(23, 25.0, cfg, np.random.default_rng(7))
    assert probe.frame_indices == expected.tolist() == read_indices(clip)
    probe2, _ = decode(clips["mp4-h264"], cfg, rng=np.random.default_rng(7))
    assert probe2.frame_indices == probe.frame_indices


@pytest.mark.parametrize("fmt", ["matroska", "mp4", "webm"])
def test_variable_frame_rate_is_sampled_by_time(fmt):
    pts_ms = [0, 40, 80, 300, 340, 1000, 1040, 1080, 1500, 1540]
    codec = "libvpx-vp9" if fmt == "webm" else "libx264"
    data = encode_video(len(pts_ms), fmt=fmt, codec=codec, pts_ms=pts_ms)
    cfg = VideoConfig(frames=8, fps=5, clip="start", tubelet=1)
    probe, clip = decode(data, cfg)
    assert probe.decode["vfr"] is True
    assert probe.frame_indices == [0, 2, 4, 4, 4, 5, 7, 7]  # the frame on screen at 0, .2, ... 1.4 s
    assert read_indices(clip) == probe.frame_indices


def test_animated_gif_from_pillow_with_frame_durations():
    durations = [40, 100, 40, 200, 40, 60, 80, 40, 40]
    data = encode_gif(len(durations), durations_ms=durations)
    cfg = VideoConfig(frames=None, fps=10, clip="start", tubelet=1)
    probe, clip = decode(data, cfg)
    starts = np.concatenate([[0], np.cumsum(durations)[:-1]]) / 1000
    want = [int(np.searchsorted(starts, k / 10 + 1e-9, side="right") - 1) for k in range(len(probe.frame_indices))]
    assert probe.frame_indices == want
    assert read_indices(clip) == want
    spread, clip = decode(data, VideoConfig(frames=4, tubelet=2))
    assert read_indices(clip) == spread.frame_indices


def test_sparse_samples_seek_instead_of_decoding_everything():
    data = encode_video(240, height=32, width=48, gop=24, options={"sc_threshold": "0"})
    cfg = VideoConfig(frames=4, tubelet=1, clip="centre")
    stats = {}
    probe, clip = decode(data, cfg, stats=stats)
    assert read_indices(clip) == probe.frame_indices == [30, 90, 150, 210]
    assert stats["seeks"] >= 3
    assert stats["decoded"] <= 4 * 24  # at most one GOP per sample, not 240 frames


@pytest.mark.parametrize("thread_type", ["NONE", "SLICE", "FRAME", "AUTO"])
def test_threading_does_not_change_the_frames(clips, thread_type):
    cfg = VideoConfig(frames=6, tubelet=2, threads=2, thread_type=thread_type)
    probe, clip = decode(clips["mov-h264-bframes"], cfg)
    assert read_indices(clip) == probe.frame_indices


@pytest.mark.parametrize("name", ["mp4-h264", "avi-mpeg4", "webm-vp9"])
def test_metadata_index_matches_the_packet_index(clips, name):
    for cfg in (VideoConfig(frames=5, tubelet=1), VideoConfig(frames=6, fps=8, tubelet=1, clip="start")):
        exact, a = decode(clips[name], cfg)
        fast, b = decode(clips[name], VideoConfig(**{**cfg.__dict__, "index": "metadata"}))
        assert fast.decode["index"] == "metadata"
        assert fast.frame_indices == exact.frame_indices
        assert read_indices(b) == read_indices(a) == exact.frame_indices


def test_tubelet_round_trip(clips):
    cfg = VideoConfig(frames=6, tubelet=3)
    probe, clip = decode(clips["mkv-h264"], cfg, fit=FitConfig(patch_size=8, max_patches=48))
    patches, positions = tubeletize(clip, 8, 3)
    assert patches.shape == (probe.tokens, 3 * 8 * 8 * 3)
    assert positions[:, 0].max() == probe.grid[0] - 1
    assert np.array_equal(untubeletize(patches, positions, probe.grid, 8, 3), clip)


def test_total_budget_thins_frames_evenly(clips):
    cfg = VideoConfig(frames=16, tubelet=2, max_tokens=40, trade="frames")
    probe, clip = decode(clips["mp4-h264"], cfg, fit=FitConfig(patch_size=16, max_patches=6))
    assert probe.grid == (6, 2, 3)  # 8 tubelets of 2x3 = 48 > 40: keep the size, 6 tubelets
    got = read_indices(clip)
    assert got == probe.frame_indices and len(got) == 2 * probe.grid[0]
    assert got[0] <= 3 and got[-1] >= 18  # coverage kept: early and late frames both present


def test_short_clip_policies():
    data = encode_video(5)
    probe, clip = decode(data, VideoConfig(frames=8, tubelet=2, short="repeat"))
    assert read_indices(clip) == probe.frame_indices == [0, 0, 1, 2, 2, 3, 4, 4]
    probe, clip = decode(data, VideoConfig(frames=8, tubelet=2, short="fewer"))
    assert probe.frame_indices == [0, 1, 2, 3, 4, 4]  # 5 frames, rounded up to a tubelet multiple
    assert read_indices(clip) == probe.frame_indices
    probe, _ = decode(data, VideoConfig(frames=8, tubelet=2, short="fewer", rounding="down"))
    assert probe.frame_indices == [0, 1, 2, 3]


def test_a_one_frame_video_is_one_tubelet():
    for data in (encode_gif(1), encode_video(1)):
        probe, clip = decode(data, VideoConfig(frames=8, tubelet=2))
        assert probe.grid[0] == 1 and probe.frame_indices == [0, 0]
        assert read_indices(clip) == [0, 0]


def test_video_with_audio_track():
    data = encode_video(20, audio=True)
    probe, clip = decode(data, VideoConfig(frames=4, tubelet=1))
    assert read_indices(clip) == probe.frame_indices


def test_image_clip_is_one_tubelet():
    img = frame_pattern(9, 32, 48)
    c = image_clip(img, 2)
    assert c.shape == (2, 32, 48, 3) and np.array_equal(c[1], img)
    patches, pos = tubeletize(c, 16, 2)
    assert pos[:, 0].max() == 0 and patches.shape == (6, 2 * 16 * 16 * 3)


def test_video_exts():
    assert {"mp4", "webm", "mkv", "gif", "mov", "avi"} <= VIDEO_EXTS


# ----------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bad():
    mp4 = encode_video(30)
    fast = encode_video(30, container_options={"movflags": "faststart"})
    webm = encode_video(30, fmt="webm", codec="libvpx-vp9")
    gif = encode_gif(6)
    mkv = bytearray(encode_video(30, fmt="matroska"))
    for i in range(600, len(mkv) - 100, 7):
        mkv[i] ^= 0x5A
    return {
        "empty": (b"", "empty"),
        "garbage": (garbage(), "not-media"),
        "mp4-truncated": (mp4[: len(mp4) // 2], "truncated"),
        "mp4-faststart-truncated": (fast[: int(len(fast) * 0.8)], "truncated"),
        "webm-truncated": (webm[: int(len(webm) * 0.7)], "truncated"),
        "gif-truncated": (gif[: len(gif) // 2], "truncated"),
        "mp4-header-only": (mp4[:64], "truncated"),
        "audio-only-mp4": (encode_audio_only(), "no-video-stream"),
        "audio-only-webm": (encode_audio_only(fmt="webm"), "no-video-stream"),
        "zero-frames-mkv": (encode_empty_stream("matroska"), "no-frames"),
        "zero-frames-mp4": (encode_empty_stream("mp4"), "no-frames"),
        "unknown-codec": (unknown_codec_mkv(), "unsupported"),
        "mkv-corrupt": (bytes(mkv), "corrupt"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty", "garbage", "mp4-truncated", "mp4-faststart-truncated", "webm-truncated", "gif-truncated",
        "mp4-header-only", "audio-only-mp4", "audio-only-webm", "zero-frames-mkv", "zero-frames-mp4",
        "unknown-codec", "mkv-corrupt",
    ],
)
def test_bad_input_gives_a_typed_record_with_the_key(bad, case):
    data, kind = bad[case]
    cfg = VideoConfig(frames=8, tubelet=2)
    with pytest.raises(SampleError) as err:
        probe = plan_media(data, "video", FIT, None, cfg, key=f"sample-{case}")
        materialize_video(data, probe, cfg, key=f"sample-{case}")
    assert err.value.kind == kind
    assert kind in ERROR_KINDS
    rec = err.value.record(shard="shard-0.tar")
    assert rec.key == f"sample-{case}" and rec.shard == "shard-0.tar" and rec.kind == kind


def test_decompression_bomb_guard(clips):
    with pytest.raises(SampleError) as err:
        plan_media(clips["mp4-h264"], "video", FIT, None, VideoConfig(max_source_pixels=1000), key="big")
    assert err.value.kind == "too-large"


def test_config_validation():
    with pytest.raises(ValueError):
        VideoConfig(fps=4, stride=2)
    with pytest.raises(ValueError):
        VideoConfig(clip="middle")
    with pytest.raises(ValueError):
        VideoConfig(frames=0)
    with pytest.raises(ValueError):
        VideoConfig(short="loop")


@pytest.mark.parametrize("script", [
    b"ffconcat version 1.0\nfile clip.mkv\n",
    b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nclip.mkv\n#EXT-X-ENDLIST\n",
])
def test_a_video_member_that_names_other_files_never_reads_them(tmp_path, monkeypatch, script):
    """An ffconcat script or playlist as a video payload: FFmpeg opens nothing it names."""
    from patchpack.decode import read_header

    (tmp_path / "clip.mkv").write_bytes(encode_video(8, fmt="matroska"))
    monkeypatch.chdir(tmp_path)  # FFmpeg's concat demuxer resolves relative names from here
    with pytest.raises(SampleError) as e:
        read_header(script, "video", video_cfg=VideoConfig(frames=4), key="k")
    assert e.value.kind in ("not-media", "corrupt")


@pytest.mark.parametrize("index", ["packets", "metadata"])
def test_a_clip_with_more_packets_than_allowed_is_too_large(index):
    from patchpack.decode import read_header

    data = encode_video(12)
    assert read_header(data, "video", video_cfg=VideoConfig(frames=4, index=index, max_packets=12)).num_frames == 12
    with pytest.raises(SampleError) as e:
        read_header(data, "video", video_cfg=VideoConfig(frames=4, index=index, max_packets=11), key="k")
    assert e.value.kind == "too-large" and "max_packets" in str(e.value)
    with pytest.raises(ValueError, match="max_packets"):
        VideoConfig(max_packets=0)

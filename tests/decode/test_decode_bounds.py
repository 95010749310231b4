"""Decode bounded in time and in decoded size: what the bytes say is checked before Pillow or FFmpeg
decodes (progressive JPEG scans, ICO embedded images, WebP memory, video frames that outgrow the
size their stream declares)."""

from __future__ import annotations

import io
import struct

import hostile as H
import numpy as np
import pytest
from PIL import Image, ImageFile

from patchpack.decode.image import ImageConfig, materialize_image, read_image_header
from patchpack.errors import SampleError
from patchpack.fit import FitConfig, plan_example

FIT = FitConfig(patch_size=16, max_patches=64)


def decode(data: bytes, cfg: ImageConfig | None = None) -> np.ndarray:
    cfg = cfg or ImageConfig()
    plan = plan_example(read_image_header(data, cfg), FIT, None, None)
    return materialize_image(data, plan, cfg)


@pytest.fixture
def loads(monkeypatch):
    """Every Pillow decode (``ImageFile.load``) while the test runs: ``[(format, size)]``."""
    seen: list[tuple[str, tuple[int, int]]] = []
    real = ImageFile.ImageFile.load

    def spy(self):
        seen.append((str(self.format), self.size))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return seen


@pytest.mark.parametrize("side,extra", [(2048, 1000), (512, 3000)])
def test_progressive_jpeg_of_thousands_of_scans_is_too_slow_before_decoding(side, extra, loads):
    data = H.many_scans_jpeg(side, extra)
    with pytest.raises(SampleError) as e:
        decode(data)
    assert e.value.kind == "too-slow" and "max_scans" in e.value.message
    assert loads == []  # refused from the header: no scan was decoded
    from patchpack.decode.guards import jpeg_scan_count

    assert jpeg_scan_count(data) == 10 + extra


def test_scan_limit_is_a_setting_and_ordinary_progressive_jpegs_pass():
    from patchpack.decode.guards import jpeg_scan_count

    data = H.many_scans_jpeg(256, 20)
    scans = jpeg_scan_count(data)
    assert decode(data, ImageConfig(max_scans=scans)).shape[0] == 1
    with pytest.raises(SampleError, match="too-slow|max_scans"):
        decode(data, ImageConfig(max_scans=scans - 1))
    assert decode(data, ImageConfig(max_scans=None)).shape[0] == 1
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(buf, "JPEG", progressive=True)
    assert jpeg_scan_count(buf.getvalue()) == 10  # libjpeg's default progression for colour


def test_scan_count_skips_a_jpeg_inside_a_marker_segment():
    from patchpack.decode.guards import jpeg_scan_count

    inner = io.BytesIO()
    Image.new("RGB", (16, 16)).save(inner, "JPEG", progressive=True)  # like an EXIF thumbnail: 10 more FF DA
    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "JPEG", progressive=True)
    outer = buf.getvalue()
    data = outer[:2] + b"\xff\xfe" + struct.pack(">H", len(inner.getvalue()) + 2) + inner.getvalue() + outer[2:]
    assert data.count(b"\xff\xda") == 20
    assert jpeg_scan_count(data) == 10
    assert decode(data, ImageConfig(max_scans=10)).shape[0] == 1


@pytest.mark.parametrize("embedded", ["png", "bmp"])
def test_ico_declaring_16px_but_embedding_a_huge_image_is_refused_unopened(embedded, loads):
    if embedded == "png":
        data = H.ico_embedding(H.solid_png(20000, 20000, value=7))  # 400 MB once decoded, 440 KB encoded
    else:  # a BITMAPINFOHEADER of 20000 x 40000 (XOR + AND masks) and no pixel data
        data = H.ico_embedding(struct.pack("<IiiHHIIiiII", 40, 20000, 40000, 1, 32, 0, 0, 0, 0, 0, 0))
    with pytest.raises(SampleError) as e:
        read_image_header(data)
    assert e.value.kind == "too-large" and "embeds" in e.value.message
    assert loads == []  # Pillow opens an ICO by decoding its largest image: it was never opened


def test_ico_within_the_limit_still_decodes():
    from patchpack.decode.guards import ico_embedded_sizes

    data = H.ico_embedding(H.solid_png(48, 48, value=200), declared=48)
    assert ico_embedded_sizes(data) == [(48, 48)]
    out = decode(data)
    assert out.shape[0] == 1 and abs(int(out.mean()) - 200) <= 1


@pytest.mark.parametrize("side", [13000, 9000])
def test_tiny_lossless_webp_of_a_huge_canvas_is_refused_before_decoding(side, loads):
    data = H.solid_webp(side, side)
    assert len(data) < 64 and side * side <= ImageConfig().max_pixels  # passes the pixel limit
    with pytest.raises(SampleError) as e:
        decode(data)
    assert e.value.kind == "too-large" and "max_decode_bytes" in e.value.message
    assert all(fmt != "WEBP" for fmt, _ in loads)


def test_decode_memory_bound_is_a_setting():
    data = H.solid_webp(1200, 900)
    assert decode(data).shape[0] == 1  # ~18 MB: well within the default
    with pytest.raises(SampleError, match="max_decode_bytes"):
        decode(data, ImageConfig(max_decode_bytes=8 * 2**20))
    big = H.solid_webp(9000, 9000)
    cfg = ImageConfig(max_decode_bytes=None)
    assert read_image_header(big, cfg).source_size == (9000, 9000)  # no bound: only max_pixels applies


@pytest.mark.parametrize("real", [2000, 1200])
def test_video_frames_larger_than_the_stream_declares_are_too_large(real):
    from patchpack.decode.video.config import VideoConfig
    from patchpack.decode.video.frames import materialize_video
    from patchpack.decode.video.header import frame_plan, read_video_header

    data = H.lying_video(declared=16, real=real, frames=4)
    cfg = VideoConfig(frames=4, tubelet=2, max_source_pixels=1_000_000)
    header = read_video_header(data, cfg)
    assert header.source_size == (16, 16)  # the header only knows what the stream declares
    plan = plan_example(header, FitConfig(patch_size=8, max_patches=64), cfg, np.random.default_rng(0))
    plan.decode = frame_plan(header, plan.frame_indices)
    with pytest.raises(SampleError) as e:
        materialize_video(data, plan, cfg)
    assert e.value.kind == "too-large" and "max_source_pixels" in e.value.message


def test_video_frames_within_the_limit_decode_at_the_planned_size():
    from patchpack.decode.video.config import VideoConfig
    from patchpack.decode.video.frames import materialize_video
    from patchpack.decode.video.header import frame_plan, read_video_header

    data = H.lying_video(declared=16, real=300, frames=4)
    cfg = VideoConfig(frames=4, tubelet=2, max_source_pixels=1_000_000)
    header = read_video_header(data, cfg)
    plan = plan_example(header, FitConfig(patch_size=8, max_patches=64), cfg, np.random.default_rng(0))
    plan.decode = frame_plan(header, plan.frame_indices)
    out = materialize_video(data, plan, cfg)
    assert out.shape == (4, 16, 16, 3)

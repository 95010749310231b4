"""Test clips encoded in memory with PyAV (and GIFs with Pillow).

Each frame carries its index as a 12-bit code: a 3 x 4 grid of black/white
cells, most significant bit first, row by row. Cells are large, so the code
survives lossy codecs, chroma subsampling and downscaling; :func:`read_index`
reads it back from any frame size by averaging each cell's central part.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import av
import numpy as np
from PIL import Image

ROWS, COLS = 3, 4
BITS = ROWS * COLS


def frame_pattern(index: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[height, width, 3]`` frame showing ``index`` (0 <= index < 4096)."""
    if not 0 <= index < 2**BITS:
        raise ValueError("index out of range")
    bits = [(index >> (BITS - 1 - k)) & 1 for k in range(BITS)]
    ys = np.minimum(np.arange(height) * ROWS // height, ROWS - 1)
    xs = np.minimum(np.arange(width) * COLS // width, COLS - 1)
    cells = np.asarray(bits, np.uint8).reshape(ROWS, COLS)[ys[:, None], xs[None, :]]
    return np.repeat((cells * 255)[:, :, None], 3, axis=2)


def stored_pattern(index: int, height: int, width: int, rotation: int = 0, hflip: bool = False) -> np.ndarray:
    """The stored frame that a player shows as ``frame_pattern(index, height, width)`` once it
    turns it ``rotation`` degrees counter-clockwise and then mirrors it (``hflip``)."""
    shown = frame_pattern(index, height, width)
    if hflip:
        shown = shown[:, ::-1]
    return np.ascontiguousarray(np.rot90(shown, -(rotation // 90)))


def read_index(frame: np.ndarray) -> int:
    """The index drawn by :func:`frame_pattern`, from a possibly lossy or resized frame."""
    h, w = frame.shape[:2]
    grey = frame.astype(np.float32).mean(axis=2) if frame.ndim == 3 else frame.astype(np.float32)
    value = 0
    for r in range(ROWS):
        for c in range(COLS):
            y0, y1 = int((r + 0.3) * h / ROWS), max(int((r + 0.7) * h / ROWS), int((r + 0.3) * h / ROWS) + 1)
            x0, x1 = int((c + 0.3) * w / COLS), max(int((c + 0.7) * w / COLS), int((c + 0.3) * w / COLS) + 1)
            value = (value << 1) | int(grey[y0:y1, x0:x1].mean() > 127)
    return value


def read_indices(clip: np.ndarray) -> list[int]:
    return [read_index(f) for f in clip]


def encode_video(
    num_frames: int,
    height: int = 64,
    width: int = 96,
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    pts_ms: list[int] | None = None,
    gop: int | None = None,
    options: dict | None = None,
    container_options: dict | None = None,
    audio: bool = False,
    rotation: int = 0,
    hflip: bool = False,
) -> bytes:
    """Encode frames ``0..num_frames-1`` (each showing its index) and return the file bytes.

    ``pts_ms`` gives each frame's presentation time in milliseconds (variable frame
    rate). ``gop`` is the key-frame interval. MP4 with ``movflags=faststart`` goes
    through a temporary file (the muxer re-reads its output). ``rotation`` (degrees
    counter-clockwise, a multiple of 90) and ``hflip`` (mirror after turning) are written
    as the stream's display matrix, with frames stored so that, displayed, frame ``i`` is
    ``frame_pattern(i, height, width)`` (stored ``width x height`` for 90 and 270).
    """
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("preset", "ultrafast")
    if codec == "libvpx-vp9":
        opts.setdefault("deadline", "realtime")
        opts.setdefault("cpu-used", "8")
    tmp = None
    if container_options and "movflags" in container_options:
        fd, tmp = tempfile.mkstemp(suffix="." + fmt)
        os.close(fd)
        target: object = tmp
    else:
        target = io.BytesIO()
    try:
        with av.open(target, "w", format=fmt, options=container_options or {}) as c:
            s = c.add_stream(codec, rate=fps, options=opts)
            turned = rotation % 180 == 90
            s.width, s.height = (height, width) if turned else (width, height)
            s.pix_fmt = pix_fmt
            if rotation % 360 or hflip:
                s.set_display_rotation(rotation, hflip=hflip)
            if gop is not None:
                s.codec_context.gop_size = gop
            if pts_ms is not None:
                tb = Fraction(1, 1000)
                s.codec_context.time_base = tb
                s.time_base = tb
            a = None
            if audio:
                a = c.add_stream("aac", rate=16000)
            for i in range(num_frames):
                f = av.VideoFrame.from_ndarray(stored_pattern(i, height, width, rotation, hflip), format="rgb24")
                if pts_ms is not None:
                    f.pts, f.time_base = int(pts_ms[i]), Fraction(1, 1000)
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
            if a is not None:
                _mux_silence(c, a, seconds=num_frames / fps)
        if tmp is not None:
            with open(tmp, "rb") as fh:
                return fh.read()
        return target.getvalue()  # type: ignore[attr-defined]
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _mux_silence(c, stream, seconds: float) -> None:
    rate = stream.rate
    n = 1024
    for k in range(max(1, int(seconds * rate) // n)):
        fmt = stream.codec_context.format.name
        fr = av.AudioFrame.from_ndarray(np.zeros((1, n), np.dtype(fmt.rstrip("p").replace("flt", "float32").replace("s16", "int16"))), format=fmt, layout="mono")
        fr.sample_rate, fr.pts = rate, k * n
        for p in stream.encode(fr):
            c.mux(p)
    for p in stream.encode():
        c.mux(p)


def encode_audio_only(seconds: float = 0.5, fmt: str = "mp4") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        codec = "libopus" if fmt in ("webm", "ogg") else "aac"
        _mux_silence(c, c.add_stream(codec, rate=48000 if codec == "libopus" else 16000), seconds)
    return buf.getvalue()


def encode_empty_stream(fmt: str = "matroska") -> bytes:
    """A container with a video stream header and no frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    return buf.getvalue()


def encode_gif(num_frames: int, height: int = 48, width: int = 64, durations_ms: list[int] | int = 40) -> bytes:
    """Animated GIF (Pillow) whose frame ``i`` shows ``i``; per-frame durations in ms."""
    frames = [Image.fromarray(frame_pattern(i, height, width)) for i in range(num_frames)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations_ms, loop=0)
    return buf.getvalue()


def unknown_codec_mkv() -> bytes:
    """A Matroska file whose track names a codec FFmpeg does not know."""
    data = encode_video(4, fmt="matroska")
    assert b"V_MPEG4/ISO/AVC" in data
    return data.replace(b"V_MPEG4/ISO/AVC", b"V_XYZW4/ISO/AVC")


def garbage(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()

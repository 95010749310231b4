"""Opening a video container from bytes with PyAV, and cheap structural truncation checks."""

from __future__ import annotations

import io
import struct
from typing import Any

import av

from ...errors import SampleError

__all__ = ["open_container", "video_stream", "stream_rate", "is_truncated", "container_kind"]


def _iso_truncated(data: bytes) -> bool:
    """ISO-BMFF (MP4/MOV): a top-level box runs past the end, or no ``moov`` box."""
    pos, n, seen_moov = 0, len(data), False
    while pos + 8 <= n:
        size, typ = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            if pos + 16 > n:
                return True
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:  # box runs to the end of the file
            seen_moov |= typ == b"moov"
            return not seen_moov
        if size < 8:
            return False  # not a box structure we understand: let FFmpeg judge
        seen_moov |= typ == b"moov"
        if pos + size > n:
            return True
        pos += size
    return pos != n or not seen_moov


def _read_vint(data: bytes, pos: int) -> tuple[int, int, bool] | None:
    """EBML variable-length integer at ``pos``: ``(value, length, unknown)``."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first & ((1 << (8 - length)) - 1)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, length, value == (1 << (7 * length)) - 1


def _ebml_truncated(data: bytes) -> bool:
    """Matroska/WebM: the EBML header or a known-size Segment runs past the end."""
    head = _read_vint(data, 4)
    if head is None:
        return True
    size, length, _ = head
    pos = 4 + length + size
    if pos + 4 > len(data):
        return True
    if data[pos : pos + 4] != b"\x18\x53\x80\x67":  # Segment ID
        return False
    seg = _read_vint(data, pos + 4)
    if seg is None:
        return True
    size, length, unknown = seg
    return not unknown and pos + 4 + length + size > len(data)


def container_kind(data: bytes) -> str | None:
    head = data[:12]
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "iso"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "ebml"
    if head[:4] == b"GIF8":
        return "gif"
    if head[:4] == b"RIFF" or head[:4] == b"OggS" or head[:3] == b"FLV" or head[:1] == b"\x47":
        return "other"
    return None


def is_truncated(data: bytes) -> bool:
    """Cheap structural check that the file ends where its container says it does."""
    kind = container_kind(data)
    if kind == "iso":
        return _iso_truncated(data)
    if kind == "ebml":
        return _ebml_truncated(data)
    if kind == "gif":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    return False




#: FFmpeg may open no other resource while it reads a payload: no protocol is allowed for nested
#: opens, so a "video" that is an ffconcat script or a playlist naming local files or urls
#: (FFmpeg's concat, HLS, DASH demuxers) cannot make it read them; a self-contained container
#: needs none.
_SEALED = {"protocol_whitelist": "none"}
#: Options for FFmpeg's stream probe only (``avformat_find_stream_info``): parse headers but skip
#: decoding a frame where the codec allows (H.264/HEVC); PyAV's own decoder does not see them.
_PROBE_OPTIONS = {"skip_frame": "all", **_SEALED}


def open_container(data: bytes, key: str) -> Any:
    """The container over ``data`` (read in place: ``io.BytesIO`` shares a ``bytes`` buffer).

    The stream probe skips decoding when it can; when that leaves the frame size unknown
    (streams that carry it only in the bitstream) the container is opened again plainly.
    """
    if not data:
        raise SampleError("empty", "zero-byte video", key=key)
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=_PROBE_OPTIONS)
        cc = next((s.codec_context for s in container.streams.video if s.codec_context is not None), None)
        if cc is not None and not (cc.width and cc.height):
            container.close()
            container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=_SEALED)
        return container
    except av.error.FFmpegError as e:
        if is_truncated(data):
            raise SampleError("truncated", f"container ends early ({e})", key=key) from None
        if isinstance(e, av.error.EOFError):
            raise SampleError("no-frames", "container holds no frames", key=key) from None
        if container_kind(data) is None:
            raise SampleError("not-media", f"FFmpeg recognises no format ({e})", key=key) from None
        raise SampleError("corrupt", f"cannot open container ({e})", key=key) from None


def video_stream(container: Any, key: str) -> Any:
    streams = list(container.streams)
    if not streams:
        raise SampleError("no-frames", "container holds no streams", key=key)
    attached = av.stream.Disposition.attached_pic
    video = [s for s in container.streams.video if not (s.disposition & attached)]
    if not video:
        kinds = sorted({s.type for s in streams})
        raise SampleError("no-video-stream", f"no video stream (streams: {', '.join(kinds)})", key=key)
    vs = video[0]
    if vs.codec_context is None:
        raise SampleError("unsupported", "FFmpeg has no decoder for the video codec", key=key)
    return vs


def stream_rate(vs: Any) -> float | None:
    for r in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if r:
            return float(r)
    return None


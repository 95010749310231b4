"""Video header reading (demux only, no decode) and the decode plan for chosen frames."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

import av
import numpy as np

from ...errors import SampleError
from ...example import Header
from .config import VideoConfig
from .container import is_truncated, open_container, stream_rate, video_stream
from .orientation import IDENTITY, display_transform, mirrored, rotation_degrees, transposes

__all__ = ["read_video_header", "frame_plan"]


#: Largest codec extradata (bytes) carried in a plan for decoding without the demuxer.
_MAX_EXTRADATA = 4096
#: Codecs whose packets plus extradata are all a decoder needs (checked frame for frame against
#: the container path in the tests). MPEG-4 part 2, for one, picks bug workarounds from the
#: container's codec tag and drifts without it, so it and the rest go through the container.
FED_CODECS = frozenset({"h264", "hevc", "vp9", "vp8", "av1"})


def _payload_offset(data: bytes, packet: Any) -> int:
    """Where the packet's bytes lie in ``data`` (at or just after ``packet.pos``), else -1."""
    pos = packet.pos
    if pos is None or pos < 0:
        return -1
    view = memoryview(packet)
    n = len(view)
    head, tail = bytes(view[:16]), bytes(view[-16:])
    for k in (0, 4, 8, 3, 5, 6, 7, 2, 1):  # MP4 samples; Matroska block / AVI chunk headers
        o = pos + k
        if data[o : o + len(head)] == head and data[o + n - len(tail) : o + n] == tail:
            return o
    return -1


def _packet_index(container: Any, vs: Any, data: bytes, key: str,
                  max_packets: int) -> tuple[np.ndarray | None, np.ndarray, int, Any]:
    """``(pts sorted or None, keyframe pts sorted, packet count, feed)`` from demuxing (no decode).

    ``feed`` is ``(offsets, sizes, pts)`` of every packet in demux order when each packet's
    bytes were found verbatim in ``data`` (MP4, Matroska/WebM, AVI), else ``None``: the frame
    decoder then feeds the codec straight from ``data`` instead of re-opening the container.
    """
    pts: list[int] = []
    keys: list[int] = []
    offsets: list[int] | None = []
    sizes: list[int] = []
    count, seen, missing = 0, 0, False
    try:
        for packet in container.demux(vs):
            if packet.size == 0:
                continue
            seen += 1
            if seen > max_packets:
                raise SampleError("too-large", f"more than {max_packets} video packets (max_packets)", key=key)
            if offsets is not None:
                off = -1 if packet.is_discard or packet.pts is None else _payload_offset(data, packet)
                if off < 0:
                    offsets = None
                else:
                    offsets.append(off)
                    sizes.append(packet.size)
            if packet.is_discard:
                continue
            count += 1
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                missing = True
                continue
            pts.append(int(t))
            if packet.is_keyframe:
                keys.append(int(t))
    except av.error.FFmpegError as e:
        raise SampleError("corrupt", f"demux failed after {count} packets ({e})", key=key) from None
    if missing:
        return None, np.zeros(0, np.int64), count, None
    order = np.asarray(pts, np.int64)
    feed = None
    if offsets is not None and len(np.unique(order)) == len(order):
        feed = (np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), order)
    return np.sort(order), np.sort(np.asarray(keys, np.int64)), count, feed


def _feed_plan(feed: Any, targets: np.ndarray, seeks: np.ndarray) -> dict[str, Any]:
    """The packets the decoder needs, in demux order: from each planned frame's key frame to it."""
    offsets, sizes, order = feed
    at = {int(t): j for j, t in enumerate(order)}  # pts -> demux index
    ti = [at[int(t)] for t in targets]
    si = [at[int(t)] for t in seeks]
    ranges: list[list[int]] = []
    for a, b in sorted(zip(si, ti)):
        if ranges and a <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], b)
        else:
            ranges.append([a, b])
    rows = np.concatenate([np.arange(a, b + 1) for a, b in ranges])
    return {"ranges": ranges, "offsets": offsets[rows].tolist(), "sizes": sizes[rows].tolist(),
            "pts": order[rows].tolist(), "seek_index": si}


def read_video_header(data: bytes, cfg: VideoConfig, *, key: str = "") -> Header:
    """Open the container and read the video stream's metadata and packet index (no pixel decode).

    Returns:
        a :class:`Header` of kind ``"video"``: ``source_size`` per frame, ``frames`` (timestamps
        in seconds, or a count when the stream has none), ``rate``, ``num_frames``, the container
        ``format`` and, in ``stream``, ``codec``, ``time_base``, the display matrix and the
        ``index`` mode used.

    Raises:
        SampleError: ``empty``, ``truncated``, ``not-media``, ``corrupt``, ``no-video-stream``,
            ``no-frames``, ``unsupported`` or ``too-large``.
    """
    with open_container(data, key) as container:
        if is_truncated(data):
            raise SampleError("truncated", "file ends before its container does", key=key)
        vs = video_stream(container, key)
        cc = vs.codec_context
        h, w = int(cc.height or 0), int(cc.width or 0)
        if h < 1 or w < 1:
            raise SampleError("corrupt", f"video stream has no frame size ({w}x{h})", key=key)
        if h * w > cfg.max_source_pixels:
            raise SampleError("too-large", f"{w}x{h} frames exceed max_source_pixels", key=key)
        tb = vs.time_base or Fraction(1, 1)
        rate = stream_rate(vs)
        info: dict[str, Any] = {"codec": cc.name, "time_base": [tb.numerator, tb.denominator]}
        stored = (h, w)
        display = display_transform(data)
        if display != IDENTITY:  # frames are turned as displayed: the header speaks of the displayed size
            info.update(display=list(display), rotation=rotation_degrees(display), mirrored=mirrored(display))
            if transposes(display):
                h, w = w, h
        mode = cfg.index
        plan = None
        index: dict[str, Any] = {}
        if mode == "metadata":
            plan = _metadata_plan(container, vs, rate, tb)
            if plan is None:
                mode = "packets"  # headers say too little: fall back to the exact scan
        if mode == "packets":
            pts, keyframes, count, feed = _packet_index(container, vs, data, key, cfg.max_packets)
            if count == 0:
                raise SampleError("no-frames", "video stream has no packets", key=key)
            if pts is None:
                mode = "count"
                ts_or_n: Any = count
                n = count
            else:
                ts_or_n = (pts - pts[0]).astype(np.float64) * float(tb)
                n = len(pts)
                index.update(pts=pts, keyframes=keyframes)
                extradata = cc.extradata or b""
                if feed is not None and cc.name in FED_CODECS and len(extradata) <= _MAX_EXTRADATA:
                    index["feed"] = feed
                    info["extradata"] = extradata.hex()
        else:
            n, start = plan  # type: ignore[misc]
            if n > cfg.max_packets:
                raise SampleError("too-large", f"{n} frames by the container's metadata, over max_packets "
                                  f"({cfg.max_packets})", key=key)
            ts_or_n = n
            index["start"] = start
        info["index"] = mode
        fmt = str(container.format.name)
    return Header("video", (h, w), stored_size=stored, format=fmt, frames=ts_or_n, rate=rate, num_frames=n,
                  stream=info, index=index, key=key)


def frame_plan(header: Header, indices: Sequence[int]) -> dict[str, Any]:
    """The header's ``stream`` facts plus the decode plan of the chosen frames (what :func:`materialize_video`
    reads, :attr:`patchpack.example.Plan.decode`): ``stored_size``,
    ``pts`` (target timestamps), ``seek_pts``, ``tolerance``, ``first_pts``, ``feed`` (where the
    needed packets lie in the bytes, when the header found them), and ``fps``, ``duration`` (s),
    ``num_frames``, ``vfr``."""
    info = dict(header.stream, stored_size=list(header.stored_size))
    idx = np.asarray(indices, dtype=np.int64)
    mode = info["index"]
    n, rate = header.num_frames, header.rate
    tb = Fraction(*info["time_base"])
    if mode == "packets":
        pts, keyframes = header.index["pts"], header.index["keyframes"]
        targets = pts[idx]
        # last key frame at or before each target (the first packet when none is flagged)
        if len(keyframes):
            k = np.searchsorted(keyframes, targets, side="right") - 1
            seeks = np.where(k >= 0, keyframes[np.maximum(k, 0)], pts[0])
        else:
            seeks = np.full_like(targets, pts[0])
        diffs = np.diff(pts)
        diffs = diffs[diffs > 0]
        duration = float((pts[-1] - pts[0] + (np.median(diffs) if len(diffs) else 0)) * tb)
        vfr = bool(len(diffs) > 1 and diffs.max() - diffs.min() > max(1, 0.02 * np.median(diffs)))
        info.update(pts=targets.tolist(), seek_pts=seeks.tolist(), tolerance=0, first_pts=int(pts[0]))
        if "feed" in header.index:
            info["feed"] = _feed_plan(header.index["feed"], targets, seeks)
        fps = (n / duration) if duration > 0 else rate
    elif mode == "metadata":
        start = header.index["start"]
        step = 1.0 / (rate * float(tb))  # ticks per frame
        targets = start + np.round(idx * step).astype(np.int64)
        info.update(pts=targets.tolist(), seek_pts=targets.tolist(), tolerance=int(step // 2), first_pts=start)
        duration, vfr, fps = n / rate, False, rate
    else:  # count: frame i is the i-th decoded frame
        info.update(pts=idx.tolist(), seek_pts=[0] * len(idx), tolerance=0, first_pts=0)
        duration, vfr, fps = (n / rate if rate else None), False, rate
    info.update(fps=fps, duration=duration, num_frames=n, vfr=vfr)
    return info


def _metadata_plan(container: Any, vs: Any, rate: float | None, tb: Fraction) -> tuple[int, int] | None:
    """``(frame count, first pts)`` from headers alone, or ``None`` when they are missing."""
    if not rate:
        return None
    n = int(vs.frames or 0)
    if n <= 0:
        if vs.duration:
            seconds = float(vs.duration * tb)
        elif container.duration:
            seconds = container.duration / av.time_base
        else:
            return None
        n = int(round(seconds * rate))
    if n <= 0:
        return None
    start = int(vs.start_time) if vs.start_time is not None else 0
    return n, start



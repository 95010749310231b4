"""Video decoding with PyAV from in-memory bytes, decoding only the sampled frames.

Two steps, as for images (see :mod:`patchpack.decode`):

1. :func:`probe_video` opens the container and reads metadata and the packet
   index of the video stream (demux only, no decoding): frame timestamps, key
   frames, size, rate. It samples frames (:func:`patchpack.sample.sample_frames`,
   by timestamps, so variable frame rate is handled) and fits one spatial size and
   a frame count (:func:`patchpack.fit_video.fit_video`). The result is a
   :class:`~patchpack.decode.Probe` with ``grid = (T/pt, gh, gw)`` and
   ``frame_indices`` = the ``T`` frames (a multiple of ``pt``; repeats allowed).
2. :func:`materialize_video` re-opens the bytes and, for each sampled frame,
   seeks to the key frame before it when that skips decoding, decodes forward to
   the frame, and resizes it straight into the output ``uint8 [T, H, W, 3]``
   (swscale, one frame at a time). Memory is bounded by the sampled frames plus
   the decoder's reference frames, never by the clip's length.

A one-frame video (a static GIF) is sampled as a still: one tubelet, the frame
repeated ``pt`` times, exactly as an image in a mixed stream.

Formats: whatever FFmpeg opens (MP4/MOV/H.264/HEVC, WebM/VP8/VP9/AV1, MKV, AVI,
MPEG-TS, animated GIF, ...). Cover art (``attached_pic`` streams) is not video.

Index modes (``VideoConfig.index``):

* ``"packets"`` (default): exact. Every packet's presentation timestamp is read,
  frame ``i`` is the ``i``-th in presentation order, and key frames decide where
  seeking pays off. Streams without timestamps fall back to counting decoded
  frames from the start (no seeking).
* ``"metadata"``: trusts the container's frame count / duration and average rate
  (constant rate assumed; no packet scan). For long clips with reliable headers.
  Frame ``i`` is the frame nearest ``i / fps``; sample times past the real end
  repeat the last decoded frame.

Errors (:class:`~patchpack.errors.SampleError` kinds): ``empty`` (zero bytes),
``truncated`` (MP4 box / Matroska segment / GIF trailer cut off),
``not-media`` (FFmpeg finds no format in the bytes), ``corrupt`` (a recognised
format that does not demux or decode), ``no-video-stream`` (audio only, cover art
only), ``no-frames`` (no streams, or a video stream without packets),
``unsupported`` (no decoder for the codec), ``too-large`` (frame size over
``max_source_pixels``).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import av
import numpy as np

from ..errors import SampleError
from ..fit import FitConfig
from ..fit_video import ROUNDING, TRADES, fit_video, round_frames
from ..sample import CLIP_MODES, SHORT_POLICIES, pad_indices, sample_frames, thin_indices
from . import Probe

__all__ = [
    "VideoConfig",
    "VIDEO_EXTS",
    "probe_video",
    "materialize_video",
    "image_clip",
    "INDEX_MODES",
]

#: Member extensions (lower case, no dot) decoded as video when the loader has a ``VideoConfig``.
VIDEO_EXTS = frozenset(
    {"mp4", "m4v", "mov", "webm", "mkv", "avi", "gif", "mpg", "mpeg", "ts", "m2ts", "flv", "ogv", "3gp", "wmv", "y4m"}
)

INDEX_MODES = ("packets", "metadata")
THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")

#: In ``"metadata"`` index mode, seek only when the next frame is more than this far ahead (seconds).
_SEEK_GAP_S = 1.0


@dataclass(frozen=True)
class VideoConfig:
    """How to sample, fit and decode videos.

    Attributes:
        frames: frames to sample per video before the budget (``None``: every frame
            the rate/stride gives over the clip).
        fps: sampling rate in frames/s (rate mode); exclusive with ``stride``.
        stride: sampling stride in source frames (stride mode).
        clip: window placement, ``"random"``, ``"centre"`` or ``"start"``
            (spread mode: jitter inside each segment or its middle).
        short: ``"repeat"`` or ``"fewer"`` for clips shorter than asked
            (see :mod:`patchpack.sample`).
        tubelet: ``pt``, frames per tubelet (token width ``pt * p * p * 3``).
            Images in a mixed stream become one tubelet: the image repeated ``pt`` times.
        rounding: ``"up"`` (repeat the last frame) or ``"down"`` (cut trailing
            frames) to reach a multiple of ``pt``.
        max_tokens: total tubelets per video (``None``: only the per-frame cap).
        trade: how ``max_tokens`` is met: ``"balanced"``, ``"frames"``,
            ``"resolution"`` (see :mod:`patchpack.fit_video`).
        index: ``"packets"`` (exact, scans packet headers) or ``"metadata"``.
        threads: decoder threads (0: FFmpeg chooses).
        thread_type: ``"AUTO"``, ``"FRAME"``, ``"SLICE"`` or ``"NONE"``.
        interpolation: swscale resize filter (``"AREA"``, ``"BILINEAR"``, ``"BICUBIC"``, ...).
        max_source_pixels: per-frame size limit (decompression-bomb guard).
    """

    frames: int | None = 16
    fps: float | None = None
    stride: int | None = None
    clip: str = "centre"
    short: str = "repeat"
    tubelet: int = 2
    rounding: str = "up"
    max_tokens: int | None = None
    trade: str = "balanced"
    index: str = "packets"
    threads: int = 0
    thread_type: str = "AUTO"
    interpolation: str = "AREA"
    max_source_pixels: int = 8192 * 8192

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ValueError("frames must be >= 1 or None")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.stride is not None and self.stride < 1:
            raise ValueError("stride must be >= 1")
        if self.fps is not None and self.stride is not None:
            raise ValueError("set fps or stride, not both")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"unknown clip mode {self.clip!r}; expected one of {CLIP_MODES}")
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"unknown short policy {self.short!r}; expected one of {SHORT_POLICIES}")
        if self.tubelet < 1:
            raise ValueError("tubelet must be >= 1")
        if self.rounding not in ROUNDING:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of {ROUNDING}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.trade not in TRADES:
            raise ValueError(f"unknown trade {self.trade!r}; expected one of {TRADES}")
        if self.index not in INDEX_MODES:
            raise ValueError(f"unknown index mode {self.index!r}; expected one of {INDEX_MODES}")
        if self.thread_type not in THREAD_TYPES:
            raise ValueError(f"unknown thread_type {self.thread_type!r}; expected one of {THREAD_TYPES}")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")


def image_clip(image: np.ndarray, tubelet: int) -> np.ndarray:
    """An ``[H, W, C]`` image as a one-tubelet clip ``[pt, H, W, C]`` (the image repeated ``pt`` times).

    This is how images share a token width with videos in a mixed stream: their grid
    is ``(1, gh, gw)`` and positions have ``t = 0``.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(np.broadcast_to(image[None], (tubelet, *image.shape)))


# --------------------------------------------------------------------------- container checks


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


def _container_kind(data: bytes) -> str | None:
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


def _truncated(data: bytes) -> bool:
    """Cheap structural check that the file ends where its container says it does."""
    kind = _container_kind(data)
    if kind == "iso":
        return _iso_truncated(data)
    if kind == "ebml":
        return _ebml_truncated(data)
    if kind == "gif":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    return False


# --------------------------------------------------------------------------- opening


def _open(data: bytes, key: str) -> Any:
    if not data:
        raise SampleError("empty", "zero-byte video", key=key)
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        if _truncated(data):
            raise SampleError("truncated", f"container ends early ({e})", key=key) from None
        if isinstance(e, av.error.EOFError):
            raise SampleError("no-frames", "container holds no frames", key=key) from None
        if _container_kind(data) is None:
            raise SampleError("not-media", f"FFmpeg recognises no format ({e})", key=key) from None
        raise SampleError("corrupt", f"cannot open container ({e})", key=key) from None


def _video_stream(container: Any, key: str) -> Any:
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


def _configure(vs: Any, cfg: VideoConfig) -> None:
    cc = vs.codec_context
    try:
        cc.thread_type = cfg.thread_type
        cc.thread_count = cfg.threads
    except Exception:  # pragma: no cover - decoder already opened or threading unsupported
        pass


# --------------------------------------------------------------------------- probe


def _packet_index(container: Any, vs: Any, key: str) -> tuple[np.ndarray | None, np.ndarray, int]:
    """``(pts sorted or None, keyframe pts sorted, packet count)`` from demuxing (no decode)."""
    pts: list[int] = []
    keys: list[int] = []
    count, missing = 0, False
    try:
        for packet in container.demux(vs):
            if packet.size == 0 or packet.is_discard:
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
        return None, np.zeros(0, np.int64), count
    return np.sort(np.asarray(pts, np.int64)), np.sort(np.asarray(keys, np.int64)), count


def _rate(vs: Any) -> float | None:
    for r in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if r:
            return float(r)
    return None


def probe_video(
    data: bytes,
    fit: FitConfig,
    cfg: VideoConfig,
    rng: np.random.Generator | None = None,
    *,
    key: str = "",
) -> Probe:
    """Read container metadata, sample frames and fit the video (no pixel decode).

    Args:
        data: the encoded file (any container FFmpeg opens).
        fit: per-frame fit; ``fit.patch_size`` is the spatial tubelet side.
        cfg: sampling, budget and decoding options.
        rng: for ``clip="random"`` and sampled fit modes.
        key: sample key for error records.

    Returns:
        a ``Probe`` of kind ``"video"``: ``size`` per frame in pixels,
        ``grid = (T/pt, gh, gw)``, ``frame_indices`` the ``T`` frames in order, and
        ``info`` with ``fps``, ``duration`` (s), ``num_frames``, ``vfr``, ``codec``,
        ``format``, ``index`` and the decode plan (``pts``, ``seek_pts``, ``time_base``).
    """
    with _open(data, key) as container:
        if _truncated(data):
            raise SampleError("truncated", "file ends before its container does", key=key)
        vs = _video_stream(container, key)
        cc = vs.codec_context
        h, w = int(cc.height or 0), int(cc.width or 0)
        if h < 1 or w < 1:
            raise SampleError("corrupt", f"video stream has no frame size ({w}x{h})", key=key)
        if h * w > cfg.max_source_pixels:
            raise SampleError("too-large", f"{w}x{h} frames exceed max_source_pixels", key=key)
        tb = vs.time_base or Fraction(1, 1)
        rate = _rate(vs)
        info: dict[str, Any] = {
            "codec": cc.name,
            "format": container.format.name,
            "time_base": [tb.numerator, tb.denominator],
        }
        mode = cfg.index
        plan = None
        if mode == "metadata":
            plan = _metadata_plan(container, vs, rate, tb)
            if plan is None:
                mode = "packets"  # headers say too little: fall back to the exact scan
        if mode == "packets":
            pts, keyframes, count = _packet_index(container, vs, key)
            if count == 0:
                raise SampleError("no-frames", "video stream has no packets", key=key)
            if pts is None:
                mode = "count"
                ts_or_n: Any = count
                n = count
            else:
                ts_or_n = (pts - pts[0]).astype(np.float64) * float(tb)
                n = len(pts)
        else:
            n, start = plan  # type: ignore[misc]
            ts_or_n = n
        info["index"] = mode

        try:
            # a still (one-frame video, e.g. a static GIF) is one tubelet, like an image
            cand = np.zeros(1, np.int64) if n == 1 else sample_frames(ts_or_n, rate, cfg, rng)
        except ValueError as e:
            raise SampleError("corrupt", f"cannot sample frames: {e}", key=key, stage="decode") from None
        vf = fit_video(
            h, w, len(cand), fit,
            tubelet=cfg.tubelet, max_tokens=cfg.max_tokens, trade=cfg.trade, rounding=cfg.rounding, rng=rng,
        )
        t = vf.frames
        if t >= len(cand):
            idx = pad_indices(cand, t)
        elif t == round_frames(len(cand), cfg.tubelet, cfg.rounding):
            idx = cand[:t]  # rounded down to the tubelet multiple: cut trailing frames
        else:
            idx = thin_indices(cand, t)  # the budget cut frames: keep the coverage

        if mode == "packets":
            targets = pts[idx]  # type: ignore[index]
            # last key frame at or before each target (the first packet when none is flagged)
            if len(keyframes):
                k = np.searchsorted(keyframes, targets, side="right") - 1
                seeks = np.where(k >= 0, keyframes[np.maximum(k, 0)], pts[0])  # type: ignore[index]
            else:
                seeks = np.full_like(targets, pts[0])  # type: ignore[index]
            diffs = np.diff(pts)  # type: ignore[arg-type]
            diffs = diffs[diffs > 0]
            duration = float((pts[-1] - pts[0] + (np.median(diffs) if len(diffs) else 0)) * tb)  # type: ignore[index]
            vfr = bool(len(diffs) > 1 and diffs.max() - diffs.min() > max(1, 0.02 * np.median(diffs)))
            info.update(pts=targets.tolist(), seek_pts=seeks.tolist(), tolerance=0, first_pts=int(pts[0]))  # type: ignore[index]
            fps = (n / duration) if duration > 0 else rate
        elif mode == "metadata":
            step = 1.0 / (rate * float(tb))  # ticks per frame
            targets = start + np.round(idx * step).astype(np.int64)
            info.update(pts=targets.tolist(), seek_pts=targets.tolist(), tolerance=int(step // 2), first_pts=start)
            duration, vfr, fps = n / rate, False, rate
        else:  # count: frame i is the i-th decoded frame
            info.update(pts=idx.tolist(), seek_pts=[0] * len(idx), tolerance=0, first_pts=0)
            duration, vfr, fps = (n / rate if rate else None), False, rate
        info.update(fps=fps, duration=duration, num_frames=n, vfr=vfr)
    return Probe(
        kind="video",
        source_size=(h, w),
        size=vf.size,
        grid=vf.grid,
        frame_indices=[int(i) for i in idx],
        info=info,
    )


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


# --------------------------------------------------------------------------- materialize


def _frames(container: Any, vs: Any) -> Iterator[Any]:
    yield from container.decode(vs)


def materialize_video(
    data: bytes,
    probe: Probe,
    cfg: VideoConfig,
    *,
    key: str = "",
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Decode the probed frames: ``uint8 [T, H, W, 3]`` at ``probe.size``, RGB.

    Seeks to the key frame before a sampled frame when that skips decoding, then
    decodes forward; frames in between are decoded (codecs need them) but never
    converted or kept. Repeated indices reuse the frame already converted.

    Args:
        stats: if given, ``decoded`` (frames decoded) and ``seeks`` are added to it.
    """
    info = probe.info
    targets: list[int] = info["pts"]
    seeks: list[int] = info["seek_pts"]
    tol = int(info.get("tolerance", 0))
    mode = info.get("index", "packets")
    tb = Fraction(*info["time_base"])
    gap = int(_SEEK_GAP_S / tb) if mode == "metadata" else 0
    first = int(info.get("first_pts", 0))
    hh, ww = probe.size
    out = np.empty((len(targets), hh, ww, 3), np.uint8)
    decoded = seeks_done = 0
    with _open(data, key) as container:
        vs = _video_stream(container, key)
        _configure(vs, cfg)
        frames: Iterator[Any] | None = None
        pos: int | None = None  # timestamp (or count) of the last decoded frame
        last = None  # last decoded frame, for sample times past the end (metadata mode)
        just_seeked = False
        try:
            for i, tgt in enumerate(targets):
                if i and tgt == targets[i - 1]:
                    out[i] = out[i - 1]
                    continue
                ref = pos if pos is not None else first
                if mode == "packets":
                    want_seek = seeks[i] > ref  # a key frame lies between here and the target
                elif mode == "metadata":
                    want_seek = tgt - ref > gap
                else:
                    want_seek = False
                if frames is None or want_seek:
                    if want_seek:
                        container.seek(int(seeks[i]), stream=vs, backward=True, any_frame=False)
                        seeks_done += 1
                        just_seeked = True
                    frames = _frames(container, vs)
                    if mode == "count":
                        pos = -1
                    else:
                        pos = None
                got = None
                while got is None:
                    frame = next(frames, None)
                    if frame is None:
                        break
                    decoded += 1
                    if mode == "count":
                        fpts = (pos if pos is not None else -1) + 1
                    else:
                        fpts = frame.pts if frame.pts is not None else frame.dts
                        if fpts is None:
                            fpts = (pos if pos is not None else 0) + 1
                    if just_seeked and fpts > tgt + tol:
                        # the demuxer landed past the target: restart from the beginning
                        just_seeked = False
                        container.seek(0, backward=True, any_frame=False)
                        seeks_done += 1
                        frames = _frames(container, vs)
                        pos = None
                        continue
                    just_seeked = False
                    pos = fpts
                    last = frame
                    if fpts >= tgt - tol:
                        got = frame
                if got is None:
                    if mode == "metadata" and last is not None:
                        got = last  # the headers promised more frames than there are
                    elif last is None and decoded == 0:
                        raise SampleError("no-frames", "no frame decoded", key=key)
                    else:
                        raise SampleError("corrupt", f"frame {probe.frame_indices[i]} did not decode", key=key)
                out[i] = got.to_ndarray(width=ww, height=hh, format="rgb24", interpolation=cfg.interpolation)
        except (av.error.FFmpegError, ValueError, OSError) as e:  # FFmpeg/swscale failures, not SampleError
            kind = "truncated" if _truncated(data) else "corrupt"
            raise SampleError(kind, f"decode failed ({e})", key=key) from None
    if stats is not None:
        stats["decoded"] = stats.get("decoded", 0) + decoded
        stats["seeks"] = stats.get("seeks", 0) + seeks_done
    return out

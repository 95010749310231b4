"""Video options: how frames are sampled, fitted and decoded (:class:`VideoConfig`) and their vocabularies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "VideoConfig", "VIDEO_EXTS", "INDEX_MODES", "THREAD_TYPES", "CLIP_MODES", "SHORT_POLICIES", "TRADES",
    "ROUNDING",
]

#: Member extensions (lower case, no dot) decoded as video when the loader has a ``VideoConfig``.
VIDEO_EXTS = frozenset(
    {"mp4", "m4v", "mov", "webm", "mkv", "avi", "gif", "mpg", "mpeg", "ts", "m2ts", "flv", "ogv", "3gp", "wmv", "y4m"}
)

INDEX_MODES = ("packets", "metadata")
THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")

#: Clip window placement (see :mod:`patchpack.fit.frames`).
CLIP_MODES = ("random", "centre", "start")
#: What a clip shorter than asked gives (see :mod:`patchpack.fit.frames`).
SHORT_POLICIES = ("repeat", "fewer")
#: What gives when a video is over its token budget (see :mod:`patchpack.fit.video`).
TRADES = ("balanced", "frames", "resolution")
#: Rounding of a frame count to a multiple of the tubelet (see :mod:`patchpack.fit.video`).
ROUNDING = ("up", "down")


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
            (see :mod:`patchpack.fit.frames`).
        tubelet: ``pt``, frames per tubelet (token width ``pt * p * p * 3``).
            Images in a mixed stream become one tubelet: the image repeated ``pt`` times.
        rounding: ``"up"`` (repeat the last frame) or ``"down"`` (cut trailing
            frames) to reach a multiple of ``pt``.
        max_tokens: total tubelets per video (``None``: only the per-frame cap).
        trade: how ``max_tokens`` is met: ``"balanced"``, ``"frames"``,
            ``"resolution"`` (see :mod:`patchpack.fit.video`).
        index: ``"packets"`` (exact, scans packet headers) or ``"metadata"``.
        threads: decoder threads; 0 (automatic): one thread for frames under 1920x1080
            pixels (measured: threads cost more than they save on short clips and gave
            nothing at 720p; loader workers already use the cores), FFmpeg's count from 1080p.
        thread_type: ``"AUTO"``, ``"FRAME"``, ``"SLICE"`` or ``"NONE"`` (with ``threads > 0``,
            or from 1080p up).
        interpolation: swscale resize filter (``"AREA"``, ``"BILINEAR"``, ``"BICUBIC"``, ...).
        max_source_pixels: per-frame size limit (decompression-bomb guard), on the size the
            header declares and on every frame actually decoded: FFmpeg's decoder is opened with
            ``max_pixels`` at this value, so a stream that declares a small size and then sends
            larger frames is ``too-large`` before such a frame is allocated. Memory per clip: the
            encoded bytes + the output + the decoder's few reference frames, each at most this many
            pixels (1.5-6 bytes a pixel by pixel format: ~100-400 MB at the default).
        max_packets: most video packets (frames) a clip may have; a longer one is
            ``too-large``, found while its index is built, so the index holds at most this
            many entries (~150 bytes each while demuxing: 1,000,000 is ~9 h at 30 fps and
            ~150 MB).
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
    max_packets: int = 1_000_000

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
        if self.max_packets < 1:
            raise ValueError("max_packets must be >= 1")
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


"""Video frame decoding with PyAV: only the planned frames, resized straight to the planned size.

The decode plan (:func:`~patchpack.decode.video.header.frame_plan`, from the header's packet
index) holds, per planned frame, its timestamp and the key frame at or before it.
:func:`materialize_video` walks the plan in order:

* **seek or decode forward**: it restarts at the key frame before the next planned frame when
  that key frame lies past the last decoded one (seeking skips decoding), and otherwise
  decodes forward, so spread frames on long clips cost one key-frame interval each, and
  dense frames on short clips one pass;
* **decode only what codecs need**: packets of frames that are not planned are decoded with
  ``skip_frame = NONREF``, so the decoder drops non-reference frames (most B-frames) instead
  of reconstructing them; no frame that is not planned is ever converted;
* **no second demux** where the header found every packet verbatim in the bytes (MP4/MOV,
  Matroska/WebM; codecs in :data:`~patchpack.decode.video.header.FED_CODECS`): the planned
  packets are fed to a decoder straight from the bytes, so the clip is not opened and probed
  again (for VP9 in WebM that probe decodes a frame). Otherwise, or if that decoder refuses,
  the container is opened and seeked;
* **convert once**: one swscale context per clip (single-threaded) converts each planned
  frame to RGB at the planned size; repeated frames are copied.

**Memory**: the encoded bytes, held once (the demuxer reads them through ``io.BytesIO``,
which shares a ``bytes`` object's buffer instead of copying it; fed packets copy one packet
at a time) + the output
``uint8 [T, H, W, 3]`` (the sampled frames) + the decoder's reference frames and frame-thread
queue (a few source-size frames), whatever the clip's length.

**Threads** (``VideoConfig.threads = 0``): frames of at least :data:`THREAD_MIN_PIXELS`
(1080p) decode with FFmpeg's own thread count and ``thread_type``; smaller frames decode on
one thread. Measured (``benchmarks/video.py``): on short clips starting decoder threads costs
more than they save, and on a 720p clip frame threads gave no gain (seeks drain the thread
queue); a loader already runs one decoder per worker.

**Orientation**: a display rotation (90/180/270 degrees, mirrors) found by the header is
applied, so frames come out as a player shows them (``plan.size`` is the displayed size).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterator, NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from ...errors import SampleError
from ...example import CropBox, Plan
from .config import VideoConfig
from .container import is_truncated, open_container, video_stream
from .orientation import IDENTITY, orient, transposes

__all__ = ["materialize_video", "image_clip", "THREAD_MIN_PIXELS"]

#: In ``"metadata"`` index mode, seek only when the next frame is more than this far ahead (seconds).
_SEEK_GAP_S = 1.0

#: With ``threads=0``, frames this large (pixels) or larger decode on FFmpeg's threads; smaller on one.
THREAD_MIN_PIXELS = 1920 * 1080


def image_clip(image: np.ndarray, tubelet: int) -> np.ndarray:
    """An ``[H, W, C]`` image as a one-tubelet clip ``[pt, H, W, C]`` (the image repeated ``pt`` times).

    This is how images share a token width with videos in a mixed stream: their grid
    is ``(1, gh, gw)`` and positions have ``t = 0``.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(np.broadcast_to(image[None], (tubelet, *image.shape)))


class _Decoder:
    """Decoded frames from the current position, dropping non-reference frames nobody wants."""

    def __init__(self, container: Any, vs: Any, skip_unwanted: bool):
        self.container, self.vs, self.skip_unwanted = container, vs, skip_unwanted
        self.wanted: set[int] = set()
        self.decoded = 0
        self._skipping = False

    def frames(self) -> Iterator[Any]:
        cc = self.vs.codec_context
        for packet in self.container.demux(self.vs):
            if self.skip_unwanted:
                skip = packet.pts is not None and packet.pts not in self.wanted
                if skip != self._skipping:
                    cc.skip_frame = "NONREF" if skip else "DEFAULT"
                    self._skipping = skip
            for frame in packet.decode():
                self.decoded += 1
                yield frame


def _limit_frames(cc: Any, cfg: VideoConfig) -> None:
    """Have FFmpeg refuse to allocate a frame over ``cfg.max_source_pixels`` (its ``max_pixels``
    codec option, checked when a frame's size is set): a stream that declares a small size
    and then sends huge frames never gets them allocated."""
    cc.options = {**cc.options, "max_pixels": str(int(cfg.max_source_pixels))}


def _refused_size(exc: BaseException, cc: Any, cfg: VideoConfig) -> bool:
    """Whether a decode error is FFmpeg refusing a frame size (``EINVAL``, the size reset to 0x0 or
    left over the limit)."""
    pixels = (cc.width or 0) * (cc.height or 0)
    return isinstance(exc, av.error.ArgumentError) and (pixels == 0 or pixels > cfg.max_source_pixels)


def _check_frame(frame: Any, cfg: VideoConfig, declared: tuple[int, int], key: str) -> None:
    """A decoded frame's real size against ``max_source_pixels``, before it is converted."""
    if frame.width * frame.height > cfg.max_source_pixels:
        raise SampleError("too-large", f"a decoded frame is {frame.width}x{frame.height}: over max_source_pixels "
                          f"({cfg.max_source_pixels}); the stream declared {declared[1]}x{declared[0]}", key=key)


def _too_large(cfg: VideoConfig, declared: tuple[int, int], key: str) -> SampleError:
    return SampleError("too-large", f"the decoder refused a frame over max_source_pixels ({cfg.max_source_pixels}); "
                       f"the stream declared {declared[1]}x{declared[0]}", key=key)


def _threads(cc: Any, cfg: VideoConfig, pixels: int) -> None:
    threads, kind = cfg.threads, cfg.thread_type
    if threads == 0 and pixels < THREAD_MIN_PIXELS:
        threads, kind = 1, "NONE"
    try:
        cc.thread_type = kind
        cc.thread_count = threads
    except Exception:  # pragma: no cover - decoder already opened or threading unsupported
        pass


def _decode_fed(data: bytes, info: dict[str, Any], cfg: VideoConfig, convert: Any, out: np.ndarray,
                stored: tuple[int, int], key: str, counts: dict[str, int]) -> None:
    """The planned frames, feeding the codec the planned packets straight from ``data`` (no demuxer).

    The same walk as through a container: restart at a key frame when it lies past the last
    packet fed, else feed on; unwanted packets are decoded with ``skip_frame = NONREF``; the
    decoder is drained at the end of each planned run of packets.
    """
    feed = info["feed"]
    offsets, sizes, order = feed["offsets"], feed["sizes"], feed["pts"]
    row, r = {}, 0
    for a, b in feed["ranges"]:
        for j in range(a, b + 1):
            row[j] = r
            r += 1
    cc = av.CodecContext.create(info["codec"], "r")
    cc.height, cc.width = stored
    if info.get("extradata"):
        cc.extradata = bytes.fromhex(info["extradata"])
    _threads(cc, cfg, stored[0] * stored[1])
    _limit_frames(cc, cfg)
    wanted: set[int] = set()
    state = {"last": -1, "skipping": False}

    def run(start: int) -> Iterator[Any]:
        j = start
        while j in row:
            k = row[j]
            skip = order[k] not in wanted
            if skip != state["skipping"]:
                cc.skip_frame = "NONREF" if skip else "DEFAULT"
                state["skipping"] = skip
            packet = av.Packet(data[offsets[k] : offsets[k] + sizes[k]])
            packet.pts = order[k]
            state["last"] = j
            j += 1
            yield from cc.decode(packet)
        yield from cc.decode(None)  # end of the planned run: drain the frames still queued

    targets, seek_index = info["pts"], feed["seek_index"]
    frames: Iterator[Any] | None = None
    for i, tgt in enumerate(targets):
        if i and tgt == targets[i - 1]:
            out[i] = out[i - 1]
            continue
        wanted.clear()
        wanted.update(targets[i:])
        if frames is None or seek_index[i] > state["last"]:
            if frames is not None:
                cc.flush_buffers()
                counts["seeks"] += 1
            frames = run(seek_index[i])
        got = None
        for frame in frames:
            counts["decoded"] += 1
            if frame.pts is not None and frame.pts >= tgt:
                got = frame
                break
        if got is None:
            raise SampleError("corrupt", f"frame at pts {tgt} did not decode", key=key)
        _check_frame(got, cfg, stored, key)
        out[i] = convert(got)


def _crop_frame_size(source: Any, crop: CropBox, hh: int, ww: int) -> tuple[int, int]:
    """Displayed frame size to convert to so that an augmentation crop covers about ``hh x ww``
    (never above the source size)."""
    h, w = int(source[0]), int(source[1])
    return min(h, -(-h * hh // int(crop[2]))), min(w, -(-w * ww // int(crop[3])))


def _cut(rgb: np.ndarray, crop: CropBox, source: Any, hh: int, ww: int) -> np.ndarray:
    """Cut the crop (same box for every frame) out of a converted displayed frame, resize it to
    ``hh x ww`` (Pillow, bilinear) and flip it when asked."""
    top, left, ch, cw, flip = crop
    ky, kx = rgb.shape[0] / int(source[0]), rgb.shape[1] / int(source[1])
    box = (left * kx, top * ky, (left + cw) * kx, (top + ch) * ky)
    im = Image.fromarray(np.ascontiguousarray(rgb)).resize((ww, hh), Image.Resampling.BILINEAR, box=box)
    if flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im)


class _Targets(NamedTuple):
    """The decode plan's frames: their timestamps, where to seek for each, how to match them."""

    pts: list[int]
    seeks: list[int]
    tolerance: int
    mode: str
    gap: int
    first: int
    display: tuple

    @classmethod
    def of(cls, info: dict[str, Any]) -> "_Targets":
        mode = info.get("index", "packets")
        tb = Fraction(*info["time_base"])
        return cls(list(info["pts"]), list(info["seek_pts"]), int(info.get("tolerance", 0)), mode,
                   int(_SEEK_GAP_S / tb) if mode == "metadata" else 0, int(info.get("first_pts", 0)),
                   tuple(info.get("display", IDENTITY)))


def _converter(plan: Any, cfg: VideoConfig, display: tuple):
    """``convert(frame) -> rgb [H, W, 3]`` at ``plan.size``, as displayed, cropped when augmented."""
    hh, ww = plan.size
    crop = plan.crop  # augmentation crop in displayed source pixels
    fh, fw = (hh, ww) if crop is None else _crop_frame_size(plan.source_size, crop, hh, ww)
    sh, sw = (fw, fh) if transposes(display) else (fh, fw)  # decoded (stored) orientation
    scaler = VideoReformatter()

    def convert(frame: Any) -> np.ndarray:
        rgb = scaler.reformat(frame, width=sw, height=sh, format="rgb24", interpolation=cfg.interpolation,
                              threads=1).to_ndarray()
        rgb = orient(rgb, display) if display != IDENTITY else rgb
        return rgb if crop is None else _cut(rgb, crop, plan.source_size, hh, ww)

    return convert


class _Walk:
    """The planned frames read through the container in order, seeking forward when a key frame
    lies between the last decoded frame and the next target (or, in metadata mode, when the gap is
    long), and back to the start when a seek lands past its target."""

    def __init__(self, container: Any, vs: Any, t: _Targets, key: str) -> None:
        self.container, self.vs, self.t, self.key = container, vs, t, key
        self.dec = _Decoder(container, vs, skip_unwanted=t.mode == "packets")
        self.frames: Iterator[Any] | None = None
        self.pos: int | None = None  # timestamp (or count) of the last decoded frame
        self.last = None  # last decoded frame, for sample times past the end (metadata mode)
        self.just_seeked = False
        self.seeks = 0

    def _wants_seek(self, i: int, tgt: int) -> bool:
        ref = self.pos if self.pos is not None else self.t.first
        if self.t.mode == "packets":
            return self.t.seeks[i] > ref  # a key frame lies between here and the target
        return self.t.mode == "metadata" and tgt - ref > self.t.gap

    def _restart(self, seek_to: int | None) -> None:
        if seek_to is not None:
            self.container.seek(int(seek_to), stream=self.vs if seek_to else None, backward=True, any_frame=False)
            self.seeks += 1
        self.frames = self.dec.frames()
        self.pos = -1 if self.t.mode == "count" else None

    def _pts(self, frame: Any) -> int:
        if self.t.mode == "count":
            return (self.pos if self.pos is not None else -1) + 1
        fpts = frame.pts if frame.pts is not None else frame.dts
        return fpts if fpts is not None else (self.pos if self.pos is not None else 0) + 1

    def frame(self, i: int, tgt: int, frame_index: int) -> Any:
        """The frame at target ``tgt`` (the ``i``-th planned one)."""
        self.dec.wanted = set(self.t.pts[i:])
        want_seek = self._wants_seek(i, tgt)
        if self.frames is None or want_seek:
            self._restart(self.t.seeks[i] if want_seek else None)
            self.just_seeked = want_seek
        tol = self.t.tolerance
        for frame in self.frames:
            fpts = self._pts(frame)
            if self.just_seeked and fpts > tgt + tol:  # the demuxer landed past the target: start over
                self.just_seeked = False
                self._restart(0)
                return self.frame(i, tgt, frame_index)
            self.just_seeked, self.pos, self.last = False, fpts, frame
            if fpts >= tgt - tol:
                return frame
        if self.t.mode == "metadata" and self.last is not None:
            return self.last  # the headers promised more frames than there are
        if self.last is None and self.dec.decoded == 0:
            raise SampleError("no-frames", "no frame decoded", key=self.key)
        raise SampleError("corrupt", f"frame {frame_index} did not decode", key=self.key)


def _through_container(data: bytes, plan: Any, cfg: VideoConfig, t: _Targets, convert, out: np.ndarray,
                       key: str) -> tuple[int, int]:
    """Decode the planned frames through the container into ``out``; ``(frames decoded, seeks)``."""
    with open_container(data, key) as container:
        vs = video_stream(container, key)
        cc = vs.codec_context
        _threads(cc, cfg, (cc.width or 0) * (cc.height or 0))
        _limit_frames(cc, cfg)
        declared = (cc.height or 0, cc.width or 0)
        walk = _Walk(container, vs, t, key)
        try:
            for i, tgt in enumerate(t.pts):
                if i and tgt == t.pts[i - 1]:
                    out[i] = out[i - 1]
                    continue
                got = walk.frame(i, tgt, plan.frame_indices[i])
                _check_frame(got, cfg, declared, key)
                out[i] = convert(got)
        except (av.error.FFmpegError, ValueError, OSError) as e:  # FFmpeg/swscale failures, not SampleError
            if _refused_size(e, cc, cfg):
                raise _too_large(cfg, declared, key) from None
            kind = "truncated" if is_truncated(data) else "corrupt"
            raise SampleError(kind, f"decode failed ({e})", key=key) from None
    return walk.dec.decoded, walk.seeks


def _fed(data: bytes, plan: Any, cfg: VideoConfig, convert, out: np.ndarray, key: str) -> dict[str, int] | None:
    """Decode from the packets the header found in the bytes (no demuxer); ``None`` when the codec
    wants more than the packets (then the container path runs)."""
    counts = {"decoded": 0, "seeks": 0}
    stored = tuple(plan.decode.get("stored_size", plan.source_size))
    try:
        _decode_fed(data, plan.decode, cfg, convert, out, stored, key, counts)  # type: ignore[arg-type]
    except SampleError as e:
        if e.kind == "too-large":
            raise
        return None
    except (av.error.FFmpegError, ValueError, OSError):
        return None  # the codec wants more than the packets (or the bytes are bad)
    return counts


def materialize_video(
    data: bytes,
    plan: Any,
    cfg: VideoConfig,
    *,
    key: str = "",
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Decode the planned frames: ``uint8 [T, H, W, 3]`` at ``plan.size``, RGB, as displayed.

    ``plan.decode`` is the decode plan from :func:`~patchpack.decode.video.header.frame_plan`
    (see the module doc for the order of work and the memory bound).

    Args:
        stats: if given, ``decoded`` (frames the decoder returned) and ``seeks`` are added to it.
    """
    t = _Targets.of(plan.decode)
    hh, ww = plan.size
    out = np.empty((len(t.pts), hh, ww, 3), np.uint8)
    convert = _converter(plan, cfg, t.display)
    counts = _fed(data, plan, cfg, convert, out, key) if t.mode == "packets" and "feed" in plan.decode else None
    if counts is None:
        decoded, seeks = _through_container(data, plan, cfg, t, convert, out, key)
        counts = {"decoded": decoded, "seeks": seeks}
    if stats is not None:
        for name, value in counts.items():
            stats[name] = stats.get(name, 0) + value
    return out

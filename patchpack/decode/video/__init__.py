"""Video decoding with PyAV from in-memory bytes, decoding only the sampled frames.

Two steps, as for images (see :mod:`patchpack.decode`):

1. :func:`~patchpack.decode.video.header.read_video_header` opens the container and
   reads metadata and the packet index of the video stream (demux only, no decoding):
   frame timestamps, key frames, size, rate. :mod:`patchpack.fit` then samples frames
   (by timestamps, so variable frame rate is handled) and fits one spatial size and a
   frame count; :func:`~patchpack.decode.video.header.frame_plan` turns the chosen
   frames into a decode plan (target timestamps and seek points).
2. :func:`~patchpack.decode.video.frames.materialize_video` re-opens the bytes and, for each sampled frame,
   seeks to the key frame before it when that key frame lies past the last decoded frame,
   else decodes forward (dropping unwanted non-reference frames), and resizes it straight
   into the output ``uint8 [T, H, W, 3]``. Peak memory: the clip's bytes (held once) + the
   sampled frames + the decoder's reference frames, never proportional to the clip's length.

A display rotation (phone video: 90/180/270 degrees, mirrors) is read from the container
(:mod:`~patchpack.decode.video.orientation`) and applied: sizes and frames are as displayed.

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

from typing import Any

from .config import CLIP_MODES, INDEX_MODES, ROUNDING, SHORT_POLICIES, THREAD_TYPES, TRADES, VIDEO_EXTS, VideoConfig

__all__ = [
    "VideoConfig", "VIDEO_EXTS", "INDEX_MODES", "THREAD_TYPES", "CLIP_MODES", "SHORT_POLICIES", "TRADES", "ROUNDING",
    "read_video_header", "frame_plan", "materialize_video", "image_clip",
]

# PyAV is imported only when a header is read or frames are decoded
_LAZY = {"read_video_header": "header", "frame_plan": "header", "materialize_video": "frames", "image_clip": "frames"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

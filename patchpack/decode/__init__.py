"""Bytes -> header facts, and bytes -> pixels at a given size (decode never chooses the size).

1. ``read_header(data, kind, ...) -> Header``: cheap (image header / container metadata
   only): the source size and, for videos, frame timestamps and the packet index.
   :mod:`patchpack.fit` turns a header into a :class:`~patchpack.example.Plan` (fitted size,
   grid, frames); ``decode_plan(header, plan)`` adds how to decode those frames.
2. ``materialize(data, plan, ...) -> np.ndarray``: the pixels, uint8 ``[F, H, W, 3]`` at
   exactly ``plan.size``, where ``F = T * pt`` (grid ``T`` times the tubelet).

Both raise :class:`patchpack.errors.SampleError` for bad input.

:func:`media_member` picks a sample's media member by extension; :func:`read_header` and
:func:`materialize` dispatch to :mod:`patchpack.decode.image` or, when a video config is
given, to :mod:`patchpack.decode.video` (PyAV imported lazily). In a video-enabled stream an
image is a single-tubelet clip: grid ``T = 1`` and its pixels repeated ``pt`` times, so
every token has the same width ``pt*p*p*3``.
"""

from __future__ import annotations

from typing import Any

from ..errors import SampleError
from ..example import Header, Plan

__all__ = ["Header", "media_member", "read_header", "decode_plan", "materialize", "tubelet_of"]


def tubelet_of(video_cfg: Any | None) -> int:
    """Temporal tubelet depth ``pt`` of a stream (1 without video)."""
    return int(getattr(video_cfg, "tubelet", 1) or 1) if video_cfg is not None else 1


def media_member(members: dict[str, bytes], video_cfg: Any | None = None) -> tuple[str, str] | None:
    """``(member name, kind)`` of a sample's media member, else ``None``.

    Member names are matched on their last extension, case-insensitively
    (``"jpg"``, ``"seg.png"`` -> ``png``). When video is enabled a video member wins
    over images (which are then posters or thumbnails); otherwise the first image.
    """
    from .image import IMAGE_EXTS

    if video_cfg is not None:
        from .video.config import VIDEO_EXTS

        for name in members:
            if name.rsplit(".", 1)[-1].lower() in VIDEO_EXTS:
                return name, "video"
    for name in members:
        if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
            return name, "image"
    return None


def read_header(data: bytes, kind: str, image_cfg=None, video_cfg=None, *, key: str = "") -> Header:
    """Header facts of an ``"image"`` or ``"video"`` payload (see module doc)."""
    if kind == "video":
        if video_cfg is None:
            raise SampleError("unsupported", "video member but video decoding is not enabled", stage="decode")
        from .video.header import read_video_header

        return read_video_header(data, video_cfg, key=key)
    from .image import read_image_header

    return read_image_header(data, image_cfg)


def decode_plan(header: Header, plan: Plan) -> dict[str, Any]:
    """The decoder's own plan for the frames ``plan`` chose (video: timestamps to seek to and decode,
    codec facts; :attr:`Plan.decode`); ``{}`` for images, whose plan says all the decoder needs."""
    if plan.kind != "video":
        return {}
    from .video.header import frame_plan

    return frame_plan(header, plan.frame_indices)


def materialize(data: bytes, plan: Plan, image_cfg=None, video_cfg=None):
    """Pixels uint8 ``[F, H, W, 3]`` at ``plan.size``; ``F = T * pt`` (``pt`` = 1 without video)."""
    if plan.kind == "video":
        from .video.frames import materialize_video

        return materialize_video(data, plan, video_cfg)
    from .image import materialize_image

    frames = materialize_image(data, plan, image_cfg)
    pt = tubelet_of(video_cfg)
    return frames if pt == 1 else frames.repeat(pt, axis=0)

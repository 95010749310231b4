"""Decoding in two steps, so packing can be decided before pixels exist.

1. ``probe(data, ...) -> Probe``: cheap (image header / container metadata only):
   source size, the fitted size, the frames to decode and hence the token count.
2. ``materialize(data, probe, ...) -> np.ndarray``: the pixels, uint8
   ``[F, H, W, 3]`` at exactly the fitted size, where ``F = T * pt`` (grid ``T`` times the tubelet).

Both raise :class:`patchpack.errors.SampleError` for bad input.

:func:`media_member` picks a sample's media member by extension, and :func:`probe` /
:func:`materialize` dispatch to :mod:`patchpack.decode.image` or, when a video
config is given, to :mod:`patchpack.decode.video` (imported lazily). In a
video-enabled stream an image is a single-tubelet clip: grid ``T = 1`` and its
pixels repeated ``pt`` times, so every token has the same width ``pt*p*p*3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Probe", "media_member", "probe", "materialize", "tubelet_of"]


@dataclass
class Probe:
    """What the header says and what the fit decided, before any pixel decode.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        source_size: ``(height, width)`` of the source in pixels (after EXIF rotation).
        size: fitted ``(height, width)`` per frame in pixels (multiples of ``p``).
        grid: token grid ``(T, H, W)``: ``T`` tubelets in time (1 for images).
        frame_indices: video frames to decode, in order, ``T * pt`` of them
            (empty for images).
        info: extra facts (fps, duration, mode, ...), JSON-serialisable.
    """

    kind: str
    source_size: tuple[int, int]
    size: tuple[int, int]
    grid: tuple[int, int, int]
    frame_indices: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


def _video_module():
    from . import video  # lazy: PyAV is imported only for video-enabled streams

    return video


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
        video_exts = frozenset(_video_module().VIDEO_EXTS)
        for name in members:
            if name.rsplit(".", 1)[-1].lower() in video_exts:
                return name, "video"
    for name in members:
        if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
            return name, "image"
    return None


def probe(data: bytes, kind: str, fit_cfg, image_cfg=None, video_cfg=None, rng=None) -> Probe:
    """Header-only probe of an ``"image"`` or ``"video"`` payload (see module doc)."""
    if kind == "video":
        if video_cfg is None:
            from ..errors import SampleError

            raise SampleError("unsupported", "video member but video decoding is not enabled", stage="decode")
        return _video_module().probe_video(data, fit_cfg, video_cfg, rng)
    from .image import probe_image

    return probe_image(data, fit_cfg, image_cfg, rng)


def materialize(data: bytes, probe_: Probe, image_cfg=None, video_cfg=None):
    """Pixels uint8 ``[F, H, W, 3]`` at ``probe_.size``; ``F = T * pt`` (``pt`` = 1 without video)."""
    if probe_.kind == "video":
        return _video_module().materialize_video(data, probe_, video_cfg)
    from .image import materialize_image

    frames = materialize_image(data, probe_, image_cfg)
    pt = tubelet_of(video_cfg)
    return frames if pt == 1 else frames.repeat(pt, axis=0)

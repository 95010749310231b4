"""Decoding in two steps, so packing can be decided before pixels exist.

1. ``probe(data, ...) -> Probe``: cheap (image header / container metadata only):
   source size, the fitted size, the frames to decode and hence the token count.
2. ``materialize(data, probe, ...) -> np.ndarray``: the pixels, uint8
   ``[F, H, W, 3]`` at exactly the fitted size, where ``F = probe.frames_out``.

Both raise :class:`patchpack.errors.SampleError` for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Probe"]


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

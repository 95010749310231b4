"""What one example is before it has pixels: :class:`Header` (what its bytes say) and :class:`Plan`
(what the fit decided), with the augmentation :class:`CropBox` they carry.

These are the typed seams between the stages: ``decode.read_header`` makes a
:class:`Header`, ``fit.plan_example`` turns it into a :class:`Plan`, ``decode.materialize``
decodes exactly what the plan says, and the packer buffer holds plans (and their bytes),
never pixels. Plain values, no patchpack import: every layer can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["CropBox", "Header", "Plan"]


class CropBox(NamedTuple):
    """A crop in source pixels (displayed orientation) and whether to flip it.

    Attributes:
        top, left: corner of the box, pixels from the top-left of the displayed source.
        height, width: box size in pixels (>= 1, inside the source).
        flip: mirror the crop horizontally (after any EXIF rotation).
    """

    top: int
    left: int
    height: int
    width: int
    flip: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the crop: the size the fit runs on."""
        return self.height, self.width

    def to_list(self) -> list:
        """JSON-ready ``[top, left, height, width, flip]``."""
        return [int(self.top), int(self.left), int(self.height), int(self.width), bool(self.flip)]

    @classmethod
    def from_list(cls, values) -> "CropBox":
        top, left, height, width, flip = values
        return cls(int(top), int(left), int(height), int(width), bool(flip))

    @classmethod
    def whole(cls, height: int, width: int) -> "CropBox":
        return cls(0, 0, int(height), int(width), False)

    def is_identity(self, height: int, width: int) -> bool:
        """True when the box is the whole ``height x width`` source, unflipped."""
        return (self.top, self.left, self.height, self.width, self.flip) == (0, 0, height, width, False)


@dataclass
class Header:
    """Header facts of one image or video payload (no fitting, no pixels).

    Attributes:
        kind: ``"image"`` or ``"video"``.
        source_size: ``(height, width)`` in pixels as displayed (after EXIF rotation or a
            video's display matrix).
        stored_size: ``(height, width)`` as stored in the file, before any rotation.
        orientation: EXIF orientation ``1..8`` of an image (1: as stored; videos: 1).
        format: the file format (Pillow's ``JPEG``, ``PNG``, ...; FFmpeg's container name).
        mode: Pillow's pixel mode of an image (``RGB``, ``I;16``, ...); ``""`` for videos.
        frames: video only: the frame count, or per-frame presentation timestamps in
            seconds from the first frame (what frame sampling works on).
        rate: video only: the stream's frame rate in frames/s, when known.
        num_frames: video only: frames in the clip.
        stream: video only: the decoder's facts about the stream (codec, time base, display
            matrix, index mode), JSON-ready; written and read by :mod:`patchpack.decode.video`.
        index: video only: the decoder's private packet index (timestamps, key frames), used to
            turn chosen frame indices into a decode plan; never serialised.
        key: sample key, for error records.
    """

    kind: str
    source_size: tuple[int, int]
    stored_size: tuple[int, int] = (0, 0)
    orientation: int = 1
    format: str = ""
    mode: str = ""
    frames: Any = None
    rate: float | None = None
    num_frames: int = 0
    stream: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    key: str = ""


@dataclass
class Plan:
    """What the header says and what the fit decided, before any pixel decode.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        source_size: ``(height, width)`` of the source in pixels (after EXIF rotation).
        size: fitted ``(height, width)`` per frame in pixels (multiples of ``p``).
        grid: token grid ``(T, H, W)``: ``T`` tubelets in time (1 for images).
        frame_indices: video frames to decode, in order, ``T * pt`` of them (empty for images).
        orientation: EXIF orientation ``1..8`` the decoder applies (images).
        crop: the augmentation crop the decoder cuts (displayed source pixels), or ``None``.
        decode: video only: the decoder's plan for the chosen frames (timestamps to seek and
            decode, codec facts), JSON-ready; written by
            :func:`patchpack.decode.video.header.frame_plan`, read by
            :func:`patchpack.decode.video.frames.materialize_video`.
        stored: the example was read already tokenized from a patchpack shard.
    """

    kind: str
    source_size: tuple[int, int]
    size: tuple[int, int]
    grid: tuple[int, int, int]
    frame_indices: list[int] = field(default_factory=list)
    orientation: int = 1
    crop: CropBox | None = None
    decode: dict[str, Any] = field(default_factory=dict)
    stored: bool = False

    @property
    def tokens(self) -> int:
        """Tokens of the full grid, before any dropping: ``T * H * W``."""
        t, h, w = self.grid
        return t * h * w

    def to_json(self) -> list:
        """JSON-ready form (for resume states): a list, in field order."""
        return [self.kind, list(self.source_size), list(self.size), list(self.grid), list(self.frame_indices),
                self.orientation, None if self.crop is None else self.crop.to_list(), self.decode, self.stored]

    @classmethod
    def from_json(cls, values: list) -> "Plan":
        """The plan :meth:`to_json` wrote.

        Raises:
            ValueError: not a plan written by :meth:`to_json` (wrong length or field types).
        """
        try:
            kind, src, size, grid, frames, orientation, crop, decode, stored = values
            if kind not in ("image", "video") or not isinstance(decode, dict):
                raise ValueError(f"kind {kind!r}")
            plan = cls(str(kind), _ints(src, 2), _ints(size, 2), _ints(grid, 3), [int(i) for i in frames],
                       int(orientation), None if crop is None else CropBox.from_list(crop), dict(decode), bool(stored))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a saved plan: {str(exc)[:80]}") from None
        if min(plan.grid) < 1 or min(plan.size) < 1 or not 1 <= plan.orientation <= 8:
            raise ValueError(f"not a saved plan: grid {plan.grid}, size {plan.size}, orientation {plan.orientation}")
        return plan


def _ints(values: Any, n: int) -> tuple:
    out = tuple(int(v) for v in values)
    if len(out) != n:
        raise ValueError(f"expected {n} integers, got {len(out)}")
    return out

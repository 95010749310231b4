"""What a header says before any pixel is decoded: :class:`Header`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Header"]


@dataclass
class Header:
    """Header facts of one image or video payload (no fitting, no pixels).

    Attributes:
        kind: ``"image"`` or ``"video"``.
        source_size: ``(height, width)`` in pixels as displayed (after EXIF rotation).
        info: JSON-serialisable facts (image: ``format``, ``mode``, ``orientation``,
            ``stored_size``; video: ``codec``, ``format``, ``time_base``, ``index``).
        frames: video only: the frame count, or per-frame presentation timestamps in
            seconds from the first frame (what frame sampling works on).
        rate: video only: the stream's frame rate in frames/s, when known.
        num_frames: video only: frames in the clip.
        index: video only: the decoder's private index (packet timestamps, key frames),
            used to turn chosen frame indices into a decode plan; not serialised.
        key: sample key, for error records.
    """

    kind: str
    source_size: tuple[int, int]
    info: dict[str, Any] = field(default_factory=dict)
    frames: Any = None
    rate: float | None = None
    num_frames: int = 0
    index: dict[str, Any] = field(default_factory=dict)
    key: str = ""

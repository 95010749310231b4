"""Header -> plan: the fitted size, token grid and frames to decode of one example, under a budget.

:func:`plan_example` is the fit step of the flow: it takes a
:class:`~patchpack.decode.header.Header` (what decoding found without pixels) and returns a
:class:`Plan`; :func:`patchpack.decode.materialize` then decodes exactly that. Sub-modules:
:mod:`~patchpack.fit.image` (resolution under a budget), :mod:`~patchpack.fit.video` (one
size and a frame count per video) and :mod:`~patchpack.fit.frames` (which frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SampleError
from .frames import clip_timestamps, pad_indices, sample_frames, thin_indices
from .image import MODES, FitConfig, fit, fit_grid
from .video import VideoFit, fit_video, round_frames

__all__ = [
    "Plan", "Probe", "FitConfig", "fit", "fit_grid", "MODES", "VideoFit", "fit_video", "round_frames",
    "sample_frames", "thin_indices", "pad_indices", "clip_timestamps", "plan_image", "plan_video",
    "plan_example", "replay_fit_draw", "probe", "probe_image", "probe_video",
]


@dataclass
class Plan:
    """What the header says and what the fit decided, before any pixel decode.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        source_size: ``(height, width)`` of the source in pixels (after EXIF rotation).
        size: fitted ``(height, width)`` per frame in pixels (multiples of ``p``).
        grid: token grid ``(T, H, W)``: ``T`` tubelets in time (1 for images).
        frame_indices: video frames to decode, in order, ``T * pt`` of them
            (empty for images).
        info: header facts and, for videos, the decode plan (fps, duration, pts, ...),
            JSON-serialisable.
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


#: The former name of :class:`Plan`.
Probe = Plan


def plan_image(header, fit_cfg: FitConfig, rng: np.random.Generator | None = None) -> Plan:
    """The plan of an image header: fitted ``size`` and ``grid = (1, H/p, W/p)``."""
    h, w = header.source_size
    fh, fw = fit(h, w, fit_cfg, rng)
    p = fit_cfg.patch_size
    return Plan("image", (int(h), int(w)), (fh, fw), (1, fh // p, fw // p), [], dict(header.info))


def plan_video(header, fit_cfg: FitConfig, video_cfg, rng: np.random.Generator | None = None) -> Plan:
    """Sample frames, fit one spatial size and a frame count, and plan their decode.

    Returns a :class:`Plan` of kind ``"video"``: ``size`` per frame in pixels,
    ``grid = (T/pt, gh, gw)``, ``frame_indices`` the ``T`` frames in order (a multiple of
    ``pt``; repeats allowed), and ``info`` with ``fps``, ``duration`` (s), ``num_frames``,
    ``vfr``, ``codec``, ``format``, ``index`` and the decode plan (``pts``, ``seek_pts``, ``time_base``).
    """
    from ..decode.video.header import frame_plan

    key = header.key
    try:
        # a still (one-frame video, e.g. a static GIF) is one tubelet, like an image
        cand = (np.zeros(1, np.int64) if header.num_frames == 1
                else sample_frames(header.frames, header.rate, video_cfg, rng))
    except ValueError as e:
        raise SampleError("corrupt", f"cannot sample frames: {e}", key=key, stage="decode") from None
    h, w = header.source_size
    vf = fit_video(
        h, w, len(cand), fit_cfg, tubelet=video_cfg.tubelet, max_tokens=video_cfg.max_tokens,
        trade=video_cfg.trade, rounding=video_cfg.rounding, rng=rng,
    )
    t = vf.frames
    if t >= len(cand):
        idx = pad_indices(cand, t)
    elif t == round_frames(len(cand), video_cfg.tubelet, video_cfg.rounding):
        idx = cand[:t]  # rounded down to the tubelet multiple: cut trailing frames
    else:
        idx = thin_indices(cand, t)  # the budget cut frames: keep the coverage
    return Plan("video", (h, w), vf.size, vf.grid, [int(i) for i in idx], frame_plan(header, idx))


def plan_example(header, fit_cfg: FitConfig, video_cfg=None, rng: np.random.Generator | None = None) -> Plan:
    """The plan of any header (image or video)."""
    if header.kind == "video":
        return plan_video(header, fit_cfg, video_cfg, rng)
    return plan_image(header, fit_cfg, rng)


def replay_fit_draw(kind: str, source_size, fit_cfg: FitConfig, rng: np.random.Generator | None) -> None:
    """Advance ``rng`` exactly as fitting this example advanced it (sampled fit modes draw a size).

    Stored examples were fitted when they were written; replaying the draw keeps the drop
    rate drawn next from the same generator equal to the online one. The one place that
    knows which fits draw.
    """
    if rng is not None and fit_cfg.mode != "native" and kind == "image" and min(source_size) > 0:
        fit_grid(int(source_size[0]), int(source_size[1]), fit_cfg, rng)


def probe(data: bytes, kind: str, fit_cfg: FitConfig, image_cfg=None, video_cfg=None, rng=None, *,
          key: str = "") -> Plan:
    """Header read and fit in one call: :func:`patchpack.decode.read_header` then :func:`plan_example`."""
    from ..decode import read_header

    return plan_example(read_header(data, kind, image_cfg, video_cfg, key=key), fit_cfg, video_cfg, rng)


def probe_image(data: bytes, fit_cfg: FitConfig, cfg=None, rng: np.random.Generator | None = None) -> Plan:
    """:func:`probe` for an image payload."""
    from ..decode.image import read_image_header

    return plan_image(read_image_header(data, cfg), fit_cfg, rng)


def probe_video(data: bytes, fit_cfg: FitConfig, cfg, rng: np.random.Generator | None = None, *,
                key: str = "") -> Plan:
    """:func:`probe` for a video payload."""
    from ..decode.video.header import read_video_header

    return plan_video(read_video_header(data, cfg, key=key), fit_cfg, cfg, rng)

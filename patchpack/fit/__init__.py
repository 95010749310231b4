"""Header -> plan: the fitted size, token grid and frames to decode of one example, under a budget.

:func:`plan_example` is the fit step of the flow: it takes a
:class:`~patchpack.example.Header` (what decoding found without pixels) and returns a
:class:`~patchpack.example.Plan`; :func:`patchpack.decode.decode_plan` adds how to decode a
video's chosen frames, and :func:`patchpack.decode.materialize` decodes exactly that. Sub-modules:
:mod:`~patchpack.fit.image` (resolution under a budget), :mod:`~patchpack.fit.video` (one
size and a frame count per video) and :mod:`~patchpack.fit.frames` (which frames).
"""

from __future__ import annotations

import numpy as np

from ..errors import SampleError
from ..example import Header, Plan
from .frames import clip_timestamps, pad_indices, sample_frames, thin_indices
from .image import MODES, FitConfig, fit, fit_grid
from .video import VideoFit, fit_video, round_frames

__all__ = [
    "Plan", "FitConfig", "fit", "fit_grid", "MODES", "VideoFit", "fit_video", "round_frames",
    "sample_frames", "thin_indices", "pad_indices", "clip_timestamps", "plan_image", "plan_video",
    "plan_example", "replay_fit_draw",
]


def plan_image(header: Header, fit_cfg: FitConfig, rng: np.random.Generator | None = None) -> Plan:
    """The plan of an image header: fitted ``size`` and ``grid = (1, H/p, W/p)``."""
    h, w = header.source_size
    fh, fw = fit(h, w, fit_cfg, rng)
    p = fit_cfg.patch_size
    return Plan("image", (int(h), int(w)), (fh, fw), (1, fh // p, fw // p), orientation=header.orientation)


def plan_video(header: Header, fit_cfg: FitConfig, video_cfg, rng: np.random.Generator | None = None) -> Plan:
    """Sample frames and fit one spatial size and a frame count.

    Returns a :class:`Plan` of kind ``"video"``: ``size`` per frame in pixels,
    ``grid = (T/pt, gh, gw)`` and ``frame_indices`` the ``T`` frames in order (a multiple of
    ``pt``; repeats allowed). How to decode them is :func:`patchpack.decode.decode_plan`'s.
    """
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
    return Plan("video", (h, w), vf.size, vf.grid, [int(i) for i in idx])


def plan_example(header: Header, fit_cfg: FitConfig, video_cfg=None, rng: np.random.Generator | None = None) -> Plan:
    """The plan of any header (image or video)."""
    if header.kind == "video":
        return plan_video(header, fit_cfg, video_cfg, rng)
    return plan_image(header, fit_cfg, rng)


def replay_fit_draw(kind: str, source_size, fit_cfg: FitConfig, rng: np.random.Generator | None) -> None:
    """Advance ``rng`` exactly as fitting this example advanced it (sampled fit modes draw a size).

    Stored examples were fitted when they were written (their size is the epoch-0 draw, in
    every epoch); replaying the draw keeps the drop rate drawn next from the same generator
    equal to the online one. It runs the online fit itself, so the two cannot drift apart
    (a sampled fit of a valid image draws one :func:`~patchpack.fit.image.sample_side`,
    one uniform whatever the mode's parameters; native fits draw nothing). The one place
    that knows which fits draw.
    """
    if rng is not None and fit_cfg.mode != "native" and kind == "image" and min(source_size) > 0:
        fit_grid(int(source_size[0]), int(source_size[1]), fit_cfg, rng)

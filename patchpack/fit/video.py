"""One spatial size per video and a frame count, under a per-frame and a per-video token budget.

A video of ``T`` sampled frames at ``height x width`` becomes a grid of
``(T / pt, gh, gw)`` tubelets of ``pt x p x p`` pixels. :func:`fit_video` chooses:

1. **The per-frame grid** ``(gh, gw)`` with :func:`patchpack.fit.image.fit_grid` under
   the :class:`~patchpack.fit.image.FitConfig` (its ``max_patches`` / ``max_pixels``
   are *per frame*; sampled modes draw one size for the whole video).
2. **The tubelet multiple.** A frame count that is not a multiple of ``pt``
   is rounded ``"up"`` (default: the last frame is repeated, see
   :func:`patchpack.fit.frames.pad_indices`) or ``"down"`` (trailing frames are cut);
   never below ``pt`` frames, so every video has at least one tubelet.
3. **The total budget** ``max_tokens`` (tubelets per video, ``None`` for none):
   when ``T/pt * gh * gw`` exceeds it, ``trade`` decides what gives:

   * ``"balanced"`` (default): frames and per-frame tokens shrink by the same
     factor ``sqrt(max_tokens / tokens)``; frames are then added back while they
     fit (rounding of the grid usually leaves room).
   * ``"frames"``: keep the resolution, use fewer frames (down to one tubelet);
     only a single tubelet that is still too big loses resolution.
   * ``"resolution"``: keep the frames, lower the resolution (down to one patch
     per frame); only then are frames cut.

   Frames cut for the budget are removed evenly over the clip
   (:func:`patchpack.fit.frames.thin_indices`), so the clip keeps its coverage.
   The result always satisfies ``T/pt * gh * gw <= max_tokens``.
4. **Grid multiples.** With ``FitConfig.grid_multiple = m > 1`` every grid above, the
   shrunk ones included, has sides that are multiples of ``m`` (at least ``m x m``;
   ``max_tokens`` must then be at least ``m * m``).

Shrinking a grid reuses :func:`~patchpack.fit.image.fit_grid` in native mode with a
tighter per-frame cap, so aspect ratio and rounding follow the image rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..decode.video.config import ROUNDING, TRADES
from .image import FitConfig, fit_grid

__all__ = ["VideoFit", "fit_video", "round_frames", "TRADES", "ROUNDING"]


@dataclass(frozen=True)
class VideoFit:
    """The fit of one video.

    Attributes:
        frames: ``T``, frames to decode (a multiple of ``tubelet``, ``>= tubelet``).
        grid: ``(T / pt, gh, gw)`` token grid.
        size: ``(H, W)`` per-frame size in pixels (``gh * p, gw * p``).
    """

    frames: int
    grid: tuple[int, int, int]
    size: tuple[int, int]

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


def round_frames(frames: int, tubelet: int, rounding: str = "up") -> int:
    """``frames`` rounded to a multiple of ``tubelet`` (``"up"`` or ``"down"``), at least ``tubelet``."""
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if tubelet < 1:
        raise ValueError("tubelet must be >= 1")
    if rounding not in ROUNDING:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {ROUNDING}")
    k = math.ceil(frames / tubelet) if rounding == "up" else frames // tubelet
    return max(1, k) * tubelet


def _shrink(gh: int, gw: int, cap: int, p: int, m: int = 1) -> tuple[int, int]:
    """Largest aspect-kept grid of at most ``cap`` patches inside ``gh x gw``, sides multiples of ``m``
    (never below ``m x m``)."""
    if gh * gw <= cap:
        return gh, gw
    native = FitConfig(patch_size=p, max_patches=max(m * m, cap), max_pixels=None, mode="native", grid_multiple=m)
    return fit_grid(gh * p, gw * p, native)


def fit_video(
    height: int,
    width: int,
    frames: int,
    fit: FitConfig,
    *,
    tubelet: int = 1,
    max_tokens: int | None = None,
    trade: str = "balanced",
    rounding: str = "up",
    rng: np.random.Generator | None = None,
) -> VideoFit:
    """Fit a ``frames``-frame video of ``height x width`` pixels (see module doc).

    Args:
        height, width: source frame size in pixels.
        frames: frames sampled so far (before the tubelet rounding and the budget).
        fit: per-frame fit (patch size, per-frame caps, mode).
        tubelet: ``pt``, frames per tubelet.
        max_tokens: total tubelet budget for the video, or ``None``.
        trade: ``"balanced"``, ``"frames"`` or ``"resolution"``.
        rounding: ``"up"`` or ``"down"`` to a multiple of ``tubelet``.
        rng: for sampled fit modes.
    """
    if trade not in TRADES:
        raise ValueError(f"unknown trade {trade!r}; expected one of {TRADES}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    p, m = fit.patch_size, fit.grid_multiple
    if max_tokens is not None and max_tokens < m * m:
        raise ValueError(f"max_tokens={max_tokens} is below one {m}x{m} grid (FitConfig.grid_multiple={m})")
    gh, gw = fit_grid(height, width, fit, rng)
    t = round_frames(frames, tubelet, rounding) // tubelet  # tubelets
    if max_tokens is not None and t * gh * gw > max_tokens:
        t_all = t
        if trade == "frames":
            t = max(1, min(t_all, max_tokens // (gh * gw)))
            gh, gw = _shrink(gh, gw, max_tokens // t, p, m)
            t = max(1, min(t_all, max_tokens // (gh * gw)))  # a grid shrunk below one frame's budget frees frames
        elif trade == "resolution":
            per = max_tokens // t_all
            if per >= m * m:
                gh, gw = _shrink(gh, gw, per, p, m)
            else:
                gh, gw = m, m
                t = max_tokens // (m * m)
        else:
            s = max_tokens / (t_all * gh * gw)
            t = max(1, min(t_all, round(t_all * math.sqrt(s))))
            gh, gw = _shrink(gh, gw, max(1, max_tokens // t), p, m)
            t = max(1, min(t_all, max_tokens // (gh * gw)))  # spend rounding slack on frames
    return VideoFit(frames=t * tubelet, grid=(t, gh, gw), size=(gh * p, gw * p))

"""Choose which frames of a video to decode: pure functions over frame counts or timestamps.

A video is described either by its frame count ``n`` (constant frame rate, frame
``i`` shown at ``i / fps`` seconds) or by the presentation timestamps of its
frames in seconds (variable frame rate: frame ``i`` is shown from ``ts[i]`` until
``ts[i+1]``; the last frame for the median frame interval). Sampling modes, set
by the config (a :class:`patchpack.decode.video.VideoConfig` or any object with
the same fields):

* **spread** (``fps`` and ``stride`` both ``None``): ``frames`` frames spread over
  the whole clip. The clip's time span is cut into ``frames`` equal segments and
  one frame is taken per segment: the frame shown at the segment's middle
  (``clip="centre"``), at its start (``"start"``), or a uniformly random one of
  the frames starting inside it (``"random"``, TSN-style; the frame on screen at a
  random time when none starts there).
* **rate** (``fps`` set): ``frames`` frames ``1 / fps`` seconds apart, each the
  frame shown at that time (so a 30 fps source sampled at 10 fps gives every third
  frame, and timestamps make this right for variable frame rate). The window
  starts at a random time (``"random"``), is centred in the clip (``"centre"``) or
  starts at the first frame (``"start"``).
* **stride** (``stride`` set): ``frames`` frames ``stride`` source frames apart
  (by index, whatever the timestamps), window placed as for rate.

``frames=None`` means every frame the rate or stride gives over the whole clip
(in spread mode: every frame).

Videos shorter than asked (``short``):

* ``"repeat"`` (default): always exactly ``frames`` frames. In spread mode,
  a clip with fewer frames than asked has each frame repeated in order
  (nearest-frame temporal upsampling); in rate/stride mode the window starts at
  the first frame and times past the end repeat the last frame.
* ``"fewer"``: only the frames that fit: ``min(frames, n)`` in spread mode, the
  ones inside the clip in rate/stride mode (at least one).

Indices are ``int64``, non-decreasing, in ``[0, n)``. Random choices use ``rng``
only (seeded, reproducible); ``rng`` may be ``None`` for ``clip != "random"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..decode.video.config import CLIP_MODES, SHORT_POLICIES

if TYPE_CHECKING:  # pragma: no cover
    from ..decode.video.config import VideoConfig

__all__ = ["sample_frames", "thin_indices", "pad_indices", "clip_timestamps", "CLIP_MODES", "SHORT_POLICIES"]

#: Tolerance (seconds) when matching a sample time to a frame's start time.
_EPS = 1e-6


def clip_timestamps(num_frames_or_timestamps: int | Sequence[float] | np.ndarray, fps: float | None) -> tuple[np.ndarray, float]:
    """``(ts, end)``: frame start times in seconds, relative to the first frame, and the clip's end time.

    An integer ``n`` gives ``ts = arange(n) / fps`` (``fps`` defaults to 1 when only
    indices matter); timestamps are shifted to start at 0 and must be non-decreasing.
    The last frame lasts the median frame interval (``1 / fps`` when given and there
    is a single frame, else 1 s).
    """
    if isinstance(num_frames_or_timestamps, (int, np.integer)):
        n = int(num_frames_or_timestamps)
        if n < 1:
            raise ValueError("a clip needs at least one frame")
        rate = float(fps) if fps else 1.0
        ts = np.arange(n, dtype=np.float64) / rate
        return ts, n / rate
    ts = np.asarray(num_frames_or_timestamps, dtype=np.float64).reshape(-1)
    if len(ts) == 0:
        raise ValueError("a clip needs at least one frame")
    if not np.all(np.isfinite(ts)):
        raise ValueError("timestamps must be finite")
    if np.any(np.diff(ts) < 0):
        raise ValueError("timestamps must be non-decreasing (presentation order)")
    ts = ts - ts[0]
    diffs = np.diff(ts)
    diffs = diffs[diffs > 0]
    if len(diffs):
        last = float(np.median(diffs))
    else:
        last = 1.0 / fps if fps else 1.0
    return ts, float(ts[-1] + last)


def _frame_at(ts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time (the last frame starting at or before it)."""
    idx = np.searchsorted(ts, times + _EPS, side="right") - 1
    return np.clip(idx, 0, len(ts) - 1).astype(np.int64)


def _start(lo: float, hi: float, clip: str, rng: np.random.Generator | None) -> float:
    """Window start in ``[lo, hi]`` for the clip mode."""
    if hi <= lo or clip == "start":
        return lo
    if clip == "centre":
        return (lo + hi) / 2
    if rng is None:
        raise ValueError('clip="random" needs an rng')
    return float(rng.uniform(lo, hi))


def sample_frames(
    num_frames_or_timestamps: int | Sequence[float] | np.ndarray,
    fps: float | None,
    cfg: "VideoConfig",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices to decode (see module doc for the modes and the short-video policy).

    Args:
        num_frames_or_timestamps: frame count ``n``, or per-frame presentation
            timestamps in seconds (sorted).
        fps: source frame rate (frames/s); needed with an integer count in rate mode.
        cfg: sampling fields ``frames``, ``fps``, ``stride``, ``clip``, ``short``.
        rng: random generator for ``clip="random"``.

    Returns:
        int64 ``[T]`` non-decreasing frame indices in ``[0, n)``.
    """
    if cfg.fps is not None and isinstance(num_frames_or_timestamps, (int, np.integer)) and not fps:
        raise ValueError("rate sampling over a frame count needs the source fps")
    ts, end = clip_timestamps(num_frames_or_timestamps, fps)
    n = len(ts)
    want = cfg.frames
    if cfg.stride is not None:
        return _sample_stride(n, want, int(cfg.stride), cfg.clip, cfg.short, rng)
    if cfg.fps is not None:
        return _sample_rate(ts, end, want, float(cfg.fps), cfg.clip, cfg.short, rng)
    return _sample_spread(ts, end, want, cfg.clip, cfg.short, rng)


def _sample_spread(ts, end, want, clip, short, rng) -> np.ndarray:
    n = len(ts)
    if want is None:
        return np.arange(n, dtype=np.int64)
    t = want if short == "repeat" else min(want, n)
    seg = end / t
    if clip == "random":
        if rng is None:
            raise ValueError('clip="random" needs an rng')
        u = rng.uniform(0.0, 1.0, size=t)
        # a random frame among those starting inside each segment (distinct when t <= n
        # at constant rate); a segment where no frame starts takes the frame on screen
        bounds = np.searchsorted(ts, np.arange(t + 1) * seg - _EPS, side="left")
        first, count = bounds[:-1], np.diff(bounds)
        shown = _frame_at(ts, (np.arange(t) + u) * seg)
        return np.where(count > 0, first + np.floor(u * count).astype(np.int64), shown).astype(np.int64)
    elif clip == "start":
        times = np.arange(t) * seg
    else:
        times = (np.arange(t) + 0.5) * seg
    idx = _frame_at(ts, times)
    if short == "fewer" and t == n:
        # constant rate gives every frame once; keep that true under float error too
        idx = np.maximum.accumulate(idx)
    return idx


def _sample_rate(ts, end, want, rate, clip, short, rng) -> np.ndarray:
    dt = 1.0 / rate
    fit = max(1, int(np.ceil(end / dt - _EPS)))  # sample times k*dt inside [0, end)
    if want is None:
        times = np.arange(fit) * dt
        return _frame_at(ts, times)
    if want > fit:
        t = want if short == "repeat" else fit
        times = np.arange(t) * dt  # past the end: _frame_at clamps to the last frame
        return _frame_at(ts, np.minimum(times, ts[-1]))
    span = (want - 1) * dt
    # first time in [0, end - span), so the last time stays inside the clip
    t0 = _start(0.0, max(0.0, end - span - 10 * _EPS), clip, rng)
    times = t0 + np.arange(want) * dt
    return _frame_at(ts, times)


def _sample_stride(n, want, stride, clip, short, rng) -> np.ndarray:
    if stride < 1:
        raise ValueError("stride must be >= 1")
    fit = (n - 1) // stride + 1
    if want is None:
        return np.arange(0, n, stride, dtype=np.int64)
    if want > fit:
        t = want if short == "repeat" else fit
        return np.minimum(np.arange(t, dtype=np.int64) * stride, n - 1)
    span = (want - 1) * stride + 1
    slack = n - span
    if clip == "start" or slack == 0:
        i0 = 0
    elif clip == "centre":
        i0 = slack // 2
    else:
        if rng is None:
            raise ValueError('clip="random" needs an rng')
        i0 = int(rng.integers(0, slack + 1))
    return i0 + np.arange(want, dtype=np.int64) * stride


def thin_indices(indices: np.ndarray, count: int) -> np.ndarray:
    """Keep ``count`` of ``indices`` spread evenly (segment centres), so the clip's coverage is kept."""
    indices = np.asarray(indices, dtype=np.int64)
    m = len(indices)
    if count >= m:
        return indices.copy()
    if count < 1:
        raise ValueError("count must be >= 1")
    pick = np.floor((np.arange(count) + 0.5) * m / count).astype(np.int64)
    return indices[np.minimum(pick, m - 1)]


def pad_indices(indices: np.ndarray, count: int) -> np.ndarray:
    """Extend ``indices`` to ``count`` by repeating the last one (used to reach a tubelet multiple)."""
    indices = np.asarray(indices, dtype=np.int64)
    if count <= len(indices):
        return indices[:count].copy()
    if len(indices) == 0:
        raise ValueError("cannot pad an empty index list")
    return np.concatenate([indices, np.full(count - len(indices), indices[-1], np.int64)])

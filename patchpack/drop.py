"""Per-example continuous token dropping (NaViT §2.2, §3.3, A.4, A.5; arXiv 2307.06304).

A drop *rate* ``d`` is drawn per example, then that many tokens are removed at random
(positions of kept tokens are preserved, so the model still sees where each token came
from). The number kept depends only on the token count and the rate, so the packer can
decide before pixels exist: :func:`keep_count`.

Kinds (``DropConfig.kind``):

* ``"none"``: keep everything.
* ``"constant"``: ``d = rate`` for every example.
* ``"beta"`` (A.4, "Sampling with a beta distribution"): ``d = u * d_max`` with
  ``u ~ Beta(α, β)`` of mean ``u_µ = d_µ / d_max`` and variance ``v``:
  ``α = u_µ k``, ``β = (1 - u_µ) k``, ``k = u_µ (1 - u_µ) / v - 1``. ``d_max`` is
  ``rate_max``, ``d_µ`` is ``beta_mean`` (default ``d_max / 2``) and ``v`` is
  ``beta_var`` (default the paper's ``0.3 u_µ (1 - u_µ)``).
* ``"resolution"`` (A.4, "Sampling resolution-dependent dropping rates"): the mean is
  linear in the example's token count ``n``, ``µ = res_slope * n + res_intercept``
  (the paper's ``µ = d_min`` at ``s_min`` and ``d_max`` at ``s_max``: ``res_slope =
  (d_max - d_min) / (s_max - s_min)``), clipped to ``[0, rate_max]``; then
  ``d ~ N(µ, res_std²)`` truncated to ``[µ - 2 res_std, µ + 2 res_std] ∩ [0, rate_max]``
  (the paper rejects draws more than two standard deviations from ``µ``; std 0.02).
  A real truncated normal (:func:`~patchpack.fit.image.truncated_normal`): no example
  gets exactly ``0`` or ``rate_max``; larger images lose more tokens.
* ``"custom"``: ``d = rate_fn(height, width, tokens, rng)``, a user's function of the
  example's fitted size in pixels (per frame for videos), its token count before
  dropping and its generator (draw from ``rng`` only, so runs stay seeded). Like
  the ``token_dropout_prob(height, width)`` callable of lucidrains' ``vit_pytorch/na_vit.py``. It must be
  picklable (a module-level function, or a ``functools.partial`` of one): worker
  processes receive the config by pickle. Its result must lie in ``[0, 1)``.

``schedule`` multiplies the drawn rate by a factor over training progress
``s ∈ [0, 1]`` going from ``rho_max`` (start) to ``rho_min`` (end): ``"sigmoid"`` (A.5,
eq. 1: ``ρ(n) = ρ_min + (ρ_max - ρ_min) σ((n - µ) / τ)`` over images seen ``n``, here with
``n / N = s``, ``µ = N / 2`` and ``τ = -N / sigmoid_sharpness``: decreasing),
``"linear"``, ``"cosine"``, ``"step"`` (at ``s = 0.5``) or ``"none"``. The paper's decreasing
schedule from 0.8 to 0.2 is ``kind="constant", rate=0.8, rho_max=1, rho_min=0.25``.
Progress comes from where an example sits in the run: :func:`schedule_progress` of its
epoch and its position within the epoch, over ``schedule_epochs``. Dropping always keeps
at least one token and is off at evaluation (``training=False``).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .fit.image import truncated_normal

__all__ = [
    "DropConfig", "RateFn", "drop_rate", "keep_count", "drop_tokens", "schedule_factor", "schedule_progress",
    "KINDS", "SCHEDULES", "RES_TRUNCATION",
]

KINDS = ("none", "constant", "beta", "resolution", "custom")
SCHEDULES = ("none", "sigmoid", "linear", "cosine", "step")
#: ``"resolution"`` draws lie within this many ``res_std`` of their mean (A.4)
RES_TRUNCATION = 2.0
#: the paper's default Beta variance, as a share of the largest one ``u_µ (1 - u_µ)`` (A.4)
BETA_VAR_SHARE = 0.3

#: ``rate_fn(height, width, tokens, rng) -> rate`` of ``kind="custom"``
RateFn = Callable[[int, int, int, np.random.Generator], float]


@dataclass(frozen=True)
class DropConfig:
    """Token-drop policy (rates are fractions of an example's tokens, in ``[0, 1)``).

    Attributes:
        kind: one of :data:`KINDS` (formulas in the module doc).
        rate: constant rate (``kind="constant"``).
        rate_max: ``d_max``, upper bound of a drawn rate (``beta``, ``resolution``).
        beta_mean: ``d_µ``, mean drop rate of ``beta`` (``None``: ``rate_max / 2``).
        beta_var: variance of ``u = d / rate_max`` (``None``: ``0.3 u_µ (1 - u_µ)``, A.4).
        res_slope, res_intercept, res_std: ``resolution``: mean ``slope * tokens +
            intercept`` and the std of the normal around it (0.02 in A.4).
        rate_fn: ``kind="custom"``'s ``rate_fn(height, width, tokens, rng) -> rate``;
            picklable (module-level function or ``functools.partial`` of one).
        schedule: one of :data:`SCHEDULES`, a multiplier over training progress.
        rho_max, rho_min: schedule multiplier at the start and the end.
        sigmoid_sharpness: steepness of the sigmoid schedule.
        schedule_epochs: the run's length in epochs (may be fractional); progress is
            ``(epoch + fraction of the epoch) / schedule_epochs`` (:func:`schedule_progress`).
            Required by any ``schedule`` other than ``"none"``.
    """

    kind: str = "none"
    rate: float = 0.0
    rate_max: float = 0.5
    beta_mean: float | None = None
    beta_var: float | None = None
    res_slope: float = 1.0 / 1024
    res_intercept: float = 0.0
    res_std: float = 0.02
    rate_fn: RateFn | None = None
    schedule: str = "none"
    rho_max: float = 1.0
    rho_min: float = 0.0
    sigmoid_sharpness: float = 10.0
    schedule_epochs: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown drop kind {self.kind!r}; expected one of {KINDS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown drop schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if not 0.0 <= self.rate < 1.0 or not 0.0 <= self.rate_max < 1.0:
            raise ValueError("drop rates must lie in [0, 1)")
        if self.kind == "beta":
            self._check_beta()
        if self.res_std < 0:
            raise ValueError(f"res_std must be >= 0, got {self.res_std}")
        self._check_rate_fn()
        if self.schedule_epochs is not None and not self.schedule_epochs > 0:
            raise ValueError(f"schedule_epochs must be > 0, got {self.schedule_epochs}")
        if self.schedule != "none" and self.schedule_epochs is None:
            raise ValueError(f"drop schedule {self.schedule!r} needs schedule_epochs (the run's length in epochs)")

    def _check_beta(self) -> None:
        if self.rate_max <= 0:
            raise ValueError("beta drop needs rate_max > 0")
        m = self.beta_u_mean
        if not 0 < m < 1:
            raise ValueError(f"beta drop needs 0 < beta_mean < rate_max, got beta_mean={self.beta_mean}, "
                             f"rate_max={self.rate_max}")
        if self.beta_var is not None and not 0 < self.beta_var < m * (1 - m):
            raise ValueError(f"beta drop needs 0 < beta_var < u_mean*(1-u_mean) = {m * (1 - m):.4g} "
                             f"(u_mean = beta_mean / rate_max), got {self.beta_var}")

    def _check_rate_fn(self) -> None:
        if (self.kind == "custom") != (self.rate_fn is not None):
            raise ValueError("kind='custom' and rate_fn go together: pass both, or neither")
        if self.rate_fn is None:
            return
        if not callable(self.rate_fn):
            raise TypeError(f"rate_fn must be callable, got {type(self.rate_fn).__name__}")
        try:
            pickle.dumps(self.rate_fn)
        except Exception as exc:
            raise ValueError(f"rate_fn must be picklable for worker processes (a module-level function or a "
                             f"functools.partial of one, not a lambda or nested function): {exc}") from None

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def beta_u_mean(self) -> float:
        """``u_µ = d_µ / d_max``, the mean of the Beta-distributed ``u``."""
        mean = self.rate_max / 2 if self.beta_mean is None else self.beta_mean
        return mean / self.rate_max if self.rate_max > 0 else 0.0


def schedule_progress(epoch: int, fraction: float, schedule_epochs: float | None) -> float:
    """Training progress in ``[0, 1]`` of an example at ``fraction`` of epoch ``epoch``.

    ``(epoch + fraction) / schedule_epochs`` clipped to ``[0, 1]``; ``schedule_epochs=None``
    (no run length): ``0.0``, the schedule's start. ``epoch`` counts from 0 and
    ``fraction ∈ [0, 1]`` is where the example sits within its epoch.
    """
    if schedule_epochs is None:
        return 0.0
    if not schedule_epochs > 0:
        raise ValueError(f"schedule_epochs must be > 0, got {schedule_epochs}")
    s = (int(epoch) + float(fraction)) / float(schedule_epochs)
    return min(max(s, 0.0), 1.0) if s == s else 0.0


def schedule_factor(cfg: DropConfig, progress: float) -> float:
    """Multiplier of the drop rate at training progress ``progress in [0, 1]``."""
    s = min(max(float(progress), 0.0), 1.0)
    hi, lo = cfg.rho_max, cfg.rho_min
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "linear":
        w = 1.0 - s
    elif cfg.schedule == "cosine":
        w = 0.5 * (1.0 + math.cos(math.pi * s))
    elif cfg.schedule == "step":
        w = 1.0 if s < 0.5 else 0.0
    else:  # sigmoid centred mid-training, decreasing
        w = 1.0 / (1.0 + math.exp(cfg.sigmoid_sharpness * (s - 0.5)))
    return lo + (hi - lo) * w


def _resolution_rate(cfg: DropConfig, num_tokens: int, rng: np.random.Generator) -> float:
    """A.4's resolution-dependent draw (module doc): a truncated normal around a mean linear in tokens."""
    mean = min(max(cfg.res_slope * num_tokens + cfg.res_intercept, 0.0), cfg.rate_max)
    half = RES_TRUNCATION * cfg.res_std
    return truncated_normal(rng, mean, cfg.res_std, max(0.0, mean - half), min(cfg.rate_max, mean + half))


def _custom_rate(cfg: DropConfig, num_tokens: int, rng: np.random.Generator, height: int | None,
                 width: int | None) -> float:
    if height is None or width is None:
        raise ValueError("drop kind 'custom' needs the example's height and width (drop_rate(..., height=, width=))")
    r = float(cfg.rate_fn(int(height), int(width), int(num_tokens), rng))
    if not 0.0 <= r < 1.0:
        raise ValueError(f"rate_fn returned {r} for a {height}x{width} example ({num_tokens} tokens); "
                         "rates must lie in [0, 1)")
    return r


def drop_rate(
    cfg: DropConfig, num_tokens: int, rng: np.random.Generator, progress: float = 0.0, training: bool = True,
    *, height: int | None = None, width: int | None = None,
) -> float:
    """Draw one example's drop rate in ``[0, 1)``.

    ``height``, ``width``: the example's fitted size in pixels (per frame for videos), needed
    by ``kind="custom"`` only. ``progress``: :func:`schedule_progress` of the example.
    """
    if not training or cfg.kind == "none":
        return 0.0
    if cfg.kind == "constant":
        r = cfg.rate
    elif cfg.kind == "beta":
        m = cfg.beta_u_mean
        v = cfg.beta_var if cfg.beta_var is not None else BETA_VAR_SHARE * m * (1 - m)
        k = m * (1 - m) / v - 1
        r = float(rng.beta(m * k, (1 - m) * k)) * cfg.rate_max
    elif cfg.kind == "resolution":
        r = _resolution_rate(cfg, num_tokens, rng)
    else:
        r = _custom_rate(cfg, num_tokens, rng, height, width)
    return float(min(max(r * schedule_factor(cfg, progress), 0.0), 0.999))


def keep_count(num_tokens: int, rate: float) -> int:
    """Tokens kept out of ``num_tokens`` at drop rate ``rate`` (at least one)."""
    return max(1, min(num_tokens, int(round(num_tokens * (1.0 - rate)))))


def drop_tokens(num_tokens: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted, int64) of the ``keep`` tokens kept out of ``num_tokens``, uniformly at random."""
    if keep >= num_tokens:
        return np.arange(num_tokens)
    return np.sort(rng.choice(num_tokens, size=keep, replace=False))

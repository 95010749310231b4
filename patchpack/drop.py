"""Per-example continuous token dropping (NaViT §3.3, A.4, A.5).

A drop *rate* is drawn per example, then that many tokens are removed at random
(positions of kept tokens are preserved, so the model still sees where each
token came from). The number kept depends only on the token count and the rate,
so the packer can decide before pixels exist: :func:`keep_count`.

Kinds (``DropConfig.kind``):

* ``"none"``: keep everything.
* ``"constant"``: rate ``rate`` for every example.
* ``"beta"``: ``rate = u * rate_max`` with ``u ~ Beta(a, b)`` parameterised by its
  mean ``beta_mean`` and variance ``beta_var`` (``a = m*k``, ``b = (1-m)*k``,
  ``k = m(1-m)/v - 1``).
* ``"resolution"``: a normal around a mean linear in the token count
  (``res_slope * n + res_intercept``), std ``res_std``, truncated to
  ``[0, rate_max]``: larger images lose more tokens.

``schedule`` scales the drawn rate over training progress ``s in [0, 1]``
between ``rho_max`` (start) and ``rho_min`` (end): ``"sigmoid"`` (NaViT A.5),
``"linear"``, ``"cosine"``, ``"step"`` (at ``s = 0.5``), or ``"none"``. Dropping
always keeps at least one token and is off at evaluation (``training=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DropConfig", "drop_rate", "keep_count", "drop_tokens", "schedule_factor", "KINDS", "SCHEDULES"]

KINDS = ("none", "constant", "beta", "resolution")
SCHEDULES = ("none", "sigmoid", "linear", "cosine", "step")


@dataclass(frozen=True)
class DropConfig:
    """Token-drop policy (rates are fractions of an example's tokens, in ``[0, 1)``).

    Attributes:
        kind: one of :data:`KINDS`.
        rate: constant rate (``kind="constant"``).
        rate_max: upper bound of a drawn rate (``beta``, ``resolution``).
        beta_mean, beta_var: mean and variance of ``u ~ Beta`` (``beta``).
        res_slope, res_intercept, res_std: resolution-dependent mean
            ``slope * tokens + intercept`` and its std (``resolution``).
        schedule: one of :data:`SCHEDULES`, a multiplier over training progress.
        rho_max, rho_min: schedule multiplier at the start and the end.
        sigmoid_sharpness: steepness of the sigmoid schedule.
    """

    kind: str = "none"
    rate: float = 0.0
    rate_max: float = 0.5
    beta_mean: float = 0.5
    beta_var: float = 0.05
    res_slope: float = 1.0 / 1024
    res_intercept: float = 0.0
    res_std: float = 0.05
    schedule: str = "none"
    rho_max: float = 1.0
    rho_min: float = 0.0
    sigmoid_sharpness: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown drop kind {self.kind!r}; expected one of {KINDS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown drop schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if not 0.0 <= self.rate < 1.0 or not 0.0 <= self.rate_max < 1.0:
            raise ValueError("drop rates must lie in [0, 1)")
        if self.kind == "beta":
            m, v = self.beta_mean, self.beta_var
            if not 0 < m < 1 or not 0 < v < m * (1 - m):
                raise ValueError("beta drop needs 0 < beta_mean < 1 and 0 < beta_var < mean*(1-mean)")

    @property
    def active(self) -> bool:
        return self.kind != "none"


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


def drop_rate(
    cfg: DropConfig, num_tokens: int, rng: np.random.Generator, progress: float = 0.0, training: bool = True
) -> float:
    """Draw one example's drop rate in ``[0, 1)``."""
    if not training or cfg.kind == "none":
        return 0.0
    if cfg.kind == "constant":
        r = cfg.rate
    elif cfg.kind == "beta":
        m, v = cfg.beta_mean, cfg.beta_var
        k = m * (1 - m) / v - 1
        r = float(rng.beta(m * k, (1 - m) * k)) * cfg.rate_max
    else:
        mean = cfg.res_slope * num_tokens + cfg.res_intercept
        r = float(np.clip(rng.normal(mean, cfg.res_std), 0.0, cfg.rate_max))
    return float(min(max(r * schedule_factor(cfg, progress), 0.0), 0.999))


def keep_count(num_tokens: int, rate: float) -> int:
    """Tokens kept out of ``num_tokens`` at drop rate ``rate`` (at least one)."""
    return max(1, min(num_tokens, int(round(num_tokens * (1.0 - rate)))))


def drop_tokens(num_tokens: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted, int64) of the ``keep`` tokens kept out of ``num_tokens``, uniformly at random."""
    if keep >= num_tokens:
        return np.arange(num_tokens)
    return np.sort(rng.choice(num_tokens, size=keep, replace=False))

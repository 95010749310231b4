import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.drop import (
    KINDS, SCHEDULES, DropConfig, drop_rate, drop_tokens, keep_count, schedule_factor, schedule_progress,
)


def fixed_rate(height, width, tokens, rng):
    return 0.9


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), kind=st.sampled_from(KINDS), sched=st.sampled_from(SCHEDULES),
       progress=st.floats(0, 1), seed=st.integers(0, 1000))
def test_keeps_at_least_one_token_and_positions(n, kind, sched, progress, seed):
    cfg = DropConfig(kind=kind, rate=0.9, rate_max=0.9, schedule=sched, schedule_epochs=1.0,
                     rate_fn=fixed_rate if kind == "custom" else None)
    rng = np.random.default_rng(seed)
    r = drop_rate(cfg, n, rng, progress, height=16, width=16 * n)
    assert 0.0 <= r < 1.0
    k = keep_count(n, r)
    assert 1 <= k <= n
    idx = drop_tokens(n, k, rng)
    assert len(idx) == k and len(np.unique(idx)) == k and np.all(np.diff(idx) > 0)
    assert idx.min() >= 0 and idx.max() < n


def test_off_at_eval_and_for_none():
    rng = np.random.default_rng(0)
    assert drop_rate(DropConfig(kind="constant", rate=0.5), 100, rng, training=False) == 0.0
    assert drop_rate(DropConfig(), 100, rng) == 0.0
    assert drop_rate(DropConfig(kind="constant", rate=0.5), 100, rng) == 0.5


def test_beta_matches_mean_and_variance():
    """A.4: d = u * d_max, u ~ Beta with mean d_mean / d_max and the given variance of u."""
    cfg = DropConfig(kind="beta", rate_max=0.8, beta_mean=0.4, beta_var=0.02)
    rng = np.random.default_rng(0)
    d = np.array([drop_rate(cfg, 100, rng) for _ in range(20000)])
    assert abs(d.mean() - 0.4) < 0.01 and abs((d / 0.8).var() - 0.02) < 0.003
    assert d.max() < 0.8


def test_beta_defaults_are_the_papers():
    """Mean d_max / 2 and variance 0.3 * u_mean * (1 - u_mean) of u (A.4)."""
    cfg = DropConfig(kind="beta", rate_max=0.6)
    rng = np.random.default_rng(1)
    u = np.array([drop_rate(cfg, 100, rng) for _ in range(20000)]) / 0.6
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 0.3 * 0.25) < 0.005
    cfg = DropConfig(kind="beta", rate_max=0.5, beta_mean=0.1)
    u = np.array([drop_rate(cfg, 100, rng) for _ in range(20000)]) / 0.5
    assert abs(u.mean() - 0.2) < 0.01 and abs(u.var() - 0.3 * 0.2 * 0.8) < 0.005


def test_resolution_dependent_rate_grows_with_tokens():
    cfg = DropConfig(kind="resolution", rate_max=0.9, res_slope=1 / 1000, res_std=0.01)
    rng = np.random.default_rng(0)
    small = np.mean([drop_rate(cfg, 100, rng) for _ in range(500)])
    large = np.mean([drop_rate(cfg, 600, rng) for _ in range(500)])
    assert abs(small - 0.1) < 0.01 and abs(large - 0.6) < 0.01


def test_resolution_dependent_rate_is_a_truncated_normal_not_a_clipped_one():
    """Defaults (std 0.02, mean n/1024, bounds [0, 0.5]): no draw lands on a bound.

    A clipped normal gave exactly 0 to ~38% of 16-token examples (std 0.05) and exactly
    rate_max to nearly all large ones.
    """
    cfg = DropConfig(kind="resolution")
    rng = np.random.default_rng(0)
    tiny = np.array([drop_rate(cfg, 16, rng) for _ in range(5000)])
    huge = np.array([drop_rate(cfg, 4096, rng) for _ in range(5000)])
    assert np.all(tiny > 0) and np.all(huge < cfg.rate_max)
    assert tiny.max() <= 16 / 1024 + 2 * 0.02 and huge.min() >= 0.5 - 2 * 0.02  # A.4: within 2 std of the mean


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4000), slope=st.floats(0, 1e-3), intercept=st.floats(-0.2, 0.5),
       std=st.floats(0.005, 0.1), rate_max=st.floats(0.05, 0.95))
def test_resolution_dependent_rate_law(n, slope, intercept, std, rate_max):
    """d ~ N(mu, std²) truncated to [mu - 2 std, mu + 2 std] ∩ [0, rate_max], mu = slope * n + intercept clipped."""
    cfg = DropConfig(kind="resolution", rate_max=rate_max, res_slope=slope, res_intercept=intercept, res_std=std)
    mu = min(max(slope * n + intercept, 0.0), rate_max)
    lo, hi = max(0.0, mu - 2 * std), min(rate_max, mu + 2 * std)
    rng = np.random.default_rng(n)
    d = np.sort([drop_rate(cfg, n, rng) for _ in range(2000)])
    assert lo < d[0] and d[-1] < hi
    phi = lambda x: 0.5 * (1 + math.erf((x - mu) / (std * math.sqrt(2))))  # noqa: E731
    cdf = np.array([(phi(x) - phi(lo)) / (phi(hi) - phi(lo)) for x in d])
    k = np.arange(1, len(d) + 1) / len(d)
    assert max(np.max(k - cdf), np.max(cdf - (k - 1 / len(d)))) < 0.05  # KS distance, 2000 draws


def test_schedules_go_from_rho_max_to_rho_min():
    for s in ("sigmoid", "linear", "cosine", "step"):
        cfg = DropConfig(kind="constant", rate=0.5, schedule=s, rho_max=1.0, rho_min=0.2, schedule_epochs=10)
        start, mid, end = (schedule_factor(cfg, p) for p in (0.0, 0.5, 1.0))
        assert start == pytest.approx(1.0, abs=0.01) and end == pytest.approx(0.2, abs=0.01)
        assert end <= mid <= start
    assert schedule_factor(DropConfig(schedule="none"), 0.7) == 1.0


def test_seeded():
    cfg = DropConfig(kind="beta")
    a = [drop_rate(cfg, 50, np.random.default_rng(3)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_validation():
    for bad in [dict(kind="x"), dict(schedule="x"), dict(rate=1.0), dict(kind="beta", beta_var=0.5),
                dict(kind="beta", rate_max=0.4, beta_mean=0.4), dict(kind="beta", rate_max=0.0),
                dict(res_std=-0.1), dict(schedule="linear"), dict(schedule_epochs=0),
                dict(kind="custom"), dict(kind="constant", rate_fn=fixed_rate)]:
        with pytest.raises(ValueError):
            DropConfig(**bad)


def test_papers_decreasing_schedule_from_0_8_to_0_2():
    """A.5 runs rho from 0.8 down to 0.2: a constant 0.8 scaled from 1 to 0.25."""
    cfg = DropConfig(kind="constant", rate=0.8, schedule="sigmoid", rho_max=1.0, rho_min=0.25, schedule_epochs=4)
    rng = np.random.default_rng(0)
    start, end = (drop_rate(cfg, 100, rng, schedule_progress(e, 0.0, 4)) for e in (0, 4))
    assert start == pytest.approx(0.8, abs=0.01) and end == pytest.approx(0.2, abs=0.01)


@settings(max_examples=300, deadline=None)
@given(epoch=st.integers(0, 1000), fraction=st.floats(0, 1), epochs=st.floats(0.01, 500))
def test_schedule_progress_is_the_run_fraction(epoch, fraction, epochs):
    s = schedule_progress(epoch, fraction, epochs)
    assert s == pytest.approx(min(1.0, (epoch + fraction) / epochs))
    assert 0.0 <= s <= 1.0
    later = schedule_progress(epoch + 1, fraction, epochs)
    assert later >= s  # never goes back as the run goes on


def test_schedule_progress_edges():
    assert schedule_progress(0, 0.0, 10) == 0.0
    assert schedule_progress(4, 0.5, 10) == 0.45
    assert schedule_progress(12, 0.0, 10) == 1.0  # past the run's end: clipped
    assert schedule_progress(3, 0.5, 2.5) == 1.0
    assert schedule_progress(7, 0.3, None) == 0.0  # no run length: the schedule's start
    with pytest.raises(ValueError):
        schedule_progress(0, 0.5, 0)

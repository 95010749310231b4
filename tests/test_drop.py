import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.drop import KINDS, SCHEDULES, DropConfig, drop_rate, drop_tokens, keep_count, schedule_factor


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), kind=st.sampled_from(KINDS), sched=st.sampled_from(SCHEDULES),
       progress=st.floats(0, 1), seed=st.integers(0, 1000))
def test_keeps_at_least_one_token_and_positions(n, kind, sched, progress, seed):
    cfg = DropConfig(kind=kind, rate=0.9, rate_max=0.9, schedule=sched)
    rng = np.random.default_rng(seed)
    r = drop_rate(cfg, n, rng, progress)
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
    cfg = DropConfig(kind="beta", rate_max=0.8, beta_mean=0.4, beta_var=0.02)
    rng = np.random.default_rng(0)
    u = np.array([drop_rate(cfg, 100, rng) for _ in range(20000)]) / 0.8
    assert abs(u.mean() - 0.4) < 0.01 and abs(u.var() - 0.02) < 0.003


def test_resolution_dependent_rate_grows_with_tokens():
    cfg = DropConfig(kind="resolution", rate_max=0.9, res_slope=1 / 1000, res_std=0.01)
    rng = np.random.default_rng(0)
    small = np.mean([drop_rate(cfg, 100, rng) for _ in range(500)])
    large = np.mean([drop_rate(cfg, 600, rng) for _ in range(500)])
    assert abs(small - 0.1) < 0.01 and abs(large - 0.6) < 0.01


def test_schedules_go_from_rho_max_to_rho_min():
    for s in ("sigmoid", "linear", "cosine", "step"):
        cfg = DropConfig(kind="constant", rate=0.5, schedule=s, rho_max=1.0, rho_min=0.2)
        start, mid, end = (schedule_factor(cfg, p) for p in (0.0, 0.5, 1.0))
        assert start == pytest.approx(1.0, abs=0.01) and end == pytest.approx(0.2, abs=0.01)
        assert end <= mid <= start
    assert schedule_factor(DropConfig(schedule="none"), 0.7) == 1.0


def test_seeded():
    cfg = DropConfig(kind="beta")
    a = [drop_rate(cfg, 50, np.random.default_rng(3)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_validation():
    for bad in [dict(kind="x"), dict(schedule="x"), dict(rate=1.0), dict(kind="beta", beta_var=0.5)]:
        with pytest.raises(ValueError):
            DropConfig(**bad)

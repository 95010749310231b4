"""The ``kind="custom"`` hook: ``rate_fn(height, width, tokens, rng) -> rate``."""

import functools
import pickle

import numpy as np
import pytest

from patchpack.drop import DropConfig, drop_rate, keep_count, schedule_progress

CALLS: list = []


def by_area(height, width, tokens, rng, per_pixel=1e-6):
    """More pixels, more dropping (a resolution-dependent rate of the user's own)."""
    CALLS.append((height, width, tokens))
    return min(0.9, height * width * per_pixel) * float(rng.uniform(0.5, 1.0))


def out_of_range(height, width, tokens, rng):
    return 1.5


def test_rate_fn_sees_the_example_and_draws_from_its_generator():
    CALLS.clear()
    cfg = DropConfig(kind="custom", rate_fn=by_area)
    a = drop_rate(cfg, 300, np.random.default_rng(4), height=240, width=320)
    b = drop_rate(cfg, 300, np.random.default_rng(4), height=240, width=320)
    assert CALLS == [(240, 320, 300)] * 2
    assert a == b and 0.5 * 0.0768 <= a <= 0.0768  # seeded through the example's generator
    assert drop_rate(cfg, 300, np.random.default_rng(4), training=False, height=240, width=320) == 0.0
    assert keep_count(300, a) < 300


def test_rate_fn_is_scaled_by_the_schedule():
    cfg = DropConfig(kind="custom", rate_fn=functools.partial(by_area, per_pixel=1e-5), schedule="linear",
                     rho_max=1.0, rho_min=0.5, schedule_epochs=2)
    start = drop_rate(cfg, 64, np.random.default_rng(0), schedule_progress(0, 0.0, 2), height=128, width=128)
    end = drop_rate(cfg, 64, np.random.default_rng(0), schedule_progress(2, 0.0, 2), height=128, width=128)
    assert end == pytest.approx(start / 2)


def test_rate_fn_config_pickles_for_worker_processes():
    cfg = DropConfig(kind="custom", rate_fn=functools.partial(by_area, per_pixel=2e-6))
    back = pickle.loads(pickle.dumps(cfg))
    rng = np.random.default_rng
    assert drop_rate(back, 10, rng(1), height=100, width=100) == drop_rate(cfg, 10, rng(1), height=100, width=100)


def test_rate_fn_mistakes_are_one_line_errors():
    with pytest.raises(ValueError, match="picklable"):
        DropConfig(kind="custom", rate_fn=lambda h, w, n, rng: 0.1)

    def nested(h, w, n, rng):
        return 0.1

    with pytest.raises(ValueError, match="picklable"):
        DropConfig(kind="custom", rate_fn=nested)
    with pytest.raises(TypeError, match="callable"):
        DropConfig(kind="custom", rate_fn=0.3)
    with pytest.raises(ValueError, match="custom"):
        DropConfig(kind="beta", rate_fn=by_area)
    with pytest.raises(ValueError, match="height and width"):
        drop_rate(DropConfig(kind="custom", rate_fn=by_area), 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_rate(DropConfig(kind="custom", rate_fn=out_of_range), 10, np.random.default_rng(0), height=8, width=8)

import json

import numpy as np
import pytest

from patchpack.cli import main
from patchpack.drop import DropConfig, drop_rate, keep_count
from patchpack.fit.image import FitConfig, fit_grid
from patchpack.pack.simulate import SimConfig, simulate, simulated_examples, stream_progress, synthetic_sources


def test_synthetic_sizes_fit_the_sequence_and_are_mostly_non_square():
    g, _ = simulated_examples(SimConfig(examples=5000, seq_len=256, patch_size=16, seed=0))
    tokens = g[:, 0] * g[:, 1]
    assert tokens.min() >= 1 and tokens.max() <= 256
    assert 0.75 < (g[:, 0] != g[:, 1]).mean() < 0.95


def test_simulate_bfd_beats_next_fit():
    bfd = simulate(SimConfig(examples=4000, seq_len=256))
    nf = simulate(SimConfig(examples=4000, seq_len=256, algorithm="next-fit"))
    assert bfd["padding_fraction"] < 0.02 < 0.1 < nf["padding_fraction"]
    assert bfd["examples"] == 4000 and bfd["max_wait"] <= 2 * 1024


def test_cli_json(capsys):
    assert main(["simulate", "--seq-len", "128", "--examples", "2000", "--packer", "first-fit",
                 "--max-per-seq", "3", "--drop-kind", "beta", "--max-patches", "128", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for k in ("padding_fraction", "examples", "sequences", "examples_per_sequence", "max_wait"):
        assert k in d
    assert 0 <= d["padding_fraction"] <= 1 and d["examples"] == 2000
    assert d["examples_per_sequence"] <= 3 and d["drop_fraction"] > 0.1


def test_cli_text(capsys):
    assert main(["simulate", "--seq-len", "256", "--examples", "1000"]) == 0
    out = capsys.readouterr().out
    assert "padding" in out and "offline packing" in out


def test_the_simulation_draws_as_the_loader_does():
    """Each example: the loader's fit_grid, then its drop_rate and keep_count, one generator, fit first."""
    fit = FitConfig(patch_size=16, max_patches=256, mode="side-truncnorm", allow_upsample=True)
    drop = DropConfig(kind="resolution", rate_max=0.6, schedule="linear", schedule_epochs=3)
    cfg = SimConfig(examples=300, seq_len=256, fit=fit, drop=drop, seed=5)
    grids, kept = simulated_examples(cfg)
    sources = synthetic_sources(300, 256, 16, seed=5)
    rng = np.random.default_rng([5, 1])
    for i, (h, w) in enumerate(sources.tolist()):
        gh, gw = fit_grid(h, w, fit, rng)
        n = gh * gw
        assert (gh, gw) == tuple(grids[i])
        assert kept[i] == keep_count(n, drop_rate(drop, n, rng, stream_progress(i, 300, 3), height=gh * 16,
                                                  width=gw * 16))


@pytest.mark.parametrize("mode", ["side-uniform", "side-truncnorm", "area-uniform", "area-truncnorm"])
def test_sampled_fit_modes_shape_the_stream(mode):
    native, _ = simulated_examples(SimConfig(examples=3000, seq_len=256))
    fit = FitConfig(patch_size=16, max_patches=256, mode=mode, allow_upsample=True)
    sampled, _ = simulated_examples(SimConfig(examples=3000, seq_len=256, fit=fit))
    side = np.sqrt(sampled[:, 0] * sampled[:, 1]) * 16
    assert 56 <= side.min() and side.max() <= 264  # R in [64, 256] px, up to rounding to patches
    if mode == "side-uniform":
        assert abs(np.median(side) - 160) < 10
    elif mode == "area-uniform":
        assert abs(np.median(side) - np.sqrt((64**2 + 256**2) / 2)) < 10
    assert not np.array_equal(native, sampled)


def test_the_drop_schedule_runs_over_the_stream():
    drop = DropConfig(kind="constant", rate=0.5, schedule="linear", rho_max=1.0, rho_min=0.0, schedule_epochs=2)
    grids, kept = simulated_examples(SimConfig(examples=2000, seq_len=256, drop=drop))
    frac = 1 - kept / (grids[:, 0] * grids[:, 1])
    assert frac[:100].mean() > 0.45 and frac[-100:].mean() < 0.05  # dropping fades out along the run
    assert stream_progress(0, 2000, 2) == 0.0 and stream_progress(1000, 2000, 2) == 0.5
    assert stream_progress(1999, 2000, None) == 0.0


def test_sim_config_mistakes():
    with pytest.raises(ValueError, match="patch_size"):
        SimConfig(fit=FitConfig(patch_size=14), seq_len=256)
    with pytest.raises(ValueError, match="seq_len"):
        SimConfig(seq_len=128, fit=FitConfig(max_patches=256))

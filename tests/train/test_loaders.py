"""Training loaders: one home for the defaults (LoaderConfig), no silent seq_len raise, the drop schedule's
length derived from the step budget, evaluation configs per budget."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest

from tiny_runs import captioned, loader_config

from patchpack.config import ConfigWarning, LoaderConfig
from patchpack.train import eval_config, make_loaders
from patchpack.train.loaders import HELDOUT, schedule_epochs


def test_defaults_are_the_loader_configs(tmp_path):
    info = captioned(tmp_path / "d", n_images=6)
    loader, evals = make_loaders(info["urls"], eval_urls=info["urls"])
    default = LoaderConfig()
    assert loader.config == replace(default, training=True)
    assert loader.config.pack.seq_len == 1024 and loader.config.fit.max_patches == 256  # not 256 / 64 of old
    assert list(evals) == [HELDOUT] and evals[HELDOUT].config.training is False


def test_seq_len_below_the_budget_is_not_raised_in_silence(tmp_path):
    info = captioned(tmp_path / "d", n_images=4)
    with pytest.warns(ConfigWarning, match="seq_len=8 is below the largest example"):
        cfg = loader_config(seq_len=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        loader, _ = make_loaders(info["urls"], cfg)
    assert loader.config.pack.seq_len == 8


def test_a_drop_schedule_runs_over_the_steps_of_the_run(tmp_path):
    info = captioned(tmp_path / "d", n_images=24)
    cfg = loader_config(drop__kind="constant", drop__rate=0.5)
    plain, _ = make_loaders(info["urls"], cfg)
    per_pass = plain.count_batches()
    loader, _ = make_loaders(info["urls"], cfg, steps=3 * per_pass,
                             drop_schedule={"schedule": "linear", "rho_min": 0.25})
    drop = loader.config.drop
    assert drop.schedule == "linear" and drop.rho_min == 0.25 and drop.schedule_epochs == pytest.approx(3.0)
    with pytest.raises(ValueError, match="needs the run's steps"):
        make_loaders(info["urls"], cfg, drop_schedule={"schedule": "linear"})


def test_a_schedule_over_an_endless_loader_asks_for_its_length(tmp_path):
    info = captioned(tmp_path / "d", n_images=6)
    loader, _ = make_loaders(info["urls"], loader_config(epochs=None))
    with pytest.raises(ValueError, match=r"drop.schedule_epochs, --drop-schedule-epochs.*endless"):
        schedule_epochs(loader, 100)


def test_eval_config_fits_each_budget_and_lengthens_rows_only_as_needed():
    cfg = loader_config(drop__kind="constant", drop__rate=0.3, augment=True)
    same = eval_config(cfg)
    assert same.training is False and same.drop.kind == "none" and same.augment is None
    assert same.shuffle_shards is False and same.epochs == 1
    assert same.fit == replace(cfg.fit, allow_upsample=False)  # native, no upsampling
    sampled = eval_config(loader_config(fit__mode="side-uniform", fit__side_min=8))
    assert sampled.fit.mode == "native" and sampled.fit.allow_upsample is False
    small = eval_config(cfg, 8, upsample=True)
    assert small.fit.max_patches == 8 and small.fit.allow_upsample and small.pack.seq_len == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        big = eval_config(cfg, 144)
    assert big.pack.seq_len == 144 and big.fit.allow_upsample is False

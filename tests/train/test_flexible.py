"""Flexible inference: a trained run evaluated at several patch budgets without retraining."""

from __future__ import annotations

import json

import pytest

from tiny_runs import captioned, loader_config, tiny_navit

from patchpack.train import RunSpec, TrainConfig, make_loaders, train
from patchpack.train.flexible import default_budgets, evaluate_budgets, load_run, write_curve


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    info = captioned(root / "data", n_images=12)
    cfg = loader_config()
    loader, _ = make_loaders(info["urls"], cfg)
    tcfg = TrainConfig(model=tiny_navit(3, max_example_tokens=None), steps=4, warmup_steps=1, device="cpu",
                       log_every=0, out_dir=str(root / "run"))
    train(tcfg, loader, run=RunSpec(tcfg, loader.config, info["urls"]), log=None)
    return root / "run", info


def test_two_budgets_give_two_points_and_the_curve_is_written(run):
    folder, info = run
    lines = []
    curve = evaluate_budgets(folder, info["urls"], [4, 32], device="cpu", log=lines.append)
    assert [p.max_patches for p in curve.points] == [4, 32] and curve.task == "classify"
    small, large = curve.points
    assert small.examples == large.examples == 12
    assert small.tokens_per_example <= 4 < 16 < large.tokens_per_example <= 32  # enlarged to fill the budget
    assert large.seq_len == 64 and small.seq_len == 64  # the run's L holds 32 tokens; nothing lengthened
    assert set(small.metrics) >= {"accuracy", "loss"} and small.seconds_per_example > 0
    assert len(lines) == 2 and lines[0].startswith("4 patches: accuracy")
    json_path, png_path = write_curve(curve)
    assert json.loads(json_path.read_text())["points"][1]["max_patches"] == 32
    assert png_path.stat().st_size > 1000 and png_path.read_bytes()[:4] == b"\x89PNG"
    report = (folder / "report.md").read_text()
    assert "## Flexible inference" in report and "eval_curve.png" in report and "| 32 | 64 | 12 |" in report
    write_curve(curve)  # a second evaluation replaces the section
    assert (folder / "report.md").read_text().count("## Flexible inference") == 1


def test_without_upsampling_small_examples_keep_their_size(run):
    folder, info = run
    kept = evaluate_budgets(folder, info["urls"], [64], upsample=False, device="cpu", log=None).points[0]
    filled = evaluate_budgets(folder, info["urls"], [64], device="cpu", log=None).points[0]
    assert kept.tokens_per_example < filled.tokens_per_example <= 64  # images under 64 px stay small
    assert kept.seq_len == filled.seq_len == 64


def test_a_checkpoint_alone_and_default_budgets(run):
    folder, info = run
    spec, model, where = load_run(folder / "checkpoint.pt")
    assert where == folder and not model.training and spec.loader.fit.max_patches == 16
    assert default_budgets(spec) == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="no checkpoint.pt"):
        load_run(folder / "data")

"""``patchpack demo``: the reduced demo runs every phase for both tasks and writes what it says."""

from __future__ import annotations

import json

import pytest

from patchpack.cli.demo import run_demo


def test_reduced_classify_demo(tmp_path, capsys):
    r = run_demo(tmp_path, images=36, videos=8, eval_images=12, steps=3, classes=3, curve_budgets=(16, 64))
    out = capsys.readouterr().out
    assert "padding" in out and "without packing" in out and "held-out accuracy at 64 patches" in out
    assert "images" in out and "videos" in out  # accuracy split by kind
    assert r.chance == pytest.approx(1 / 7) and set(r.seconds) == {"data", "packing", "training", "curve", "total"}
    assert [p.max_patches for p in r.curve.points] == [16, 64]
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "run.json", "loader.toml", "train_log.jsonl", "report.md", "eval_curve.png"):
        assert (run / name).exists(), name
    assert (tmp_path / "report" / "index.html").exists()
    words = json.loads((tmp_path / "data" / "train" / "classes.json").read_text())
    assert len(words) == 7 and "horizontal stripes" in words[0]


def test_reduced_contrastive_demo(tmp_path, capsys):
    r = run_demo(tmp_path, task="contrastive", images=24, videos=0, eval_images=12, steps=3, classes=3,
                 curve_budgets=(16,))
    out = capsys.readouterr().out
    assert "held-out image->text recall@1" in out and "zero-shot accuracy from class-name prompts" in out
    assert r.task == "contrastive" and r.chance == pytest.approx(r.metrics["chance_r1"])
    assert r.metrics["pairs"] == 12 and r.metrics["zero_shot_chance"] == pytest.approx(1 / 3)
    assert (tmp_path / "run" / "tokenizer.json").exists()


def test_the_demo_is_the_same_run_after_run(tmp_path, capsys):
    a = run_demo(tmp_path / "a", images=24, videos=4, eval_images=8, steps=4, classes=2, curve_budgets=(16,))
    b = run_demo(tmp_path / "b", images=24, videos=4, eval_images=8, steps=4, classes=2, curve_budgets=(16,))
    assert [h.loss for h in a.result.history] == [h.loss for h in b.result.history]
    assert a.metrics == b.metrics

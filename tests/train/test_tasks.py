"""Training tasks: multi-label (sigmoid BCE on targets, mAP/F1) and contrastive (two-tower on captions,
recall@k and zero-shot), the metrics' formulas, the task registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tiny_runs import captioned, loader_config, multilabel, tiny_navit

from patchpack.model.contrastive import TwoTowerConfig
from patchpack.model.text import TextConfig
from patchpack.registry import RegistryError
from patchpack.train import CaptionTokenizer, TrainConfig, make_loaders, make_task, read_log, train
from patchpack.train.metrics import average_precision, mean_average_precision, micro_f1
from patchpack.train.run import RunSpec
from patchpack.train.tasks import TASKS, build_task
from patchpack.train.text import read_captions, read_class_words


def _brute_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP as its definition reads: mean over positives of the precision at the positive's rank."""
    order = np.argsort(-scores, kind="stable")
    hits, precisions = 0, []
    for rank, i in enumerate(order, 1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return float(np.mean(precisions)) if precisions else math.nan


@given(st.lists(st.tuples(st.floats(-5, 5, allow_nan=False), st.booleans()), min_size=1, max_size=30))
def test_average_precision_is_the_mean_precision_at_each_positive(pairs):
    scores = np.array([p[0] for p in pairs], np.float32)
    labels = np.array([p[1] for p in pairs])
    got = float(average_precision(torch.from_numpy(scores)[:, None], torch.from_numpy(labels)[:, None].float())[0])
    want = _brute_ap(scores, labels)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-6)


def test_map_skips_classes_without_positives_and_f1_counts_every_decision():
    scores = torch.tensor([[3.0, 0.1, -1.0], [2.0, 0.9, -2.0], [1.0, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # class 0: positives at ranks 1 and 3 -> (1 + 2/3) / 2; class 1: rank 1 -> 1; class 2: none
    assert mean_average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    # decisions logits > 0: 6 positive, 3 of them right, no miss -> 2*3 / (2*3 + 3)
    assert micro_f1(scores, targets) == pytest.approx(6 / 9)


def test_an_unknown_task_is_one_line_with_the_close_names():
    assert set(TASKS.names()) >= {"classify", "multilabel", "contrastive"}
    with pytest.raises(RegistryError, match="multilabel"):
        make_task("multi-label")


def test_multilabel_training_on_targets(tmp_path):
    urls = multilabel(tmp_path / "ml")
    cfg = loader_config(num_classes=4)
    loader, evals = make_loaders(urls, cfg, eval_urls=urls)
    tcfg = TrainConfig(model=tiny_navit(4), task="multilabel", steps=30, lr=3e-3, warmup_steps=2, device="cpu",
                       log_every=0, out_dir=str(tmp_path / "run"))
    result = train(tcfg, loader, evals, log=None)
    losses = [h.loss for h in result.history]
    assert losses[0] == pytest.approx(math.log(2), abs=0.05)  # sigmoid BCE starts near log 2 a class
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    ev = result.final_eval("heldout")
    assert ev.examples == 24 and set(ev.metrics) == {"map", "f1", "loss"}
    assert 0.6 < ev.metrics["map"] <= 1.0  # the training examples themselves: above chance (about 0.5)
    rows = read_log(tmp_path / "run")
    assert rows[-1]["kind"] == "eval" and rows[-1]["map"] == pytest.approx(ev.metrics["map"])


def test_multilabel_without_targets_says_what_to_set(tmp_path):
    urls = multilabel(tmp_path / "ml")
    loader, _ = make_loaders(urls, loader_config())  # no num_classes: no targets
    tcfg = TrainConfig(model=tiny_navit(4), task="multilabel", steps=2, warmup_steps=0, device="cpu", log_every=0)
    with pytest.raises(ValueError, match=r"multi-hot targets.*num_classes=C \(--num-classes\)"):
        train(tcfg, loader, log=None)


def _contrastive(tmp_path, steps: int = 12):
    info = captioned(tmp_path / "cap")
    tok = CaptionTokenizer.train(read_captions(info["urls"]))
    cfg = loader_config(fields=("txt",), tokenizer=tok, text_len=24)
    loader, evals = make_loaders(info["urls"], cfg, eval_urls=info["urls"])
    model = TwoTowerConfig(image=tiny_navit(0, pool="map"), embed_dim=16,
                           text=TextConfig(vocab_size=tok.vocab_size, text_len=24, dim=16, depth=1, heads=2))
    words = read_class_words(tmp_path / "cap" / "classes.json")
    tcfg = TrainConfig(model=model, task="contrastive", steps=steps, lr=3e-3, warmup_steps=1, device="cpu",
                       log_every=0, out_dir=str(tmp_path / "run"))
    task = build_task("contrastive", cfg, words)
    result = train(tcfg, loader, evals, task=task, run=RunSpec(tcfg, cfg, info["urls"], info["urls"], words),
                   log=None)
    return result, info, words


def test_contrastive_training_on_captions(tmp_path):
    result, info, words = _contrastive(tmp_path)
    assert all(np.isfinite(h.loss) for h in result.history)
    m = result.final_eval("heldout").metrics
    assert set(m) == set(TASKS.get("contrastive").metric_names)
    assert m["pairs"] == 24 and m["chance_r1"] == pytest.approx(1 / 24, rel=0.5)
    assert 0 <= m["image_to_text_r1"] <= m["image_to_text_r5"] <= 1
    assert m["zero_shot_chance"] == pytest.approx(1 / 3) and 0 <= m["zero_shot_accuracy"] <= 1
    spec = RunSpec.read(tmp_path / "run")  # the run folder keeps the tokenizer and the class names
    assert spec.tokenizer("horizontal stripes") == CaptionTokenizer.load(tmp_path / "run" / "tokenizer.json")(
        "horizontal stripes")
    assert spec.class_words == words and spec.train.task == "contrastive"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["tokenizer"] == "tokenizer.json"


def test_contrastive_without_captions_says_so(tmp_path):
    info = captioned(tmp_path / "cap", n_images=8)
    loader, _ = make_loaders(info["urls"], loader_config())
    model = TwoTowerConfig(image=tiny_navit(0), embed_dim=16, text=TextConfig(vocab_size=50, dim=16, depth=1, heads=2))
    tcfg = TrainConfig(model=model, task="contrastive", steps=2, warmup_steps=0, device="cpu", log_every=0)
    with pytest.raises(ValueError, match="captions tokenized by the loader"):
        train(tcfg, loader, log=None)

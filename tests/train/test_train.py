import json

import numpy as np
import pytest
import torch

from patchpack.loader.batch import collate
from patchpack.model import NaViT, NaViTConfig, TokenLearnerConfig
from patchpack.tokenize import Tokens, patchify
from patchpack.train import TrainConfig, evaluate, load_checkpoint, lr_factor, train

P = 4


def _image(key, label, rng):
    """Class 0: horizontal stripes, class 1: vertical stripes, random size."""
    h, w = int(rng.integers(1, 4)) * P, int(rng.integers(1, 4)) * P
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.where(((yy if label == 0 else xx) // 2) % 2 == 0, 220, 30).astype(np.uint8)
    img = np.repeat(img[..., None], 3, -1)
    patches, positions = patchify(img, P)
    return Tokens(key, patches, positions, (1, h // P, w // P), label)


def _batches(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        rows = [[_image(f"{b}-{r}-{i}", int(rng.integers(0, 2)), rng) for i in range(3)] for r in range(2)]
        out.append(collate(rows, 27, 3))
    return out


class StatefulLoader:
    """An iterable of batches with state_dict/load_state_dict, like the packed loader."""

    def __init__(self, batches):
        self.batches, self.pos = batches, 0

    def __iter__(self):
        while self.pos < len(self.batches):
            self.pos += 1
            yield self.batches[self.pos - 1]
        self.pos = 0

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def _cfg(**kw):
    model = NaViTConfig(patch_size=P, dim=16, depth=2, heads=2, num_classes=2,
                        token_learner=TokenLearnerConfig(num_tokens=2, bottleneck=8, at_layer=1))
    base = dict(model=model, steps=30, lr=3e-3, warmup_steps=3, log_every=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_lowers_loss_and_evaluates():
    lines = []
    result = train(_cfg(log_every=10), _batches(8, 0), {"val": _batches(3, 1)}, log=lines.append)
    losses = [h.loss for h in result.history]
    assert len(losses) == 30 and result.step == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    ev = result.final_eval("val")
    assert ev.examples == 18 and ev.metrics["accuracy"] > 0.8
    assert any(l.startswith("step 10/30 loss") and "img/s" in l and "tok/s" in l and "pad" in l and "eta" in l
               for l in lines)
    h = result.history[0]
    assert h.examples == 6 and 0 <= h.padding < 1 and h.tokens_per_s > 0 and 0 <= h.wait_seconds <= h.seconds


def test_lr_schedule_warmup_then_cosine():
    cfg = _cfg(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, cfg) == pytest.approx(1e-2)


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    batches = _batches(5, 2)
    full = train(_cfg(steps=12), StatefulLoader(batches), log=None)

    first = StatefulLoader(batches)
    part = train(_cfg(steps=12, run_steps=7, out_dir=str(tmp_path)), first, log=None)
    assert part.step == 7
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only: no code is unpickled
    assert ckpt["step"] == 7 and ckpt["loader"] == {"pos": 2} and ckpt["config"].steps == 12
    resumed_loader = StatefulLoader(batches)
    resumed = train(_cfg(steps=12, out_dir=str(tmp_path)), resumed_loader, log=None)
    assert resumed.step == 12 and len(resumed.history) == 5
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
    rows = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 13)) and {r["kind"] for r in rows} == {"step"}


def test_eval_is_deterministic_and_restores_mode():
    model = NaViT(_cfg().model)
    model.train()
    val = _batches(2, 3)
    assert evaluate(model, val).metrics == evaluate(model, val).metrics
    assert model.training
    assert evaluate(model, []).metrics["accuracy"] is None


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no batch"):
        train(_cfg(), [], log=None)


def test_label_beyond_num_classes_names_the_sample():
    batches = _batches(3, 0)
    bad = batches[1]
    bad.labels[1, 2] = 7  # num_classes=2
    key = bad.sample_keys[1][2]
    with pytest.raises(ValueError, match=rf"^label 7 of sample '{key}' \(row 1, slot 2\) is out of range for "
                                         r"num_classes=2 \(labels must lie in 0\.\.1, -1 for empty slots\)"):
        train(_cfg(steps=5), batches, log=None)
    bad.labels[1, 2] = -3  # only -1 marks an empty slot
    with pytest.raises(ValueError, match="label -3 of sample"):
        train(_cfg(steps=5), batches, log=None)
    model = NaViT(_cfg().model)
    bad.labels[1, 2] = 2
    with pytest.raises(ValueError, match=rf"label 2 of sample '{key}'"):
        evaluate(model, batches)
    bad.labels[1, 2] = 1
    assert train(_cfg(steps=5), batches, log=None).step == 5  # labels in range pass


def test_deterministic_training_switches_torch_on_and_restores_it(monkeypatch):
    import patchpack.train.loop as loop

    seen = []
    monkeypatch.setattr(loop, "_train", lambda *a: seen.append(torch.are_deterministic_algorithms_enabled()) or "done")
    before = torch.are_deterministic_algorithms_enabled()
    assert train(_cfg(deterministic=True), [], log=None) == "done"
    assert torch.are_deterministic_algorithms_enabled() == before
    train(_cfg(), [], log=None)
    assert seen == [True, before]


def test_deterministic_training_hits_no_op_without_a_deterministic_kernel_and_repeats():
    batches = _batches(4, 3)
    a = train(_cfg(steps=6, deterministic=True), StatefulLoader(batches), log=None)
    b = train(_cfg(steps=6, deterministic=True), StatefulLoader(batches), log=None)
    for (n, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), n

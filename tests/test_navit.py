import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from patchpack.batch import collate
from patchpack.model import NaViT, NaViTConfig, PosEmbConfig, TokenLearnerConfig, available_backends
from patchpack.tokenize import Tokens, tubeletize

P, PT = 4, 2
BACKENDS = [b for b in available_backends("cpu") if b != "varlen"]


def _ex(key, t, h, w, label=0, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (t * PT, h * P, w * P, 3), dtype=np.uint8)
    patches, positions = tubeletize(video, P, PT)
    return Tokens(key, patches, positions, (t, h, w), label)


EXAMPLES = {
    "img": _ex("img", 1, 3, 5, 1, seed=1),
    "tall": _ex("tall", 1, 6, 1, 2, seed=2),
    "vid": _ex("vid", 3, 2, 2, 3, seed=3),
    "tiny": _ex("tiny", 1, 1, 1, 0, seed=4),
}
for name, d in (("img-dropped", 9),):  # an example with dropped tokens (positions kept)
    ex = EXAMPLES["img"]
    keep = np.sort(np.random.default_rng(0).choice(len(ex), d, replace=False))
    EXAMPLES[name] = Tokens(name, ex.patches[keep], ex.positions[keep], ex.grid, 1)


def _model(tl=None, pool="mean", backend="sdpa", posemb="learned", dropout=0.0, seed=0):
    torch.manual_seed(seed)
    cfg = NaViTConfig(patch_size=P, tubelet=PT, dim=32, depth=3, heads=2, num_classes=5, pool=pool,
                      attention=backend, token_learner=tl, posemb=PosEmbConfig(kind=posemb), dropout=dropout)
    return NaViT(cfg).eval()


VARIANTS = {
    "plain": dict(),
    "tokenlearner": dict(tl=TokenLearnerConfig(num_tokens=3, bottleneck=8, at_layer=1)),
    "tokenfuser-attnpool": dict(tl=TokenLearnerConfig(num_tokens=2, bottleneck=8, fuser=True), pool="attention",
                                posemb="fractional"),
}

LAYOUTS = [  # rows of example names; every row holds the probe somewhere
    [["img"]],
    [["tall", "img"]],
    [["vid", "tiny", "img", "img-dropped"], ["img"]],
    [["img-dropped", "tiny"], ["tiny", "vid", "tall", "img"]],
]


def _logits(model, rows, seq_len=48, e=4):
    batch = collate([[EXAMPLES[n] for n in r] for r in rows], seq_len, e)
    with torch.no_grad():
        return model(batch), batch


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_do_not_depend_on_packing(backend, variant):
    model = _model(backend=backend, **VARIANTS[variant])
    for probe in ("img", "vid", "img-dropped"):
        alone, _ = _logits(model, [[probe]], seq_len=probe != "vid" and 15 or 12, e=1)
        for rows in LAYOUTS + [[["tall", probe, "tiny"]], [["tiny", "tiny", probe]]]:
            logits, batch = _logits(model, rows)
            for b, keys in enumerate(batch.keys):
                for j, k in enumerate(keys):
                    if k == probe:
                        torch.testing.assert_close(logits[b, j], alone[0, 0], atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(sorted(EXAMPLES)), min_size=0, max_size=3), st.integers(0, 3))
def test_any_offset_any_neighbours(fillers, where):
    model = MODEL_TL
    row = list(fillers)
    row.insert(min(where, len(row)), "img")
    alone, _ = _logits(model, [["img"]], 15, 1)
    logits, _ = _logits(model, [row], 64, 4)
    torch.testing.assert_close(logits[0, row.index("img")], alone[0, 0], atol=1e-5, rtol=0)


MODEL_TL = _model(**VARIANTS["tokenlearner"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_do_not_cross_segments(variant):
    model = _model(**VARIANTS[variant]).train()
    batch = collate([[EXAMPLES[n] for n in ("tall", "img", "vid")]], 48, 4)
    patches = batch.patches.float().requires_grad_(True)
    logits = model(patches, batch.segment_ids, batch.positions, batch.grids)
    logits[0, 1].sum().backward()  # the second example only
    g = patches.grad[0].abs().sum(-1)
    seg = batch.segment_ids[0]
    assert g[seg == 2].sum() > 0
    assert g[seg != 2].max() == 0  # neighbours and padding get no gradient


def test_empty_slots_and_padding_rows_are_finite():
    model = _model(**VARIANTS["tokenfuser-attnpool"])
    batch = collate([[EXAMPLES["img"]], []], 32, 3)  # an all-padding row, empty slots
    logits = model(batch)
    assert logits.shape == (2, 3, 5) and torch.isfinite(logits).all()
    assert torch.equal(logits[0, 1:], torch.zeros(2, 5)) and torch.equal(logits[1], torch.zeros(3, 5))
    model.train()
    loss = NaViT.loss(model(batch), batch.labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty = collate([[]], 8, 2, token_dim=model.cfg.token_dim)
    assert float(NaViT.loss(model(empty), empty.labels).detach()) == 0.0


def test_eval_is_deterministic_and_dropout_off():
    model = _model(dropout=0.3, **VARIANTS["tokenlearner"])
    batch = collate([[EXAMPLES["img"], EXAMPLES["vid"]]], 40, 2)
    with torch.no_grad():
        a, b = model(batch), model(batch)
        assert torch.equal(a, b)
        model.train()
        c = model(batch)
    assert not torch.allclose(a, c)  # dropout is active in training only


def test_uint8_and_float_inputs_agree_and_tensor_call():
    model = _model()
    batch = collate([[EXAMPLES["img"], EXAMPLES["tall"]]], 32, 2)
    with torch.no_grad():
        a = model(batch)
        b = model(batch.patches.float(), batch.segment_ids, batch.positions, batch.grids)
    torch.testing.assert_close(a, b)


def test_short_training_lowers_loss():
    torch.manual_seed(0)
    model = _model(**VARIANTS["tokenlearner"]).train()
    rows = [[EXAMPLES[n] for n in r] for r in (["img", "tall"], ["vid", "tiny"], ["img-dropped"])]
    batch = collate(rows, 24, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = NaViT.loss(model(batch), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        NaViTConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="pool"):
        NaViTConfig(pool="max")
    with pytest.raises(ValueError, match="exceeds depth"):
        NaViTConfig(depth=2, token_learner=TokenLearnerConfig(at_layer=3))
    cfg = NaViTConfig(token_learner=TokenLearnerConfig(num_tokens=4))
    assert NaViTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.learner_layer == 3 and cfg.token_dim == 16 * 16 * 3

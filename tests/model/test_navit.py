import logging
import traceback
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from patchpack.loader.batch import collate
from patchpack.model import NaViT, NaViTConfig, PosEmbConfig, TokenLearnerConfig, available_backends
from patchpack.tokenize import Tokens, tubeletize

P, PT = 4, 2
BACKENDS = [b for b in available_backends("cpu") if b != "varlen"]
TRAIN_BACKENDS = [b for b in BACKENDS if b != "flex"]  # FlexAttention has no backward on CPU


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


def _model(tl=None, pool="mean", backend="sdpa", posemb=None, dropout=0.0, seed=0, bound=15):
    torch.manual_seed(seed)
    cfg = NaViTConfig(patch_size=P, tubelet=PT, dim=32, depth=3, heads=2, num_classes=5, pool=pool,
                      attention=backend, token_learner=tl, posemb=posemb or PosEmbConfig(), dropout=dropout,
                      max_example_tokens=bound)
    model = NaViT(cfg).eval()
    for f in model.fusers:  # the fuser's mix starts at zero; make it matter for the checks
        torch.nn.init.normal_(f.mix.weight, std=0.5)
    return model


def _tl(**kw):
    return TokenLearnerConfig(**{"num_tokens": 2, "bottleneck": 8, "at_layer": 1, "max_frames": 3, **kw})


VARIANTS = {
    "plain": dict(),
    "map": dict(pool="map", posemb=PosEmbConfig(kind="fourier", coords="fractional")),
    "tokenlearner": dict(tl=_tl(num_tokens=3)),
    "tokenlearner-static-slots": dict(tl=_tl(num_tokens=3, learned_slots=4)),
    "tokenlearner-v1.0": dict(tl=_tl(at_layer=2, version="1.0")),
    "tokenlearner-v1.0-mean": dict(tl=_tl(version="1.0", pooling="mean", learned_slots=4)),
    "fuser-per-block-map": dict(tl=_tl(fuser="per_block"), pool="map",
                                posemb=PosEmbConfig(kind="learned", coords="fractional")),
    "fuser-once-v1.0": dict(tl=_tl(fuser="once", version="1.0")),
}

POSEMBS = {  # NaViT's comparison grid (posemb.py): every kind, both schemas, every combination
    f"{kind}-{coords}-{combine}": PosEmbConfig(kind=kind, coords=coords, combine=combine, max_size=(4, 8, 8),
                                               fractional_scale=8)
    for kind in ("learned", "sinusoidal", "fourier") for coords in ("absolute", "fractional")
    for combine in ("sum", "concat", "product")
}
POSEMBS.update({kind: PosEmbConfig(kind=kind, max_size=(4, 8, 8), reference_grid=(3, 4))
                for kind in ("learned_2d", "vit_1d", "none")})

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


def _assert_packing_invariant(model, probes=("img", "vid", "img-dropped"), layouts=LAYOUTS):
    for probe in probes:
        alone, _ = _logits(model, [[probe]], seq_len=probe != "vid" and 15 or 12, e=1)
        for rows in layouts + [[["tall", probe, "tiny"]], [["tiny", "tiny", probe]]]:
            logits, batch = _logits(model, rows)
            for b, keys in enumerate(batch.sample_keys):
                for j, k in enumerate(keys):
                    if k == probe:
                        torch.testing.assert_close(logits[b, j], alone[0, 0], atol=1e-5, rtol=0)


def _assert_no_cross_gradient(model):
    model.train()
    batch = collate([[EXAMPLES[n] for n in ("tall", "img", "vid")], [EXAMPLES["img-dropped"]]], 48, 4)
    patches = batch.patches.float().requires_grad_(True)
    logits = model(patches, batch.segment_ids, batch.positions, batch.grids)
    logits[0, 1].sum().backward()  # the second example of the first row only
    g = patches.grad.abs().sum(-1)
    mine = (batch.segment_ids == 2) & (torch.arange(2)[:, None] == 0)
    assert g[mine].sum() > 0
    assert g[~mine].max() == 0  # neighbours, other rows and padding get no gradient


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_do_not_depend_on_packing(backend, variant):
    _assert_packing_invariant(_model(backend=backend, **VARIANTS[variant]))


@pytest.mark.parametrize("posemb", list(POSEMBS))
def test_every_position_embedding_is_packing_invariant(posemb):
    _assert_packing_invariant(_model(posemb=POSEMBS[posemb]), probes=("img", "vid"), layouts=LAYOUTS[2:])


@pytest.mark.parametrize("posemb", list(POSEMBS))
def test_every_position_embedding_keeps_gradients_in_the_example(posemb):
    _assert_no_cross_gradient(_model(posemb=POSEMBS[posemb]))


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


@pytest.mark.parametrize("backend", TRAIN_BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_do_not_cross_segments(variant, backend):
    _assert_no_cross_gradient(_model(backend=backend, **VARIANTS[variant]))


def test_empty_slots_and_padding_rows_are_finite():
    model = _model(**VARIANTS["fuser-per-block-map"])
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
    with pytest.raises(ValueError, match="unknown attention backend 'flx'; did you mean 'flex'"):
        NaViTConfig(attention="flx")
    cfg = NaViTConfig(token_learner=TokenLearnerConfig(num_tokens=4, version="1.0", fuser="per_block", dropout=0.1),
                      posemb=PosEmbConfig(kind="vit_1d", reference_grid=(8, 8)), max_example_tokens=256)
    assert NaViTConfig.from_dict(cfg.to_dict()) == cfg
    assert len(NaViT(NaViTConfig(depth=4, dim=32, heads=2, token_learner=cfg.token_learner)).learners) == 2
    assert cfg.learner_layer == 3 and cfg.token_dim == 16 * 16 * 3


TRACERS = ("torch/_dynamo/", "torch/_inductor/", "torch/fx/", "torch/_subclasses/")
FORBIDDEN = {  # every way a forward could read a tensor on the host
    (torch.Tensor, "item"), (torch.Tensor, "tolist"), (torch.Tensor, "nonzero"), (torch.Tensor, "__bool__"),
    (torch.Tensor, "__int__"), (torch.Tensor, "__float__"), (torch.Tensor, "__index__"), (torch, "nonzero"),
    (torch.Tensor, "numpy"), (torch.Tensor, "unique"), (torch, "unique"),
}


def _static_slots(variant):
    """The variant with a static learned layout: ``learned_slots=None`` reads one count on the host by design."""
    kw = dict(VARIANTS[variant])
    if kw.get("tl") is not None and kw["tl"].learned_slots is None:
        kw["tl"] = replace(kw["tl"], learned_slots=4)
    return kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_never_reads_tensors_on_the_host(variant, backend, monkeypatch):
    model = _model(backend=backend, **_static_slots(variant))
    if backend != "flex":
        model.train()
    batch = collate([[EXAMPLES[n] for n in r] for r in (["vid", "tiny", "img"], ["img-dropped"])], 40, 4)

    def refuse(owner, name):
        original = getattr(owner, name)

        def fail(*args, **kwargs):
            # torch.compile's tracer (flex builds its kernels that way) reads values while compiling,
            # once per shape; that is not part of the forward's work
            if any(tracer in f.filename for f in traceback.extract_stack() for tracer in TRACERS):
                return original(*args, **kwargs)
            raise AssertionError(f"host sync in forward: {name}")
        return fail

    for owner, name in FORBIDDEN:
        monkeypatch.setattr(owner, name, refuse(owner, name))
    with torch.no_grad() if backend == "flex" else torch.enable_grad():
        logits = model(batch)
        loss = NaViT.loss(logits, batch.labels)
    monkeypatch.undo()
    assert torch.isfinite(loss)


def test_residual_stream_stays_float32_under_bf16_autocast():
    model = _model(**VARIANTS["fuser-per-block-map"]).train()
    seen = []
    for m in list(model.blocks) + list(model.learners) + list(model.fusers):
        m.register_forward_hook(lambda mod, inp, out: seen.append((type(mod).__name__, getattr(out, "x", out).dtype)))
    batch = collate([[EXAMPLES["img"], EXAMPLES["vid"]]], 40, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
    assert len(seen) == 3 + 2 + 2 and all(dtype == torch.float32 for _, dtype in seen), seen
    NaViT.loss(logits, batch.labels).backward()


def test_flex_in_eval_with_gradients_says_what_to_do():
    if "flex" not in BACKENDS:
        pytest.skip("no FlexAttention in this torch")
    model = _model(backend="flex")  # eval(), gradients enabled
    batch = collate([[EXAMPLES["img"]]], 16, 1)
    with pytest.raises(ValueError, match="no backward on CPU.*no_grad"):
        model(batch)
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_positions_beyond_the_table_are_refused():
    model = _model()
    batch = collate([[EXAMPLES["img"]]], 16, 1)
    batch.positions[0, 0, 2] = 256  # the default tables cover 256 per side (the default fit budget)
    with pytest.raises(RuntimeError, match="max_size"):
        model(batch)


def test_learned_slots_per_batch_follow_the_examples_present():
    """learned_slots=None: R = bucket(ceil(examples / rows)); the learned rows are then mostly real."""
    model = _model(**VARIANTS["tokenlearner"])
    seen = []
    model.learners[0].register_forward_hook(lambda mod, inp, out: seen.append((inp[1].slots, out.shape)))
    rows = [["img", "tiny", "tall"], ["tiny"], ["img-dropped", "tiny"], ["img"]]  # 7 examples over 4 rows
    _logits(model, rows, seq_len=40, e=4)
    assert seen[-1] == (2, torch.Size([4, 2 * 3 * 3, 32]))  # ceil(7 / 4) = 2 places of T=3 x K=3 per row
    static = _model(**_static_slots("tokenlearner"))
    static.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(static, rows, 40, 4)[0], _logits(model, rows, 40, 4)[0], atol=1e-5, rtol=0)


def test_a_batch_beyond_static_learned_slots_is_refused():
    model = _model(tl=_tl(learned_slots=1))
    with pytest.raises(RuntimeError, match="learned_slots=1"):
        _logits(model, [["img", "tiny", "tall"], ["tiny"]], 40, 4)  # 4 examples > 2 rows x 1 place


def test_attention_backend_is_named_with_its_reason(caplog):
    with caplog.at_level(logging.INFO, logger="patchpack.model"):
        model = _model(backend="auto", bound=4)
        _logits(model, [["tiny"] * 4], 32, 4)
    name, reason = model.attention_backend("cpu", length=4096)
    assert name == "window" and "not varlen: needs CUDA" in reason and "rows of 4096" in reason
    assert model.attention_backend("cpu", requires_grad=True, length=16)[0] == "sdpa"
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("NaViT built; attention 'auto' -> ") for line in lines)
    assert any("-> 'sdpa' (cpu, float32, inference, rows of 32)" in line for line in lines), lines


def test_num_classes_0_is_a_feature_extractor():
    torch.manual_seed(0)
    model = NaViT(NaViTConfig(patch_size=P, tubelet=PT, dim=32, depth=2, heads=2, num_classes=0)).eval()
    assert isinstance(model.head, torch.nn.Identity)
    batch = collate([[EXAMPLES["img"], EXAMPLES["vid"]], [EXAMPLES["tiny"]]], 40, 2)
    with torch.no_grad():
        out = model(batch)
        pooled, present = model.forward_features(batch)
    assert out.shape == (2, 2, 32) and torch.equal(out[1, 1], torch.zeros(32))
    torch.testing.assert_close(out, model.norm(pooled) * present[..., None])
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        NaViTConfig(num_classes=-1)

import pytest
import torch

from patchpack.model.text import TextConfig, TextTransformer

VOCAB = 40


def _model(pool="mean", backend="sdpa", seed=0):
    torch.manual_seed(seed)
    return TextTransformer(TextConfig(vocab_size=VOCAB, text_len=16, dim=32, depth=2, heads=2, pool=pool,
                                      attention=backend)).eval()


def _texts(lengths, t, seed=0, pad_value=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), t), generator=g, dtype=torch.int32)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, pad_value), mask


@pytest.mark.parametrize("pool", ["mean", "last"])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_a_text_embeds_the_same_whatever_its_padding(pool, backend):
    """Padding length and whatever ids sit in the padding change nothing (key-padding mask + masked pooling)."""
    model = _model(pool, backend)
    ids, mask = _texts([5, 3, 8], 8)
    with torch.no_grad():
        ref = model(ids, mask)
        longer = torch.cat([ids, torch.full((3, 6), 7, dtype=torch.int32)], 1)
        out = model(longer, torch.cat([mask, torch.zeros(3, 6, dtype=torch.bool)], 1))
        junk = ids.masked_fill(~mask, 11)
        out2 = model(junk, mask)
        alone = model(ids[1:2, :3], mask[1:2, :3])
    assert ref.shape == (3, 32)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out2, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0], ref[1], atol=1e-5, rtol=0)


def test_last_pooling_is_the_last_real_token():
    model = _model("last")
    ids, mask = _texts([4, 7], 9)
    seen = {}
    model.norm.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.no_grad():
        out = model(ids, mask)
    torch.testing.assert_close(out[0], seen["x"][0, 3])
    torch.testing.assert_close(out[1], seen["x"][1, 6])


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_no_gradient_crosses_texts_or_reaches_padding(pool):
    model = _model(pool).train()
    ids, mask = _texts([5, 3, 6], 8)
    seen = {}

    def keep(m, i, o):
        o.retain_grad()
        seen["emb"] = o

    model.token.register_forward_hook(keep)
    out = model(ids, mask)
    (out[1] * torch.randn(32)).sum().backward()  # (a plain sum of LayerNorm outputs is constant)
    g = seen["emb"].grad.abs().sum(-1)
    assert g[1, :3].min() > 0  # every real token of text 1 matters
    assert g[1, 3:].max() == 0 and g[0].max() == 0 and g[2].max() == 0


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_an_empty_text_is_zero_and_finite(pool):
    model = _model(pool)
    ids, mask = _texts([0, 4], 6)
    out = model(ids, mask)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros(32))


def test_text_mistakes():
    model = _model()
    ids, mask = _texts([3], 20)
    with pytest.raises(ValueError, match="text_len=16"):
        model(ids, mask)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        model(ids[0], mask[0])
    bad = torch.tensor([[1, VOCAB + 3]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="vocab_size"):
        model(bad, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pool"):
        TextConfig(pool="cls")

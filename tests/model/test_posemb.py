import pytest
import torch

from patchpack.model.posemb import COMBINES, KINDS, FactorizedPosEmb, PosEmbConfig, token_grid_sizes


def _pos(b, l, grid=(2, 5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.randint(0, n, (b, l), generator=g) for n in grid], -1)
    return pos, torch.tensor(grid).expand(b, l, 3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("combine", COMBINES)
def test_shapes_and_finite(kind, combine):
    emb = FactorizedPosEmb(30, PosEmbConfig(kind=kind, combine=combine, max_size=(4, 8, 8)))
    pos, sizes = _pos(2, 11)
    out = emb(pos, sizes)
    assert out.shape == (2, 11, 30)
    assert torch.isfinite(out).all()
    if kind != "none":
        assert out.std() > 0


@pytest.mark.parametrize("kind", ["learned", "fractional", "sinusoidal", "fourier"])
def test_factorised_sum_is_sum_of_axes(kind):
    emb = FactorizedPosEmb(16, PosEmbConfig(kind=kind, temporal=False))
    pos = torch.tensor([[[0, 1, 2], [0, 1, 3], [0, 4, 2], [0, 4, 3]]])
    sizes = torch.full_like(pos, 6)
    e = emb(pos, sizes)[0]
    # separable: e(y1,x2) - e(y1,x3) == e(y4,x2) - e(y4,x3)
    torch.testing.assert_close(e[0] - e[1], e[2] - e[3], atol=1e-6, rtol=1e-5)


def test_fractional_depends_only_on_relative_position():
    emb = FactorizedPosEmb(8, PosEmbConfig(kind="fractional", buckets=16))
    # (pos + 0.5) / size: 0.5 for (0 of 1), (1 of 3), (2 of 5)
    pos = torch.tensor([[[0, 0, 0], [0, 1, 1], [0, 2, 2]]])
    sizes = torch.tensor([[[1, 1, 1], [1, 3, 3], [1, 5, 5]]])
    e = emb(pos, sizes)[0]
    torch.testing.assert_close(e[0], e[1])
    torch.testing.assert_close(e[0], e[2])
    fourier = FactorizedPosEmb(8, PosEmbConfig(kind="fourier"))
    f = fourier(pos, sizes)[0]
    torch.testing.assert_close(f[0], f[2])


def test_learned_refuses_positions_beyond_the_table_and_absolute_differs():
    emb = FactorizedPosEmb(8, PosEmbConfig(kind="learned", max_size=(2, 4, 4)))
    pos = torch.tensor([[[0, 3, 0], [0, 1, 0]]])
    e = emb(pos, torch.ones_like(pos))[0]
    assert not torch.allclose(e[0], e[1])
    with pytest.raises(RuntimeError, match="beyond the learned position table.*max_size"):
        emb(torch.tensor([[[0, 4, 0]]]), torch.ones(1, 1, 3, dtype=torch.long))
    assert PosEmbConfig().max_size[1:] == (256, 256)  # the default fit budget's longest side (1 x 256 patches)


def test_temporal_axis_switch():
    pos = torch.tensor([[[0, 1, 1], [3, 1, 1]]])
    sizes = torch.tensor([[[4, 2, 2], [4, 2, 2]]])
    with_t = FactorizedPosEmb(12, PosEmbConfig(kind="sinusoidal"))(pos, sizes)[0]
    without = FactorizedPosEmb(12, PosEmbConfig(kind="sinusoidal", temporal=False))(pos, sizes)[0]
    assert not torch.allclose(with_t[0], with_t[1])
    torch.testing.assert_close(without[0], without[1])


def test_concat_splits_width_per_axis():
    emb = FactorizedPosEmb(10, PosEmbConfig(kind="sinusoidal", combine="concat"))
    assert sum(emb.widths) == 10 and len(emb.widths) == 3
    pos = torch.tensor([[[0, 2, 0], [0, 2, 5]]])
    e = emb(pos, torch.full_like(pos, 8))[0]
    w0, w1, _ = emb.widths
    torch.testing.assert_close(e[0, : w0 + w1], e[1, : w0 + w1])  # only the x part changes
    assert not torch.allclose(e[0, w0 + w1 :], e[1, w0 + w1 :])


def test_product_starts_near_one_for_learned():
    emb = FactorizedPosEmb(8, PosEmbConfig(kind="learned", combine="product"))
    pos, sizes = _pos(1, 5)
    assert (emb(pos, sizes) - 1).abs().max() < 0.3


def test_token_grid_sizes():
    grids = torch.tensor([[[1, 3, 4], [2, 5, 6], [0, 0, 0]]])
    seg = torch.tensor([[1, 1, 2, 0, 2]])
    sizes = token_grid_sizes(grids, seg)
    assert sizes.tolist() == [[[1, 3, 4], [1, 3, 4], [2, 5, 6], [1, 1, 1], [2, 5, 6]]]


def test_bad_config():
    with pytest.raises(ValueError, match="positional embedding"):
        PosEmbConfig(kind="rope")
    with pytest.raises(ValueError, match="combination"):
        PosEmbConfig(combine="max")

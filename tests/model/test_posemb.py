import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from patchpack.model.posemb import (COMBINES, COORDS, FACTORIZED, KINDS, PosEmb, PosEmbConfig, resized_table,
                                    sinusoidal, token_grid_sizes)


def _pos(b, l, grid=(2, 5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.randint(0, n, (b, l), generator=g) for n in grid], -1)
    return pos, torch.tensor(grid).expand(b, l, 3)


def _line(n, axis=2):
    """Every position along one axis of an example ``n`` long: positions, sizes ``[1, n, 3]``."""
    pos = torch.zeros(1, n, 3, dtype=torch.long)
    pos[0, :, axis] = torch.arange(n)
    sizes = torch.ones(1, n, 3, dtype=torch.long)
    sizes[..., axis] = n
    return pos, sizes


CONFIGS = [PosEmbConfig(kind=k, coords=c, combine=m, max_size=(4, 8, 8), fractional_scale=8)
           for k in FACTORIZED for c in COORDS for m in COMBINES]
CONFIGS += [PosEmbConfig(kind=k, max_size=(4, 8, 8), reference_grid=(3, 4)) for k in ("learned_2d", "vit_1d", "none")]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.coords}-{c.combine}")
def test_shapes_and_finite(cfg):
    emb = PosEmb(30, cfg)
    pos, sizes = _pos(2, 11)
    out = emb(pos, sizes)
    assert out.shape == (2, 11, 30) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out.std() > 0) == (cfg.kind != "none")


@pytest.mark.parametrize("kind", FACTORIZED)
@pytest.mark.parametrize("coords", COORDS)
def test_factorised_sum_is_sum_of_axes(kind, coords):
    emb = PosEmb(16, PosEmbConfig(kind=kind, coords=coords, temporal=False))
    pos = torch.tensor([[[0, 1, 2], [0, 1, 3], [0, 4, 2], [0, 4, 3]]])
    sizes = torch.full_like(pos, 6)
    e = emb(pos, sizes)[0]
    # separable: e(y1,x2) - e(y1,x3) == e(y4,x2) - e(y4,x3)
    torch.testing.assert_close(e[0] - e[1], e[2] - e[3], atol=1e-6, rtol=1e-5)


def test_learned_absolute_is_a_row_per_index():
    """§2.1 absolute: phi(p) = T[p] per axis, summed."""
    emb = PosEmb(8, PosEmbConfig(kind="learned", max_size=(4, 8, 8)))
    pos, sizes = _pos(1, 9, (4, 8, 8))
    t, y, x = pos[0].unbind(-1)
    ref = emb.embed[0].table[t] + emb.embed[1].table[y] + emb.embed[2].table[x]
    torch.testing.assert_close(emb(pos, sizes)[0], ref)


def test_learned_fractional_interpolates_the_table_at_exact_coordinates():
    """§2.1 fractional: r = p / n, u = r * S, phi(u) = (1 - w) T[floor u] + w T[floor u + 1]."""
    s = 8
    emb = PosEmb(6, PosEmbConfig(kind="learned", coords="fractional", fractional_scale=s, temporal=False))
    table = emb.embed[1].table  # x axis: S + 1 rows
    assert table.shape == (s + 1, 6)
    pos, sizes = _line(5)
    e = emb(pos, sizes)[0] - emb.embed[0](pos[0, :, 1], sizes[0, :, 1])  # the x part alone
    for p in range(5):
        u = p / 5 * s
        i, w = math.floor(u), u - math.floor(u)
        torch.testing.assert_close(e[p], (1 - w) * table[i] + w * table[i + 1])
    pos, sizes = _line(s)  # an example as long as the scale reads rows exactly
    torch.testing.assert_close(emb.embed[1](pos[0, :, 2], sizes[0, :, 2]), table[:s])


def test_fractional_never_aliases_long_sides():
    """Quantised buckets (32 before) gave positions of a 256-long side the same embedding."""
    for kind in FACTORIZED:
        emb = PosEmb(8, PosEmbConfig(kind=kind, coords="fractional", temporal=False))
        pos, sizes = _line(256)
        assert len(torch.unique(emb(pos, sizes)[0], dim=0)) == 256, kind


def test_fractional_depends_only_on_relative_position():
    for kind in FACTORIZED:
        emb = PosEmb(8, PosEmbConfig(kind=kind, coords="fractional"))
        # r = p / n: 0.4 for (2 of 5), (4 of 10), (6 of 15)
        pos = torch.tensor([[[0, 2, 2], [0, 4, 4], [0, 6, 6]]])
        sizes = torch.tensor([[[1, 5, 5], [1, 10, 10], [1, 15, 15]]])
        e = emb(pos, sizes)[0]
        torch.testing.assert_close(e[0], e[1], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(e[0], e[2], atol=1e-6, rtol=1e-5)


def test_sinusoidal_formula_and_fractional_at_the_scale_equals_absolute():
    u = torch.tensor([0.0, 1.0, 7.5])
    out = sinusoidal(u, 6)
    w = torch.tensor([10000.0 ** (-j / 3) for j in range(3)])
    torch.testing.assert_close(out, torch.cat([(u[:, None] * w).sin(), (u[:, None] * w).cos()], -1))
    assert sinusoidal(u, 7).shape == (3, 7) and torch.equal(sinusoidal(u, 7)[:, -1], torch.zeros(3))
    absolute = PosEmb(12, PosEmbConfig(kind="sinusoidal", temporal=False))
    fractional = PosEmb(12, PosEmbConfig(kind="sinusoidal", coords="fractional", fractional_scale=9, temporal=False))
    pos, sizes = _line(9)
    torch.testing.assert_close(fractional(pos, sizes), absolute(pos, sizes))


def test_fourier_formula():
    """phi(c) = W [sin(2 pi f c), cos(2 pi f c)] + b, c = p / max_size (absolute) or p / n (fractional)."""
    for coords, scale in (("absolute", 16), ("fractional", 5)):
        emb = PosEmb(4, PosEmbConfig(kind="fourier", coords=coords, max_size=(2, 16, 16), temporal=False))
        axis = emb.embed[1]
        pos, sizes = _line(5)
        c = torch.arange(5.0) / scale
        ang = 2 * math.pi * c[:, None] * axis.freq
        ref = axis.proj(torch.cat([ang.sin(), ang.cos()], -1))
        torch.testing.assert_close(axis(pos[0, :, 2], sizes[0, :, 2]), ref, atol=1e-5, rtol=1e-5)


def test_learned_2d_is_a_table_over_pairs():
    emb = PosEmb(6, PosEmbConfig(kind="learned_2d", max_size=(2, 4, 5), temporal=False))
    pos, sizes = _pos(1, 10, (1, 4, 5))
    torch.testing.assert_close(emb(pos, sizes)[0], emb.table[pos[0, :, 1] * 5 + pos[0, :, 2]])
    a, b = emb(torch.tensor([[[0, 1, 2], [0, 2, 1]]]), torch.ones(1, 2, 3, dtype=torch.long))[0]
    assert not torch.allclose(a, b)  # not separable: (1, 2) and (2, 1) have their own rows
    with pytest.raises(RuntimeError, match="max_size"):
        emb(torch.tensor([[[0, 4, 0]]]), torch.ones(1, 1, 3, dtype=torch.long))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 5), st.integers(1, 5))
def test_vit_1d_equals_bilinear_resize_of_the_reference_table(h, w, h0, w0):
    """The ViT baseline: the (h0 x w0) table resized like F.interpolate(bilinear, align_corners=False)."""
    emb = PosEmb(5, PosEmbConfig(kind="vit_1d", reference_grid=(h0, w0), temporal=False))
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([torch.zeros_like(yy), yy, xx], -1).reshape(1, -1, 3)
    sizes = torch.tensor([1, h, w]).expand(1, h * w, 3)
    grid = emb.table.detach().reshape(h0, w0, 5).permute(2, 0, 1)[None]
    ref = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).reshape(-1, 5)
    torch.testing.assert_close(emb(pos, sizes)[0].detach(), ref, atol=1e-6, rtol=1e-5)
    if (h, w) == (h0, w0):
        torch.testing.assert_close(resized_table(emb.table, (h0, w0), yy, xx, torch.tensor(h), torch.tensor(w)),
                                   emb.table.reshape(h0, w0, 5))


def test_baselines_add_a_learned_time_term():
    for kind in ("learned_2d", "vit_1d"):
        emb = PosEmb(6, PosEmbConfig(kind=kind, max_size=(4, 8, 8)))
        pos = torch.tensor([[[0, 1, 1], [3, 1, 1]]])
        sizes = torch.tensor([[[4, 2, 2], [4, 2, 2]]])
        e = emb(pos, sizes)[0]
        torch.testing.assert_close(e[1] - e[0], emb.time.table[3] - emb.time.table[0])


def test_learned_refuses_positions_beyond_the_table_and_absolute_differs():
    emb = PosEmb(8, PosEmbConfig(kind="learned", max_size=(2, 4, 4)))
    pos = torch.tensor([[[0, 3, 0], [0, 1, 0]]])
    e = emb(pos, torch.ones_like(pos))[0]
    assert not torch.allclose(e[0], e[1])
    with pytest.raises(RuntimeError, match="beyond the learned position table.*max_size"):
        emb(torch.tensor([[[0, 4, 0]]]), torch.ones(1, 1, 3, dtype=torch.long))
    assert PosEmbConfig().max_size[1:] == (256, 256)  # the default fit budget's longest side (1 x 256 patches)


def test_temporal_axis_switch():
    pos = torch.tensor([[[0, 1, 1], [3, 1, 1]]])
    sizes = torch.tensor([[[4, 2, 2], [4, 2, 2]]])
    with_t = PosEmb(12, PosEmbConfig(kind="sinusoidal"))(pos, sizes)[0]
    without = PosEmb(12, PosEmbConfig(kind="sinusoidal", temporal=False))(pos, sizes)[0]
    assert not torch.allclose(with_t[0], with_t[1])
    torch.testing.assert_close(without[0], without[1])


def test_concat_splits_width_per_axis():
    emb = PosEmb(10, PosEmbConfig(kind="sinusoidal", combine="concat"))
    assert sum(emb.widths) == 10 and len(emb.widths) == 3
    pos = torch.tensor([[[0, 2, 0], [0, 2, 5]]])
    e = emb(pos, torch.full_like(pos, 8))[0]
    w0, w1, _ = emb.widths
    torch.testing.assert_close(e[0, : w0 + w1], e[1, : w0 + w1])  # only the x part changes
    assert not torch.allclose(e[0, w0 + w1 :], e[1, w0 + w1 :])


def test_product_is_elementwise_and_learned_starts_near_one():
    emb = PosEmb(8, PosEmbConfig(kind="learned", combine="product"))
    pos, sizes = _pos(1, 5)
    out = emb(pos, sizes)
    assert (out - 1).abs().max() < 0.3
    parts = [axis(pos[..., a], sizes[..., a]) for axis, a in zip(emb.embed, emb.axes)]
    torch.testing.assert_close(out, parts[0] * parts[1] * parts[2])


def test_token_grid_sizes():
    grids = torch.tensor([[[1, 3, 4], [2, 5, 6], [0, 0, 0]]])
    seg = torch.tensor([[1, 1, 2, 0, 2]])
    sizes = token_grid_sizes(grids, seg)
    assert sizes.tolist() == [[[1, 3, 4], [1, 3, 4], [2, 5, 6], [1, 1, 1], [2, 5, 6]]]


def test_bad_config():
    assert set(KINDS) == {"learned", "sinusoidal", "fourier", "learned_2d", "vit_1d", "none"}
    with pytest.raises(ValueError, match="positional embedding 'rope'"):
        PosEmbConfig(kind="rope")
    with pytest.raises(ValueError, match="positional embedding 'fractional'"):
        PosEmbConfig(kind="fractional")  # a schema now: coords="fractional"
    with pytest.raises(ValueError, match="combination"):
        PosEmbConfig(combine="max")
    with pytest.raises(ValueError, match="coords 'relative'"):
        PosEmbConfig(coords="relative")
    with pytest.raises(ValueError, match="not factorized"):
        PosEmbConfig(kind="vit_1d", combine="concat")
    with pytest.raises(ValueError, match="not factorized"):
        PosEmbConfig(kind="learned_2d", coords="fractional")
    with pytest.raises(ValueError, match=">= 1"):
        PosEmbConfig(fractional_scale=0)

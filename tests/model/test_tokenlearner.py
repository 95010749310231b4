import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from patchpack.model.learned_layout import bucket_slots, learned_layout, slots_for
from patchpack.model.posemb import token_grid_sizes
from patchpack.model.segments import OFFSETS_3X3, grid_neighbours
from patchpack.model.tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig


def _packed(rows, d=6, seed=0, drop=None):
    """rows: list of lists of (T, H, W) grids -> x, segment_ids, positions, grids.

    ``drop``: ``{(row, slot): [token indices to drop]}`` (positions of the kept tokens stay).
    """
    g = torch.Generator().manual_seed(seed)
    drop = drop or {}
    e = max(len(r) for r in rows)
    l = max(sum(t * h * w for t, h, w in r) for r in rows) + 3
    seg = torch.zeros(len(rows), l, dtype=torch.int64)
    pos = torch.zeros(len(rows), l, 3, dtype=torch.int64)
    grids = torch.zeros(len(rows), e, 3, dtype=torch.int64)
    for b, r in enumerate(rows):
        o = 0
        for j, (t, h, w) in enumerate(r):
            tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
            p = torch.stack([tt.flatten(), yy.flatten(), xx.flatten()], -1)
            keep = [i for i in range(len(p)) if i not in drop.get((b, j), [])]
            n = len(keep)
            pos[b, o : o + n] = p[keep]
            seg[b, o : o + n] = j + 1
            grids[b, j] = torch.tensor([t, h, w])
            o += n
    x = torch.randn(len(rows), l, d, generator=g)
    return x, seg, pos, grids


def _learn(tl, x, seg, pos, grids, slots=None):
    lay = tl.layout(seg, pos, grids, slots or grids.shape[1])
    return tl(x, lay), lay


def _tl(**kw):
    torch.manual_seed(0)
    return TokenLearner(6, TokenLearnerConfig(**{"num_tokens": 3, "bottleneck": 8, **kw}))


def test_layout_for_images_and_empty_slots():
    x, seg, pos, grids = _packed([[(1, 2, 3), (1, 4, 1)], [(1, 1, 1)]])
    out, lay = _learn(_tl(), x, seg, pos, grids)
    assert out.shape == (2, 2 * 3, 6) and lay.slots == 2
    # examples numbered across rows: j = 0, 1 (row 0), 2 (row 1) -> places 0, 1 of row 0, place 0 of row 1
    assert lay.segment_ids.tolist() == [[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 0, 0]]
    assert lay.positions[0, :, 2].tolist() == [0, 1, 2, 0, 1, 2]
    assert lay.grids.tolist() == [[[1, 1, 3], [1, 1, 3]], [[1, 1, 3], [0, 0, 0]]]
    assert lay.example_place.tolist() == [[0, 1], [2, 4]]  # 4 = B * R: the empty slot's dump
    assert torch.equal(out[1, 3:], torch.zeros(3, 6))  # an empty place
    torch.testing.assert_close(lay.padding_fraction, torch.tensor(0.25))


def test_examples_fill_learned_rows_across_the_batch():
    """Rows of 3, 1 and 0 examples use 2 places per row, not max_per_seq = 3."""
    x, seg, pos, grids = _packed([[(1, 2, 2)] * 3, [(1, 1, 2)], [(1, 0, 0)]])
    tl = _tl(num_tokens=2)
    out, lay = _learn(tl, x, seg, pos, grids, slots=slots_for(4, 3))
    assert lay.slots == 2 and out.shape == (3, 2 * 2, 6)
    assert lay.segment_ids.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]]
    full, _ = _learn(tl, x, seg, pos, grids, slots=3)  # the same tokens at other places
    pooled = lambda o, l: l.to_slots(o.reshape(3, l.slots, 2 * 6))  # noqa: E731
    torch.testing.assert_close(pooled(out, lay), pooled(full, _learn(tl, x, seg, pos, grids, 3)[1]))


def test_bucketed_slots():
    assert [bucket_slots(n) for n in (1, 7, 8, 9, 15, 16, 17, 18, 33, 100)] == [1, 7, 8, 9, 15, 16, 18, 18, 36, 104]
    assert all(n <= bucket_slots(n) <= n * 9 / 8 for n in range(1, 2000))
    assert len({bucket_slots(n) for n in range(65, 129)}) == 8  # at most 8 lengths per doubling
    assert slots_for(688, 32) == 22 and slots_for(0, 4) == 1


def test_v11_weights_are_a_softmax_over_the_examples_own_tokens():
    x, seg, pos, grids = _packed([[(1, 3, 3), (1, 2, 5)]])
    const = torch.stack([torch.full((6,), 2.0), torch.full((6,), -1.0)])
    x = const[(seg[0] - 1).clamp(min=0)][None] * (seg > 0)[..., None]
    out, lay = _learn(_tl(num_tokens=4), x, seg, pos, grids)
    # weights sum to one over the example -> each learned token equals the shared vector
    torch.testing.assert_close(out[0, :4], const[0].expand(4, 6))
    torch.testing.assert_close(out[0, 4:], const[1].expand(4, 6))


def _dense_v10_maps(tl, x, seg, pos, grids, row, slot):
    """Reference V1.0 maps for one example: its LayerNorm-ed tokens on a dense [H, W] canvas,
    nn.Conv2d with zero padding, the holes (dropped tokens) re-zeroed after every layer."""
    t, h, w = grids[row, slot].tolist()
    m = seg[row] == slot + 1
    canvas = torch.zeros(1, x.shape[-1], h, w)
    there = torch.zeros(1, 1, h, w)
    ys, xs = pos[row, m, 1], pos[row, m, 2]
    canvas[0, :, ys, xs] = tl.norm(x[row, m]).T
    there[0, 0, ys, xs] = 1.0
    for i, conv in enumerate(tl.convs):
        canvas = conv(canvas) * there
        canvas = F.gelu(canvas) if i < len(tl.convs) - 1 else canvas
    return torch.sigmoid(canvas[0, :, ys, xs].T)  # [tokens, K]


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_v10_is_a_conv_stack_over_each_examples_own_grid(pooling):
    """Eq. 2 with alpha = four 3x3 convs + sigmoid over the example's grid (scenic TokenLearnerModule)."""
    tl = _tl(version="1.0", pooling=pooling)
    x, seg, pos, grids = _packed([[(1, 3, 4), (1, 2, 3)], [(1, 4, 4)]], drop={(1, 0): [5, 6, 10]})
    out, lay = _learn(tl, x, seg, pos, grids)
    with torch.no_grad():
        maps = tl.maps(x, lay)
        for row, slot, place in ((0, 0, 0), (0, 1, 1), (1, 0, 2)):
            m = seg[row] == slot + 1
            ref = _dense_v10_maps(tl, x, seg, pos, grids, row, slot)
            torch.testing.assert_close(maps[row, m], ref, atol=1e-5, rtol=1e-5)
            z = ref.T @ x[row, m]  # rho: sum over the example's tokens, [K, D]
            if pooling == "mean":
                z = z / int(m.sum())
            r, p = divmod(place, lay.slots)
            torch.testing.assert_close(out[r, p * 3 : p * 3 + 3], z, atol=1e-5, rtol=1e-5)


def test_v10_map_of_a_token_sees_its_neighbours_and_nothing_else():
    """A neighbour's change moves a token's map (a per-token MLP would not); a token of the next
    example, adjacent in the packed row, does not."""
    tl = _tl(version="1.0")
    x, seg, pos, grids = _packed([[(1, 3, 3), (1, 2, 2)]])
    lay = tl.layout(seg, pos, grids, 2)
    with torch.no_grad():
        base = tl.maps(x, lay)
        near = x.clone()
        near[0, 1] += 3.0 * torch.randn(6)  # (0, 1), a neighbour of token 4 = (1, 1) and of token 0
        moved = tl.maps(near, lay)
        assert not torch.allclose(moved[0, 4], base[0, 4]) and not torch.allclose(moved[0, 0], base[0, 0])
        other = x.clone()
        other[0, 9:13] += 3.0 * torch.randn(4, 6)  # every token of the second example, right after token 8 in the row
        across = tl.maps(other, lay)
        assert torch.equal(across[0, :9], base[0, :9])
        other[0, 13:] = 50.0  # padding
        assert torch.equal(tl.maps(other, lay)[0, 9:13], across[0, 9:13])


def test_no_leakage_and_permutation_invariance():
    for version in ("1.0", "1.1"):
        tl = _tl(num_tokens=2, version=version)
        x, seg, pos, grids = _packed([[(1, 3, 2), (1, 2, 2)]])
        base, _ = _learn(tl, x, seg, pos, grids)
        x2 = x.clone()
        x2[seg == 2] += 10.0 * torch.randn(int((seg == 2).sum()), 6)
        x2[seg == 0] = 99.0
        assert torch.equal(_learn(tl, x2, seg, pos, grids)[0][0, :2], base[0, :2])
        perm = torch.cat([torch.randperm(6), torch.arange(6, x.shape[1])])  # tokens in any order within the row
        torch.testing.assert_close(_learn(tl, x[:, perm], seg, pos[:, perm], grids)[0], base, atol=1e-5, rtol=1e-5)


def test_video_gets_k_tokens_per_time_step():
    for version in ("1.0", "1.1"):
        tl = _tl(num_tokens=2, max_frames=3, version=version)
        x, seg, pos, grids = _packed([[(3, 2, 2), (1, 2, 2)]])
        out, lay = _learn(tl, x, seg, pos, grids)
        assert lay.num_groups == 6 and out.shape == (1, 2 * 3 * 2, 6)
        assert lay.segment_ids[0].tolist() == [1] * 6 + [2, 2] + [0] * 4  # the image has one time step
        assert lay.positions[0, :6, 0].tolist() == [0, 0, 1, 1, 2, 2]
        x2 = x.clone()
        x2[0, 4:8] += 5.0 * torch.randn(4, 6)  # t = 1 of the video
        out2, _ = _learn(tl, x2, seg, pos, grids)
        torch.testing.assert_close(out2[0, [0, 1, 4, 5]], out[0, [0, 1, 4, 5]])  # other steps unchanged
        assert not torch.allclose(out2[0, 2:4], out[0, 2:4])


def test_more_frames_than_the_layout_holds_is_refused():
    tl = _tl(num_tokens=2)  # max_frames=1: a video is refused, not merged
    x, seg, pos, grids = _packed([[(2, 1, 2)]])
    with pytest.raises(RuntimeError, match="max_frames=1"):
        _learn(tl, x, seg, pos, grids)


def test_dropout_in_the_attention_and_fuser_mlps_is_training_only():
    cfg = TokenLearnerConfig(num_tokens=3, bottleneck=8, dropout=0.5)
    torch.manual_seed(0)
    tl, fuser = TokenLearner(6, cfg), TokenFuser(6, cfg)
    torch.nn.init.normal_(fuser.mix.weight)
    x, seg, pos, grids = _packed([[(1, 3, 3)]])
    lay = tl.layout(seg, pos, grids, 1)
    assert sum(isinstance(m, torch.nn.Dropout) for m in tl.modules()) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in fuser.modules()) == 3
    tl.eval(), fuser.eval()
    a = tl(x, lay)
    assert torch.equal(a, tl(x, lay)) and torch.equal(fuser(a, x, lay), fuser(a, x, lay))
    tl.train(), fuser.train()
    assert not torch.allclose(tl(x, lay), a) and not torch.allclose(fuser(a, x, lay), fuser(a, x, lay))


def test_fuser_restores_layout_without_leakage():
    cfg = TokenLearnerConfig(num_tokens=3, bottleneck=8, fuser=True)
    torch.manual_seed(0)
    tl, fuser = TokenLearner(6, cfg), TokenFuser(6, cfg)
    x, seg, pos, grids = _packed([[(1, 2, 3), (1, 3, 1)]])
    learned, lay = _learn(tl, x, seg, pos, grids)
    torch.nn.init.normal_(fuser.mix.weight)  # starts at zero (official init): make the mix non-trivial
    y = fuser(learned, x, lay)
    assert y.shape == x.shape
    assert torch.equal(y[seg == 0], torch.zeros_like(y[seg == 0]))
    tokens2 = learned.clone()
    tokens2[0, 3:] += 3.0 * torch.randn(3, 6)  # the second example's learned tokens
    y2 = fuser(tokens2, x, lay)
    assert torch.equal(y2[seg == 1], y[seg == 1])
    assert not torch.allclose(y2[seg == 2], y[seg == 2])


def _brute_neighbours(seg, pos, grids):
    b, l = seg.shape
    out = torch.full((b, l, 9), l)
    for r in range(b):
        where = {(int(seg[r, i]), *pos[r, i].tolist()): i for i in range(l) if seg[r, i] > 0}
        for i in range(l):
            if seg[r, i] == 0:
                continue
            s, (t, y, x) = int(seg[r, i]), pos[r, i].tolist()
            _, h, w = grids[r, s - 1].tolist()
            for o, (dy, dx) in enumerate(OFFSETS_3X3):
                if 0 <= y + dy < h and 0 <= x + dx < w and (s, t, y + dy, x + dx) in where:
                    out[r, i, o] = where[(s, t, y + dy, x + dx)]
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
       st.integers(0, 2**31), st.booleans())
def test_grid_neighbours_match_brute_force(grids_list, seed, shuffle):
    g = torch.Generator().manual_seed(seed)
    n = sum(t * h * w for t, h, w in grids_list)
    drop = {(0, j): torch.randperm(t * h * w, generator=g)[: (t * h * w) // 3].tolist()
            for j, (t, h, w) in enumerate(grids_list)}
    _, seg, pos, grids = _packed([grids_list], drop=drop)
    if shuffle:
        perm = torch.randperm(seg.shape[1], generator=g)
        seg, pos = seg[:, perm], pos[:, perm]
    got = grid_neighbours(seg, pos, token_grid_sizes(grids, seg))
    assert torch.equal(got, _brute_neighbours(seg, pos, grids)), n


def test_bad_config():
    assert TokenLearnerConfig(fuser=True).fuser == "per_block" and TokenLearnerConfig(fuser=False).fuser == "none"
    for bad in (dict(num_tokens=0), dict(version="1"), dict(version="2"), dict(fuser="twice"), dict(max_frames=0),
                dict(pooling="max"), dict(dropout=1.0), dict(learned_slots=0), dict(at_layer=-1)):
        with pytest.raises(ValueError):
            TokenLearnerConfig(**bad)
    with pytest.raises(ValueError, match="unknown TokenLearner version '1'; expected one of"):
        TokenLearnerConfig(version="1")


def test_layout_refuses_a_batch_beyond_static_slots():
    x, seg, pos, grids = _packed([[(1, 1, 1)] * 3, [(1, 1, 1)]])
    with pytest.raises(RuntimeError, match="learned_slots=1"):
        learned_layout(seg, pos, grids, num_tokens=2, frames=1, slots=1)

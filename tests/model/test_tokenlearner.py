import pytest
import torch

from patchpack.model.tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig, token_groups


def _packed(rows, d=6, seed=0):
    """rows: list of lists of (T, H, W) grids -> x, segment_ids, positions, grids."""
    g = torch.Generator().manual_seed(seed)
    e = max(len(r) for r in rows)
    l = max(sum(t * h * w for t, h, w in r) for r in rows) + 3
    seg = torch.zeros(len(rows), l, dtype=torch.int64)
    pos = torch.zeros(len(rows), l, 3, dtype=torch.int64)
    grids = torch.zeros(len(rows), e, 3, dtype=torch.int64)
    for b, r in enumerate(rows):
        o = 0
        for j, (t, h, w) in enumerate(r):
            n = t * h * w
            tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
            pos[b, o : o + n] = torch.stack([tt.flatten(), yy.flatten(), xx.flatten()], -1)
            seg[b, o : o + n] = j + 1
            grids[b, j] = torch.tensor([t, h, w])
            o += n
    x = torch.randn(len(rows), l, d, generator=g)
    return x, seg, pos, grids


def test_layout_for_images_and_empty_slots():
    torch.manual_seed(0)
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=3, bottleneck=8))
    x, seg, pos, grids = _packed([[(1, 2, 3), (1, 4, 1)], [(1, 1, 1)]])
    out = tl(x, seg, pos, grids)
    assert out.x.shape == (2, 2 * 3, 6) and out.groups == 2
    assert out.segment_ids.tolist() == [[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 0, 0]]
    assert out.positions[0, :, 2].tolist() == [0, 1, 2, 0, 1, 2]
    assert out.grids.tolist() == [[[1, 1, 3], [1, 1, 3]], [[1, 1, 3], [0, 0, 0]]]
    assert torch.equal(out.x[1, 3:], torch.zeros(3, 6))  # empty slot


def test_weights_are_a_softmax_over_the_examples_own_tokens():
    torch.manual_seed(0)
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=4, bottleneck=8))
    x, seg, pos, grids = _packed([[(1, 3, 3), (1, 2, 5)]])
    # each example's tokens share one feature vector (plus a per-token feature for the MLP to vary on)
    const = torch.stack([torch.full((6,), 2.0), torch.full((6,), -1.0)])
    x = const[(seg[0] - 1).clamp(min=0)][None] * (seg > 0)[..., None]
    out = tl(x, seg, pos, grids)
    # weights sum to one over the example -> each learned token equals the shared vector
    torch.testing.assert_close(out.x[0, :4], const[0].expand(4, 6))
    torch.testing.assert_close(out.x[0, 4:], const[1].expand(4, 6))


def test_no_leakage_and_permutation_invariance():
    torch.manual_seed(0)
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=2, bottleneck=8))
    x, seg, pos, grids = _packed([[(1, 3, 2), (1, 2, 2)]])
    base = tl(x, seg, pos, grids).x
    x2 = x.clone()
    x2[seg == 2] += 10.0
    x2[seg == 0] = 99.0
    torch.testing.assert_close(tl(x2, seg, pos, grids).x[0, :2], base[0, :2], rtol=0, atol=0)
    perm = torch.cat([torch.randperm(6), torch.arange(6, x.shape[1])])
    torch.testing.assert_close(tl(x[:, perm], seg, pos[:, perm], grids).x, base, atol=1e-6, rtol=1e-5)


def test_video_gets_k_tokens_per_time_step():
    torch.manual_seed(0)
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=2, bottleneck=8, max_frames=3))
    x, seg, pos, grids = _packed([[(3, 2, 2), (1, 2, 2)]])
    out = tl(x, seg, pos, grids)
    assert out.groups == 6 and out.x.shape == (1, 2 * 3 * 2, 6)
    assert out.segment_ids[0].tolist() == [1] * 6 + [2, 2] + [0] * 4  # image has one time step
    assert out.positions[0, :6, 0].tolist() == [0, 0, 1, 1, 2, 2]
    # a time step's learned tokens depend only on that step's tokens
    x2 = x.clone()
    x2[0, 4:8] += 5.0  # t = 1 of the video
    out2 = tl(x2, seg, pos, grids)
    torch.testing.assert_close(out2.x[0, [0, 1, 4, 5]], out.x[0, [0, 1, 4, 5]])
    assert not torch.allclose(out2.x[0, 2:4], out.x[0, 2:4])


def test_groups_and_static_frames():
    seg = torch.tensor([[1, 1, 2, 0]])
    pos = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert token_groups(seg, pos, num_slots=2, frames=2).tolist() == [[0, 1, 2, 4]]
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=2))  # max_frames=1: a video is refused, not merged
    x, seg, pos, grids = _packed([[(2, 1, 2)]])
    with pytest.raises(RuntimeError, match="max_frames=1"):
        tl(x, seg, pos, grids)


def test_layout_is_per_row_with_a_fixed_length():
    """Each row holds K per group of its own examples, compacted to the front; the length is static."""
    torch.manual_seed(0)
    rows = [[(1, 2, 2)] * 5, [(3, 2, 2), (1, 1, 1)], [(1, 4, 4)]]
    x, seg, pos, grids = _packed(rows)
    k = 2
    out = TokenLearner(6, TokenLearnerConfig(num_tokens=k, bottleneck=8, max_frames=3))(x, seg, pos, grids)
    assert out.x.shape[1] == k * 3 * 5  # K * max_frames * E, whatever the batch holds
    assert out.segment_ids[0].tolist()[:10] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert out.segment_ids[1].tolist()[:8] == [1] * 6 + [2, 2] and out.positions[1, :8, 0].tolist() == [0, 0, 1, 1, 2, 2, 0, 0]
    assert out.segment_ids[2].tolist()[:2] == [1, 1]
    used = (out.segment_ids > 0).sum(1).tolist()
    assert used == [10, 8, 2]  # sum over the row's examples of K * T_i
    tight = TokenLearner(6, TokenLearnerConfig(num_tokens=k, bottleneck=8, max_frames=3, learned_len=10))
    tight.load_state_dict(TokenLearner(6, TokenLearnerConfig(num_tokens=k, bottleneck=8)).state_dict())
    small = tight(x, seg, pos, grids)
    assert small.x.shape[1] == 10 and (small.segment_ids > 0).sum(1).tolist() == used
    with pytest.raises(RuntimeError, match="learned_len=8"):
        TokenLearner(6, TokenLearnerConfig(num_tokens=k, max_frames=3, learned_len=8))(x, seg, pos, grids)


def test_v1_is_sigmoid_sum_pooling_over_the_group():
    torch.manual_seed(0)
    tl = TokenLearner(6, TokenLearnerConfig(num_tokens=3, bottleneck=8, version="1"))
    x, seg, pos, grids = _packed([[(1, 2, 3), (1, 3, 1)]])
    out = tl(x, seg, pos, grids)
    with torch.no_grad():
        w = torch.sigmoid(tl.attn(tl.norm(x)))  # [B, L, K]
        for slot in (1, 2):
            m = seg[0] == slot
            ref = w[0, m].T @ x[0, m]  # [K, D]: sum over the example's tokens
            torch.testing.assert_close(out.x[0, (slot - 1) * 3 : slot * 3], ref, atol=1e-5, rtol=1e-5)


def test_fuser_restores_layout_without_leakage():
    torch.manual_seed(0)
    cfg = TokenLearnerConfig(num_tokens=3, bottleneck=8, fuser=True)
    tl, fuser = TokenLearner(6, cfg), TokenFuser(6, cfg)
    x, seg, pos, grids = _packed([[(1, 2, 3), (1, 3, 1)]])
    learned = tl(x, seg, pos, grids)
    torch.nn.init.normal_(fuser.mix.weight)  # starts at zero (official init): make the mix non-trivial
    y = fuser(learned.x, x, learned.token_rank)
    assert y.shape == x.shape
    assert torch.equal(y[seg == 0], torch.zeros_like(y[seg == 0]))
    tokens2 = learned.x.clone()
    tokens2[0, 3:] += 3.0 * torch.randn(3, 6)  # the second example's learned tokens
    y2 = fuser(tokens2, x, learned.token_rank)
    torch.testing.assert_close(y2[seg == 1], y[seg == 1], rtol=0, atol=0)
    assert not torch.allclose(y2[seg == 2], y[seg == 2])


def test_bad_config():
    assert TokenLearnerConfig(fuser=True).fuser == "per_block" and TokenLearnerConfig(fuser=False).fuser == "none"
    for bad in (dict(num_tokens=0), dict(version="2"), dict(fuser="twice"), dict(num_tokens=4, learned_len=6),
                dict(max_frames=0)):
        with pytest.raises(ValueError):
            TokenLearnerConfig(**bad)
    with pytest.raises(ValueError):
        TokenLearnerConfig(num_tokens=0)
    with pytest.raises(ValueError):
        TokenLearnerConfig(at_layer=-1)

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.loader.batch import collate, cu_seqlens
from patchpack.pack import pack_lengths
from patchpack.tokenize import Tokens, patchify, unpatchify


def example(key, gh, gw, p=2, label=0, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (gh * p, gw * p, 3), dtype=np.uint8)
    patches, pos = patchify(img, p)
    return Tokens(key, patches, pos, (1, gh, gw), label), img


@settings(max_examples=60, deadline=None)
@given(grids=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=25),
       seq_len=st.integers(25, 60), emax=st.integers(1, 5))
def test_collate_contract(grids, seq_len, emax):
    exs = [example(f"k{i}", gh, gw, seed=i) for i, (gh, gw) in enumerate(grids)]
    rows_idx = pack_lengths([len(t) for t, _ in exs], seq_len, max_per_seq=emax, buffer_size=4)
    rows = [[exs[i][0] for i in r] for r in rows_idx]
    b = collate(rows, seq_len, max_per_seq=emax)
    assert b.patches.dtype == torch.uint8 and b.segment_ids.dtype == torch.int32
    assert b.labels.dtype == torch.int64 and b.grids.shape == (len(rows), emax, 3)
    seen = set()
    for r, row in enumerate(rows_idx):
        seg = b.segment_ids[r].numpy()
        nz = seg[seg > 0]
        assert np.all(np.diff(nz) >= 0) and np.all(seg[len(nz):] == 0)  # contiguous, padding at the end
        for j, i in enumerate(row):
            tok, img = exs[i]
            mask = seg == j + 1
            assert mask.sum() == len(tok)
            pos = b.positions[r][mask].numpy()
            g = b.grids[r, j].numpy()
            assert np.all(pos >= 0) and np.all(pos < g)  # positions inside the grid
            back = unpatchify(b.patches[r][mask].numpy(), pos, tuple(g), 2)
            np.testing.assert_array_equal(back, img)
            assert b.sample_keys[r][j] == f"k{i}"
            seen.add(i)
        assert np.all(b.patches[r][seg == 0].numpy() == 0)
        assert np.all(b.labels[r, len(row):].numpy() == -1) and np.all(b.grids[r, len(row):].numpy() == 0)
    assert seen == set(range(len(exs)))


def test_cu_seqlens():
    seg = torch.tensor([[1, 1, 2, 0], [1, 2, 2, 2]], dtype=torch.int32)
    cu, mx = cu_seqlens(seg)
    assert cu.tolist() == [0, 2, 3, 4, 5, 8] and mx == 3


def test_collate_errors_and_helpers():
    t, _ = example("a", 3, 3)
    with pytest.raises(ValueError):
        collate([[t]], seq_len=4)
    with pytest.raises(ValueError):
        collate([[t, t]], seq_len=100, max_per_seq=1)
    with pytest.raises(ValueError):
        collate([[]], seq_len=10)
    b = collate([[t], []], seq_len=12, max_per_seq=2)
    assert b.num_examples == 1 and b.num_tokens == 9 and b.padding_fraction == pytest.approx(1 - 9 / 24)
    assert b == collate([[t], []], seq_len=12, max_per_seq=2)
    assert b.to("cpu").sample_keys == b.sample_keys

"""collate writes tokens straight into fresh buffers: the padding must still be zero."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.loader.batch import collate
from patchpack.tokenize import Tokens


def _tokens(key: str, n: int, value: int) -> Tokens:
    patches = np.full((n, 12), value, np.uint8)
    positions = np.full((n, 3), value, np.int32)
    return Tokens(key, patches, positions, (1, n, 1), 0)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(st.integers(1, 9), max_size=3), min_size=1, max_size=4))
def test_padding_is_zero_and_tokens_in_place(rows):
    for _ in range(3):  # reused allocations hold old bytes: only the padding writes may clear them
        np.full((len(rows), 32, 12), 255, np.uint8)
        seqs = [[_tokens(f"k{i}{j}", n, 200 + j) for j, n in enumerate(r)] for i, r in enumerate(rows)]
        b = collate(seqs, 32, max_per_seq=3, token_dim=12)
        for i, r in enumerate(rows):
            used = sum(r)
            assert torch.all(b.patches[i, used:] == 0) and torch.all(b.positions[i, used:] == 0)
            assert torch.all(b.segment_ids[i, used:] == 0)
            off = 0
            for j, n in enumerate(r):
                assert torch.all(b.patches[i, off:off + n] == 200 + j)
                assert torch.all(b.segment_ids[i, off:off + n] == j + 1)
                off += n

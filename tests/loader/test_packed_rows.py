"""``preprocess --packed`` shards served as they are: stored rows, exactly once, resumable, no repacking."""

from __future__ import annotations

import numpy as np
import pytest
from media import make_samples, write_shards

from patchpack.fit import FitConfig
from patchpack.loader import LoaderConfig, make_loader
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.pack import PackConfig
from patchpack.storage.manifest import list_shards
from patchpack.storage.reader import iter_shard_sequences

P, L, E = 8, 64, 6


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    src = write_shards(tmp_path_factory.mktemp("src"), make_samples(60, seed=4), per_shard=11)
    out = tmp_path_factory.mktemp("packed")
    cfg = PreprocessConfig(fit=FitConfig(patch_size=P, max_patches=48), pack=PackConfig(seq_len=L, buffer_size=8,
                                                                                    max_per_seq=E), seed=2)
    preprocess(src, out, cfg, packed=True, progress=False)
    rows = {tuple(t.key for t in seq): seq for p in list_shards(out) for seq in iter_shard_sequences(p)}
    return str(out), rows


def _cfg(**kw):
    return LoaderConfig(fit=FitConfig(patch_size=P, max_patches=48), pack=PackConfig(seq_len=L, max_per_seq=E),
                        batch_size=4, **kw)


def test_rows_served_as_stored(packed):
    folder, rows = packed
    batches = list(make_loader(folder, _cfg()))
    served = [tuple(k) for b in batches for k in b.sample_keys]
    assert sorted(served) == sorted(rows)  # every stored row once, none repacked
    for b in batches:
        assert b.patches.shape[1:] == (L, P * P * 3) and b.grids.shape[1] == E
        for i, keys in enumerate(b.sample_keys):
            seq = rows[tuple(keys)]
            n = sum(len(t) for t in seq)
            np.testing.assert_array_equal(b.patches[i, :n].numpy(), np.concatenate([t.patches for t in seq]))
            np.testing.assert_array_equal(b.positions[i, :n].numpy(), np.concatenate([t.positions for t in seq]))
            assert not b.patches[i, n:].any() and not b.segment_ids[i, n:].any()
            seg = np.repeat(np.arange(1, len(seq) + 1), [len(t) for t in seq])
            np.testing.assert_array_equal(b.segment_ids[i, :n].numpy(), seg)
            assert b.labels[i, : len(seq)].tolist() == [t.label for t in seq]
            assert [tuple(g) for g in b.grids[i, : len(seq)].tolist()] == [tuple(t.grid) for t in seq]


def test_exactly_once_over_workers(packed):
    folder, rows = packed
    served = [tuple(k) for b in make_loader(folder, _cfg(), num_workers=2) for k in b.sample_keys]
    assert sorted(served) == sorted(rows)


def test_resume_continues_after_last_row(packed):
    folder, _ = packed
    full = list(make_loader(folder, _cfg(shuffle_shards=True, seed=7)))
    loader = make_loader(folder, _cfg(shuffle_shards=True, seed=7))
    first = []
    for b in loader:
        first.append(b)
        if len(first) == 3:
            break
    state = loader.state_dict()
    again = make_loader(folder, _cfg(shuffle_shards=True, seed=7))
    again.load_state_dict(state)
    rest = list(again)
    assert [b.sample_keys for b in first + rest] == [b.sample_keys for b in full]
    assert all(a == b for a, b in zip(first + rest, full))


def test_repack_option_and_short_seq_len(packed):
    folder, rows = packed
    repacked = list(make_loader(folder, _cfg(packed_shards="repack")))
    keys = sorted(k for b in repacked for ks in b.sample_keys for k in ks)
    assert keys == sorted(k for r in rows for k in r)
    with pytest.raises(ValueError, match="packed_shards='repack'"):
        make_loader(folder, _cfg().with_overrides(seq_len=48)).__iter__().__next__()

"""patchpack Arrow shards: exact round trip, zero-copy memory-mapped reads, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchpack.storage.format import ShardFormatError
from patchpack.storage.manifest import list_shards, sha256_file
from patchpack.storage.reader import ShardReader, iter_shard_examples, iter_shard_sequences, read_shard_metadata
from patchpack.storage.writer import ShardWriter
from patchpack.tokenize import Tokens, patchify, tubeletize

P = 4


def _example(key: str, gh: int, gw: int, seed: int, label: int = -1, keep=None) -> Tokens:
    img = np.random.default_rng(seed).integers(0, 256, (gh * P, gw * P, 3), dtype=np.uint8)
    patches, pos = patchify(img, P)
    if keep is not None:
        patches, pos = patches[keep], pos[keep]
    meta = {"source_size": (gh * 10, gw * 10), "source_shard": "in-000.tar", "kind": "image"}
    return Tokens(key, patches, pos, (1, gh, gw), label, meta)


def _same(a: Tokens, b: Tokens) -> None:
    assert a.key == b.key and a.label == b.label and tuple(a.grid) == tuple(b.grid)
    np.testing.assert_array_equal(a.patches, b.patches)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert b.patches.dtype == np.uint8 and b.positions.dtype == np.int32


def test_round_trip_examples_and_metadata(tmp_path):
    exs = [_example(f"k{i}", 1 + i % 5, 1 + i % 3, i, label=i) for i in range(25)]
    exs.append(_example("dropped", 3, 3, 99, keep=np.array([0, 4, 8])))  # a subset of the grid
    path = tmp_path / "s.arrow"
    with ShardWriter(path, patch_size=P, metadata={"config": {"seed": 3}}, rows_per_batch=7) as w:
        for e in exs:
            w.write(e)
    assert w.info.rows == w.info.examples == 26 and w.info.sha256 == sha256_file(path)
    assert w.info.tokens == sum(len(e) for e in exs) and w.info.bytes == path.stat().st_size
    back = list(iter_shard_examples(path))
    assert len(back) == len(exs)
    for a, b in zip(exs, back):
        _same(a, b)
    assert back[0].meta == {"kind": "image", "source_size": (0 * 10 + 10, 10), "source_shard": "in-000.tar"}
    md = read_shard_metadata(path)
    assert md["format"] == "examples" and md["patch_size"] == P and md["config"] == {"seed": 3} and md["rows"] == 26
    # the file is an uncompressed Arrow IPC file with the documented columns
    with pa.ipc.open_file(pa.memory_map(str(path))) as f:
        assert f.schema.field("tokens").type == pa.large_binary()
        assert "key" in f.schema.names and "source_shard" in f.schema.names


def test_reads_are_zero_copy_views_of_the_mapping(tmp_path):
    path = tmp_path / "s.arrow"
    with ShardWriter(path, patch_size=P) as w:
        for i in range(10):
            w.write(_example(f"k{i}", 4, 4, i))
    reader = ShardReader(path)
    toks = list(reader)
    # all patches of one record batch share one buffer; none is writable (a copy would be)
    base = np.frombuffer(reader._file.get_record_batch(0).column("tokens").buffers()[2], np.uint8)
    for t in toks:
        assert not t.patches.flags.writeable
        assert np.shares_memory(t.patches, base)


def test_random_access_and_keys(tmp_path):
    path = tmp_path / "s.arrow"
    exs = [_example(f"k{i}", 2, 2, i) for i in range(11)]
    with ShardWriter(path, patch_size=P, rows_per_batch=3) as w:
        for e in exs:
            w.write(e)
    r = ShardReader(path)
    assert len(r) == 11 and r.keys() == [e.key for e in exs]
    _same(exs[7], r[7])
    _same(exs[-1], r[-1])
    with pytest.raises(IndexError):
        r[11]


def test_packed_sequences_round_trip(tmp_path):
    exs = [_example(f"k{i}", 2 + i % 2, 3, i, label=i) for i in range(5)]
    path = tmp_path / "p.arrow"
    with ShardWriter(path, "packed", patch_size=P) as w:
        w.write_sequence(exs[:2], source_tokens=[6, 9])
        w.write_sequence(exs[2:])
    assert w.info.rows == 2 and w.info.examples == 5
    seqs = list(iter_shard_sequences(path))
    assert [[t.key for t in s] for s in seqs] == [["k0", "k1"], ["k2", "k3", "k4"]]
    for a, b in zip(exs, [t for s in seqs for t in s]):
        _same(a, b)
    assert seqs[0][1].meta["source_tokens"] == 9
    assert [t.key for t in iter_shard_examples(path)] == [e.key for e in exs]
    with pytest.raises(ShardFormatError):
        next(iter_shard_sequences(tmp_path / "missing.arrow"))


def test_video_tubelets(tmp_path):
    v = np.random.default_rng(0).integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)
    patches, pos = tubeletize(v, P, 2)
    tok = Tokens("v", patches, pos, (2, 2, 3), 5, {"kind": "video", "fps": 8.0})
    path = tmp_path / "v.arrow"
    with ShardWriter(path, patch_size=P, tubelet=2) as w:
        w.write(tok)
    (back,) = iter_shard_examples(path)
    _same(tok, back)
    assert back.meta["fps"] == 8.0


def test_atomic_write_leaves_no_partial_shard(tmp_path):
    path = tmp_path / "s.arrow"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, patch_size=P, rows_per_batch=1) as w:
            w.write(_example("a", 2, 2, 0))
            assert any(p.name.startswith(".s.arrow.tmp-") for p in tmp_path.iterdir())
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="uint8"):
        with ShardWriter(path, patch_size=P) as w:
            w.write(Tokens("bad", np.zeros((1, P * P * 3), np.float32), np.zeros((1, 3), np.int32), (1, 1, 1)))
    assert os.listdir(tmp_path) == []


def test_not_a_shard_is_a_typed_error(tmp_path):
    bad = tmp_path / "x.arrow"
    bad.write_bytes(b"not arrow at all")
    with pytest.raises(ShardFormatError):
        ShardReader(bad)
    plain = tmp_path / "plain.arrow"
    with pa.ipc.new_file(str(plain), pa.schema([("a", pa.int64())])) as w:
        w.write_table(pa.table({"a": [1]}))
    with pytest.raises(ShardFormatError, match="format"):
        ShardReader(plain)


def test_list_shards_orders_by_name_and_skips_temporaries(tmp_path):
    for name in ["b.arrow", "a.arrow", ".a.arrow.tmp-1-x", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_shards(tmp_path)] == ["a.arrow", "b.arrow"]
    assert list_shards(tmp_path / "a.arrow") == [tmp_path / "a.arrow"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    grids=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=8),
    drop=st.lists(st.booleans(), min_size=8, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path, grids, drop, seed):
    rng = np.random.default_rng(seed)
    exs = []
    for i, (gh, gw) in enumerate(grids):
        keep = None
        if drop[i]:
            k = int(rng.integers(1, gh * gw + 1))
            keep = np.sort(rng.choice(gh * gw, k, replace=False))
        exs.append(_example(f"k{i}", gh, gw, seed + i, label=i, keep=keep))
    path = tmp_path / f"h{seed}.arrow"
    with ShardWriter(path, patch_size=P, rows_per_batch=3) as w:
        for e in exs:
            w.write(e)
    for a, b in zip(exs, iter_shard_examples(path), strict=True):
        _same(a, b)


def test_read_arrow_shard_as_samples_and_probe(tmp_path):
    from patchpack.errors import ErrorRecord, SampleError
    from patchpack.fit import FitConfig
    from patchpack.config import LoaderConfig
    from patchpack.pipeline.admission import admit_stored
    from patchpack.sources import StoredSample
    from patchpack.sources.arrow import read_arrow_shard

    path = tmp_path / "s.arrow"
    exs = [_example(f"k{i}", 2 + i, 3, i, label=i) for i in range(5)]
    with ShardWriter(path, patch_size=P) as w:
        for e in exs:
            w.write(e)
    recs = list(read_arrow_shard(str(path), start=1, owns=lambda i: i % 2 == 1))
    assert [r.index for r in recs] == [1, 3] and all(isinstance(r, StoredSample) for r in recs)
    assert [r.key for r in recs] == ["k1", "k3"] and recs[0].shard == str(path) and recs[0].members == {}
    _same(exs[3], recs[1].tokens)
    pr = admit_stored(recs[1], LoaderConfig().with_overrides(patch_size=P), 0, 0, 0.0).plan
    assert pr.grid == (1, 5, 3) and pr.size == (5 * P, 3 * P) and pr.source_size == (50, 30) and pr.tokens == 15
    # a sampled fit mode advances the generator exactly as the online fit does
    fit = FitConfig(patch_size=P, mode="side-uniform", side_min=8, side_max=64)
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    from patchpack.fit import fit_grid, replay_fit_draw

    replay_fit_draw("image", recs[1].tokens.meta["source_size"], fit, a)
    fit_grid(50, 30, fit, b)
    assert a.random() == b.random()
    with pytest.raises(SampleError, match="patch size"):
        admit_stored(recs[0], LoaderConfig().with_overrides(patch_size=P * 2), 0, 0, 0.0)
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(b"nope")
    (rec,) = read_arrow_shard(str(bad))
    assert isinstance(rec, ErrorRecord) and rec.kind == "unreadable" and rec.key == str(bad)

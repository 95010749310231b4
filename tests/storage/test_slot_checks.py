"""Every stored slot is checked before a view is made: a tampered row is a BadRow (a ``bad-row``
record in the loader), never a slot of 0 tokens, a slot longer than its grid, positions outside
it or repeated, an exception or a dead worker. Shards are tampered cell by cell and, where the
manifest is read, its sha256 recomputed: only the row checks can catch what is wrong."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from shardkit import P, example, read_table, refresh_manifest, tamper, with_cells, write_table

from patchpack.storage.reader import BadRow, ShardReader
from patchpack.storage.writer import ShardWriter

ROW0 = [example("a0", 2, 3, 0), example("a1", 3, 3, 1, keep=np.array([0, 2, 4, 8]))]
ROW1 = [example("b0", 2, 2, 2), example("b1", 1, 3, 3)]  # 4 + 3 tokens
ROW2 = [example("c0", 3, 2, 4, keep=np.array([1, 2, 5]))]


@pytest.fixture
def packed(tmp_path):
    path = tmp_path / "p.arrow"
    with ShardWriter(path, "packed", patch_size=P, rows_per_batch=2) as w:
        for seq in (ROW0, ROW1, ROW2):
            w.write_sequence(seq)
    return path


@pytest.fixture
def examples(tmp_path):
    path = tmp_path / "e.arrow"
    with ShardWriter(path, patch_size=P, rows_per_batch=2) as w:
        for i, (gh, gw) in enumerate([(2, 3), (2, 2), (3, 3), (1, 4)]):
            w.write(example(f"k{i}", gh, gw, i, keep=np.array([0, 1, 3]) if i == 2 else None))
    return path


def _checked(path) -> list:
    return list(ShardReader(path).iter_checked())


def _positions(tokens) -> bytes:
    return np.concatenate([t.positions for t in tokens]).astype(np.int32).tobytes()


@pytest.mark.parametrize("lengths,words", [
    ([0, 7], "example 1 of 2: 0 tokens"),
    ([1, 6], "example 2 of 2: 6 tokens, more than its grid (1, 1, 3)"),
    ([5, 2], "example 1 of 2: 5 tokens, more than its grid (1, 2, 2)"),
    ([-1, 8], "example 1 of 2: -1 tokens"),
])
def test_packed_lengths_moved_between_slots_are_a_bad_row(packed, tmp_path, lengths, words):
    bad = tamper(packed, tmp_path / "bad.arrow", 1, lengths=lengths)  # the sum, so the bytes, still agree
    rows = _checked(bad)
    assert [isinstance(r, BadRow) for r in rows] == [False, True, False]
    assert rows[1].row == 1 and words in rows[1].message and rows[1].key in ("b0", "b1")
    assert [t.key for t in rows[0]] == ["a0", "a1"] and [t.key for t in rows[2]] == ["c0"]


def test_packed_positions_outside_their_own_grid_or_repeated_are_a_bad_row(packed, tmp_path):
    pos = np.concatenate([t.positions for t in ROW1]).astype(np.int32)
    outside = pos.copy()
    outside[4] = (0, 1, 0)  # inside b0's 2x2 grid, outside b1's 1x3 one
    rows = _checked(tamper(packed, tmp_path / "out.arrow", 1, positions=outside.tobytes()))
    assert isinstance(rows[1], BadRow) and rows[1].key == "b1"
    assert rows[1].message == "example 2 of 2: positions fall outside the grid (1, 1, 3)"
    repeated = pos.copy()
    repeated[3] = repeated[0]
    rows = _checked(tamper(packed, tmp_path / "rep.arrow", 1, positions=repeated.tobytes()))
    assert isinstance(rows[1], BadRow) and rows[1].key == "b0" and "repeat a cell" in rows[1].message
    shuffled = pos.copy()
    shuffled[[0, 3]] = shuffled[[3, 0]]  # out of raster order, still distinct: fine
    rows = _checked(tamper(packed, tmp_path / "shuf.arrow", 1, positions=shuffled.tobytes()))
    assert not isinstance(rows[1], BadRow) and rows[1][0].positions.tolist()[0] == pos[3].tolist()


def test_an_example_row_of_no_tokens_is_a_bad_row(examples, tmp_path):
    bad = tamper(examples, tmp_path / "bad.arrow", 1, num_tokens=0, tokens=b"", positions=b"")
    rows = _checked(bad)
    assert [isinstance(r, BadRow) for r in rows] == [False, True, False, False]
    assert rows[1] == BadRow(1, "k1", "0 tokens; every example holds at least one")


def test_an_example_longer_than_its_grid_or_with_repeated_positions_is_a_bad_row(examples, tmp_path):
    # 4 tokens of a 2x2 grid claimed for a 1x2 grid, positions inside it (so repeated)
    pos = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 1]], np.int32).tobytes()
    rows = _checked(tamper(examples, tmp_path / "long.arrow", 1, grid=[1, 1, 2], positions=pos))
    assert rows[1] == BadRow(1, "k1", "4 tokens, more than its grid (1, 1, 2) has cells (2)")
    pos = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 1]], np.int32).tobytes()
    rows = _checked(tamper(examples, tmp_path / "rep.arrow", 2, positions=pos))
    assert rows[2] == BadRow(2, "k2", "positions repeat a cell of the grid (1, 3, 3)")


def test_read_arrow_shard_makes_a_bad_row_record_and_goes_on(examples, tmp_path):
    from patchpack.errors import ErrorRecord
    from patchpack.sources.arrow import read_arrow_shard

    bad = tamper(examples, tmp_path / "bad.arrow", 1, num_tokens=0, tokens=b"", positions=b"")
    recs = list(read_arrow_shard(bad))
    assert [r.key for r in recs] == ["k0", "k1", "k2", "k3"]
    assert isinstance(recs[1], ErrorRecord) and recs[1].kind == "bad-row" and "row 1: 0 tokens" in recs[1].message
    assert all(len(r.tokens) >= 1 for r in recs if not isinstance(r, ErrorRecord))


def test_a_batch_arrow_cannot_validate_is_bad_rows_and_the_next_batch_reads(packed, tmp_path):
    table = read_table(packed)
    (whole,) = table.combine_chunks().to_batches()
    keys = whole.column(0)
    off = np.array([0, 2, 99, 5], np.int32)  # row 1's keys run past the key values
    broken = pa.ListArray.from_buffers(keys.type, 3, [None, pa.py_buffer(off.tobytes())], children=[keys.values])
    good = table.slice(0, 2)  # the first two rows again, as a second batch
    path = tmp_path / "broken.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_batch(pa.RecordBatch.from_arrays([broken, *whole.columns[1:]], schema=table.schema))
        w.write_table(good)
    rows = _checked(path)
    assert [isinstance(r, BadRow) for r in rows] == [True, True, True, False, False]
    assert "Arrow's validation" in rows[0].message and rows[0].row == 0 and rows[2].row == 2


def test_tampered_example_rows_in_a_preprocessed_folder_are_records_in_the_loader(tmp_path):
    """The loader over a folder whose manifest agrees with a tampered shard: bad-row records, the rest served."""
    from media import make_samples, write_shards

    from patchpack import make_loader
    from patchpack.fit import FitConfig
    from patchpack.offline import PreprocessConfig, preprocess
    from patchpack.storage.manifest import list_shards

    src = write_shards(tmp_path / "src", make_samples(6), per_shard=6)
    out = tmp_path / "out"
    preprocess(src, out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48)), progress=False)
    (shard,) = list_shards(out)
    table = read_table(shard)
    keys = table.column("key").to_pylist()
    grid = table.column("grid")[4].as_py()
    pos = np.zeros((grid[0] * grid[1] * grid[2], 3), np.int32).tobytes()  # every token in cell (0, 0, 0)
    table = with_cells(table, 2, num_tokens=0, tokens=b"", positions=b"")
    write_table(with_cells(table, 4, positions=pos), shard)
    refresh_manifest(out)
    loader = make_loader(str(out), seq_len=64, patch_size=8, max_patches=48, batch_size=2, verify="sha256",
                         shuffle_shards=False)
    served = sorted(k for b in loader for row in b.sample_keys for k in row)
    assert served == sorted(keys[:2] + [keys[3], keys[5]])
    assert sorted((e.key, e.kind) for e in loader.errors) == [(keys[2], "bad-row"), (keys[4], "bad-row")]


@pytest.mark.parametrize("packed_shards", ["serve", "repack"])
def test_tampered_packed_rows_in_a_preprocessed_folder_are_records_in_the_loader(tmp_path, packed_shards):
    from media import make_samples, write_shards

    from patchpack.fit import FitConfig
    from patchpack.loader import LoaderConfig, make_loader
    from patchpack.offline import PreprocessConfig, preprocess
    from patchpack.pack import PackConfig
    from patchpack.storage.manifest import list_shards

    src = write_shards(tmp_path / "src", make_samples(12, seed=4), per_shard=12)
    out = tmp_path / "out"
    pack = PackConfig(seq_len=64, buffer_size=8, max_per_seq=6)
    preprocess(src, out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48), pack=pack, seed=2),
               packed=True, progress=False)
    (shard,) = list_shards(out)
    lengths = read_table(shard).column("lengths").to_pylist()
    row = next(i for i, ls in enumerate(lengths) if len(ls) >= 2)
    victims = read_table(shard).column("keys")[row].as_py()
    tamper(shard, shard, row, lengths=[0, lengths[row][0] + lengths[row][1], *lengths[row][2:]])
    refresh_manifest(out)
    cfg = LoaderConfig(fit=FitConfig(patch_size=8, max_patches=48), pack=PackConfig(seq_len=64, max_per_seq=6),
                       batch_size=2, packed_shards=packed_shards)
    loader = make_loader(str(out), cfg)
    served = [k for b in loader for ks in b.sample_keys for k in ks]
    assert not set(served) & set(victims) and len(served) + len(victims) == sum(map(len, lengths))
    assert [(e.key, e.kind) for e in loader.errors] == [(k, "bad-row") for k in victims]  # each example reported
    assert "example 1 of" in loader.errors[0].message and "dropped with its row" in loader.errors[1].message

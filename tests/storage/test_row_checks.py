"""Stored rows are checked against themselves before any view is made; shards against the manifest."""

from __future__ import annotations

import hostile as H
import pytest

from patchpack.fit import FitConfig
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.storage.format import ShardFormatError
from patchpack.storage.manifest import check_shard, list_shards
from patchpack.storage.reader import BadRow, ShardReader


@pytest.fixture
def stored(tmp_path):
    src = tmp_path / "src.tar"
    src.write_bytes(H.tar_bytes([m for i in range(5) for m in H.ok_sample(i)]))
    out = tmp_path / "out"
    preprocess([str(src)], out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48)), progress=False)
    return list_shards(out)[0]


@pytest.mark.parametrize("columns,words", [
    (dict(num_tokens=999), "bytes"),
    (dict(grid=[1, 100000, 100000]), "grid"),
    (dict(grid=[0, 3, 5]), "grid"),
    (dict(token_dim=7), "token_dim"),
    (dict(positions=b"\x00" * 12), "positions hold 12 bytes"),
    (dict(grid=[1, 2, 2]), "full grid|outside the grid"),
    (dict(meta="[[["), "meta"),
])
def test_tampered_row_is_a_bad_row_and_the_others_load(stored, tmp_path, columns, words):
    bad = H.tamper_arrow_rows(stored, tmp_path / "bad.arrow", 2, **columns)
    reader = ShardReader(bad)
    rows = list(reader.iter_checked())
    assert [isinstance(r, BadRow) for r in rows] == [False, False, True, False, False]
    assert rows[2].row == 2 and rows[2].key == "s0002" and any(w in rows[2].message for w in words.split("|"))
    with pytest.raises(ShardFormatError):
        list(reader)


def test_check_shard_modes(stored):
    assert check_shard(stored, "sha256") is None and check_shard(stored, "size") is None
    H.flip_file_byte(stored, 3000)
    assert "sha256" in check_shard(stored, "sha256")
    assert check_shard(stored, "size") is None and check_shard(stored, "none") is None
    with open(stored, "ab") as fh:
        fh.write(b"x")
    assert "bytes" in check_shard(stored, "size")
    with pytest.raises(ValueError):
        check_shard(stored, "md5")


def _with_metadata(src, dst, **changes):
    """A copy of shard ``src`` whose ``patchpack.*`` schema metadata has ``changes`` (raw bytes values)."""
    import pyarrow as pa

    with pa.memory_map(str(src)) as f:
        table = pa.ipc.open_file(f).read_all()
    meta = dict(table.schema.metadata)
    meta.update({f"patchpack.{k}".encode(): v for k, v in changes.items()})
    table = table.replace_schema_metadata(meta)
    with pa.OSFile(str(dst), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return dst


@pytest.mark.parametrize("changes,words", [
    (dict(config=b"[" * 100_000 + b"]" * 100_000), "undecodable"),
    (dict(config=b"\xff\xfe"), "undecodable"),
    (dict(config=b"[1, 2]"), "config is not an object"),
    (dict(patch_size=b'"16"'), "patch_size"),
    (dict(patch_size=b"0"), "patch_size"),
    (dict(tubelet=b"1e9"), "tubelet"),
    (dict(channels=b"7"), "channels"),
])
def test_tampered_schema_metadata_is_a_format_error_and_the_loader_goes_on(stored, tmp_path, changes, words):
    from patchpack import make_loader

    bad = _with_metadata(stored, tmp_path / "bad.arrow", **changes)
    with pytest.raises(ShardFormatError, match=words):
        ShardReader(bad)
    loader = make_loader([str(bad), str(stored)], seq_len=64, patch_size=8, max_patches=48, batch_size=2,
                         verify="none", shuffle_shards=False)
    keys = [k for b in loader for row in b.sample_keys for k in row]
    assert sorted(keys) == [f"s{i:04d}" for i in range(5)]
    assert [(e.key, e.kind) for e in loader.errors] == [(str(bad), "unreadable")]

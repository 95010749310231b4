"""Extending the sources: a registered reader handles its urls through read_shard / the loader's stream."""

from __future__ import annotations

import pytest

from patchpack.errors import ErrorRecord
from patchpack.sources import Sample, reader_for, read_shard, read_task, register_source, source_names, ShardTask
from patchpack.sources import _READERS


@pytest.fixture
def restore_readers():
    saved = list(_READERS)
    yield
    _READERS[:] = saved


def test_builtin_readers_are_registered():
    assert {"tar", "folder", "arrow"} <= set(source_names())


def test_a_registered_reader_takes_its_urls(restore_readers):
    def reader(url, start, owns):
        for i in range(start, 4):
            if owns(i):
                yield Sample(f"{url}/{i}", url, {"txt": b"x"}, i)
        yield ErrorRecord(url, url, "source", "shard", "end of made-up shard")

    register_source("memory", reader, lambda url: url.startswith("mem:"))
    assert reader_for("mem:a") is reader and source_names()[0] == "memory"
    recs = list(read_shard("mem:a", 1))
    assert [r.index for r in recs if isinstance(r, Sample)] == [1, 2, 3]
    assert isinstance(recs[-1], ErrorRecord)
    shared = list(read_task(ShardTask("mem:b", 1, 2)))
    assert [r.key for r in shared if isinstance(r, Sample)] == ["mem:b/1", "mem:b/3"]
    assert reader_for("x.tar") is not reader  # other urls keep their reader

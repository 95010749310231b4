"""Extending the sources: a registered reader handles its urls through read_shard / the loader's stream."""

from __future__ import annotations

import pytest

from patchpack.errors import ErrorRecord
from patchpack.registry import RegistryError
from patchpack.sources import SOURCES, ReadOptions, Sample, ShardTask, read_shard, read_task, reader_for, register_source


@pytest.fixture
def memory_source():
    seen: list[ReadOptions] = []

    def reader(url, start, owns, options):
        seen.append(options)
        for i in range(start, 4):
            if owns(i):
                yield Sample(f"{url}/{i}", url, {"txt": b"x"}, i)
        yield ErrorRecord(url, url, "source", "shard", "end of made-up shard")

    register_source("memory", reader, lambda url: url.startswith("mem:"))
    yield reader, seen
    SOURCES.unregister("memory")


def test_builtin_readers_are_registered():
    assert {"tar", "folder", "arrow"} <= set(SOURCES.names())


def test_a_registered_reader_takes_its_urls(memory_source):
    reader, seen = memory_source
    assert reader_for("mem:a") is reader
    recs = list(read_shard("mem:a", 1, max_member_bytes=123))
    assert [r.index for r in recs if isinstance(r, Sample)] == [1, 2, 3]
    assert isinstance(recs[-1], ErrorRecord)
    assert seen[-1] == ReadOptions(max_member_bytes=123)  # the typed options reach the reader
    shared = list(read_task(ShardTask("mem:b", 1, 2)))
    assert [r.key for r in shared if isinstance(r, Sample)] == ["mem:b/1", "mem:b/3"]
    assert reader_for("x.tar") is not reader  # other urls keep their reader


def test_a_taken_name_is_refused_unless_overridden(memory_source):
    reader, _ = memory_source
    with pytest.raises(RegistryError, match="already registered; pass override=True"):
        register_source("memory", lambda *a: iter(()), lambda url: False)
    assert reader_for("mem:a") is reader
    register_source("memory", reader, lambda url: url.startswith("mem2:"), override=True)
    assert reader_for("mem2:x") is reader


def test_an_unknown_option_is_one_line():
    with pytest.raises(TypeError, match="max_member_byte"):
        read_shard("x.tar", max_member_byte=3)

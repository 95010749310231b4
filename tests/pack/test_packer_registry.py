"""Extending the packers: one class per algorithm, looked up by name; rejections are returned."""

from __future__ import annotations

import pytest

from patchpack.pack import (
    ALGORITHMS, PACKERS, BFDPacker, Emitted, FirstFitPacker, NextFitPacker, PackConfig, Packer, make_packer,
    register_packer,
)
from patchpack.pack.buffer import Bin
from patchpack.registry import RegistryError


def test_each_builtin_algorithm_has_its_class():
    assert set(ALGORITHMS) <= set(PACKERS.names())
    for name, cls in [("bfd", BFDPacker), ("first-fit", FirstFitPacker), ("next-fit", NextFitPacker)]:
        assert type(make_packer(PackConfig(seq_len=8, algorithm=name))) is cls


def test_push_and_flush_return_rejections():
    for name in ALGORITHMS:
        p = make_packer(PackConfig(seq_len=8, buffer_size=2, algorithm=name))
        out = p.push("big", 9)
        assert isinstance(out, Emitted) and list(out) == [] and out.rejected == [("big", 9)]
        kept = p.push("a", 3)
        assert kept.rejected == [] and not hasattr(p, "rejected")
        flushed = p.flush()
        assert [s.handles for s in flushed] == [["a"]] and flushed.rejected == []


def test_a_registered_packer_is_used_by_name_through_its_public_hooks():
    @register_packer("one-per-seq")
    class OnePerSequence(Packer):
        def place(self, arrival, length, handle):
            b = Bin(self.config.seq_len - length, arrival)
            b.items.append((arrival, length, handle))
            return Emitted([self.emit(b)])

    try:
        p = make_packer(PackConfig(seq_len=8, algorithm="one-per-seq"))
        out = [s for n in [3, 4, 9, 2] for s in p.push(n, n)] + p.flush()
        assert [s.lengths for s in out] == [[3], [4], [2]]
        with pytest.raises(TypeError):
            register_packer("bad", object)
        with pytest.raises(RegistryError, match="override=True"):
            register_packer("one-per-seq", BFDPacker)
    finally:
        PACKERS.unregister("one-per-seq")
    with pytest.raises(ValueError, match="register_packer"):
        PackConfig(algorithm="one-per-seq")


def test_an_unknown_algorithm_names_the_close_one():
    with pytest.raises(ValueError, match="did you mean 'first-fit'"):
        PackConfig(algorithm="firstfit")

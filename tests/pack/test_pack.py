"""Invariants of the packers: every example packed exactly once or reported, L and Emax respected."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.pack import ALGORITHMS, OversizeError, PackConfig, make_packer, pack_lengths, pack_offline

lengths_st = st.lists(st.integers(1, 80), min_size=0, max_size=300)


def run(cfg, lengths):
    """Push every length; returns the packer, the emitted sequences and the rejected ``(handle, length)``."""
    p = make_packer(cfg)
    out, rejected = [], []
    for i, n in enumerate(lengths):
        emitted = p.push(i, n)
        out += emitted
        rejected += emitted.rejected
    flushed = p.flush()
    out += flushed
    rejected += flushed.rejected
    return p, out, rejected


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 120), max_size=300),
    seq_len=st.integers(1, 100),
    emax=st.one_of(st.none(), st.integers(1, 6)),
    buffer=st.integers(1, 40),
    algorithm=st.sampled_from(ALGORITHMS),
    max_open=st.integers(0, 3),
)
def test_every_example_packed_once_or_rejected(lengths, seq_len, emax, buffer, algorithm, max_open):
    cfg = PackConfig(seq_len, emax, buffer, algorithm=algorithm, max_open=max_open)
    p, out, refused = run(cfg, lengths)
    packed = [h for s in out for h in s.handles]
    rejected = [h for h, _ in refused]
    assert [n for _, n in refused] == [lengths[h] for h in rejected]
    assert sorted(packed + rejected) == list(range(len(lengths)))
    assert rejected == [i for i, n in enumerate(lengths) if n > seq_len]
    for s in out:
        assert 1 <= len(s.handles) and sum(s.lengths) <= seq_len
        assert emax is None or len(s.handles) <= emax
        assert s.lengths == [lengths[h] for h in s.handles]
    assert p.held == 0


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, buffer=st.integers(1, 30), algorithm=st.sampled_from(("bfd", "first-fit")))
def test_age_bound(lengths, buffer, algorithm):
    cfg = PackConfig(seq_len=100, buffer_size=buffer, max_wait=2 * buffer, algorithm=algorithm)
    p = make_packer(cfg)
    for i, n in enumerate(lengths):
        for s in p.push(i, n):
            for a in s.arrivals:
                assert s.emitted_at - 1 - a <= cfg.effective_max_wait
        assert p.held <= cfg.effective_max_wait + 1


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, seq_len=st.integers(80, 200), buffer=st.integers(1, 50))
def test_deterministic(lengths, seq_len, buffer):
    a = pack_lengths(lengths, seq_len, buffer_size=buffer)
    b = pack_lengths(list(lengths), seq_len, buffer_size=buffer)
    assert a == b


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, cut=st.integers(0, 300), max_open=st.integers(0, 2))
def test_state_dict_resume_equals_uninterrupted(lengths, cut, max_open):
    cfg = PackConfig(seq_len=90, buffer_size=7, max_per_seq=4, max_open=max_open)
    _, full, _ = run(cfg, lengths)
    cut = min(cut, len(lengths))
    p = make_packer(cfg)
    first = [s for i, n in enumerate(lengths[:cut]) for s in p.push(i, n)]
    q = make_packer(cfg)
    q.load_state_dict(p.state_dict())
    rest = [s for i, n in enumerate(lengths[cut:], start=cut) for s in q.push(i, n)] + q.flush()
    assert [s.handles for s in first + rest] == [s.handles for s in full]


def test_oversize_policies():
    with pytest.raises(OversizeError):
        run(PackConfig(seq_len=10, oversize="raise"), [3, 11])
    p, out, rejected = run(PackConfig(seq_len=10, oversize="truncate"), [3, 11])
    # 3 + 10 > L: two sequences, the 11-token example packed with its first 10 tokens
    assert {tuple(s.handles): s.lengths for s in out} == {(0,): [3], (1,): [10]} and rejected == []
    assert p.truncated_tokens == 1
    with pytest.raises(ValueError):
        make_packer(PackConfig(seq_len=10)).push("k", 0)


def test_bfd_fills_better_than_next_fit_and_near_offline():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 257, 20_000).tolist()
    L = 512
    pad = lambda seqs: 1 - sum(lengths) / (len(seqs) * L)  # noqa: E731
    bfd = pad(pack_lengths(lengths, L))
    nf = pad(pack_lengths(lengths, L, algorithm="next-fit"))
    ref = pad(pack_offline(lengths, L))
    assert bfd < nf / 5
    assert bfd <= ref + 0.005


def test_offline_reference_is_a_valid_packing():
    lengths = [5, 3, 4, 4, 8, 1, 9, 2]
    seqs = pack_offline(lengths, seq_len=8, max_per_seq=2)
    assert sorted(i for s in seqs for i in s) == [0, 1, 2, 3, 4, 5, 7]  # 9 > L is left out
    assert all(sum(lengths[i] for i in s) <= 8 and len(s) <= 2 for s in seqs)


def test_config_validation():
    for bad in [dict(seq_len=0), dict(max_per_seq=0), dict(buffer_size=0), dict(algorithm="x"), dict(oversize="x"),
                dict(buffer_size=10, max_wait=5), dict(max_open=-1)]:
        with pytest.raises(ValueError):
            PackConfig(**bad)

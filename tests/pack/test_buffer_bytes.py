"""The packer's byte budget: ``buffer_bytes`` bounds the bytes held, beside ``buffer_size``."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.pack import PackConfig, make_packer


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 64), st.integers(1, 5_000)), min_size=1, max_size=200),
       st.integers(1_000, 50_000))
def test_held_bytes_stay_under_the_budget_plus_one_example(examples, budget):
    """Handles are ``(id, nbytes)``; the packer learns sizes through ``size_of``."""
    cfg = PackConfig(seq_len=64, buffer_size=1024, buffer_bytes=budget)
    packer = make_packer(cfg, size_of=lambda h: h[1])
    out = []
    for i, (length, nbytes) in enumerate(examples):
        out += packer.push((i, nbytes), length)
        assert packer.held_bytes <= budget + 5_000  # at most the last arrival above the budget
        assert packer.held_bytes == sum(h[1] for h in _held(packer))
    out += packer.flush()
    assert packer.held_bytes == 0
    assert sorted(h[0] for s in out for h in s.handles) == list(range(len(examples)))  # nothing lost


def _held(packer):
    state = packer.state_dict()
    return [x[2] for x in state["buffer"]] + [x[2] for _, _, items in state["open"] for x in items]


def test_the_byte_budget_builds_sequences_before_the_count_does():
    cfg = PackConfig(seq_len=100, buffer_size=1000, buffer_bytes=10_000)
    big = make_packer(cfg, size_of=lambda h: 3_000)  # 3 MB photos, scaled down
    small = make_packer(cfg, size_of=lambda h: 10)
    emitted_big = sum(len(big.push(i, 10)) for i in range(50))
    emitted_small = sum(len(small.push(i, 10)) for i in range(50))
    assert emitted_big > 0 and emitted_small == 0
    assert big.held_bytes <= 12_000


def test_without_size_of_or_budget_nothing_changes():
    lengths = [5, 3, 4, 4, 8, 1, 7, 2] * 10
    runs = []
    for kw in [dict(), dict(size_of=lambda h: 10**9)]:
        cap = None if kw else 1
        p = make_packer(PackConfig(seq_len=8, buffer_size=4, buffer_bytes=cap), **kw)
        runs.append([s.lengths for n in lengths for s in p.push(n, n)] + [s.lengths for s in p.flush()])
    assert runs[0] == runs[1]


def test_resume_recounts_the_held_bytes():
    cfg = PackConfig(seq_len=64, buffer_size=50, buffer_bytes=40_000)
    a = make_packer(cfg, size_of=lambda h: h[1])
    for i in range(30):
        a.push((i, 1_000 + i), 1 + i % 60)
    state = json.loads(json.dumps(a.state_dict()))
    b = make_packer(cfg, size_of=lambda h: h[1])
    b.load_state_dict(state)
    assert b.held_bytes == a.held_bytes > 0
    rest_a = [s.lengths for i in range(30, 80) for s in a.push((i, 1_000 + i), 1 + i % 60)] + \
        [s.lengths for s in a.flush()]
    rest_b = [s.lengths for i in range(30, 80) for s in b.push([i, 1_000 + i], 1 + i % 60)] + \
        [s.lengths for s in b.flush()]
    assert rest_a == rest_b


def test_default_budget_is_documented():
    assert PackConfig().buffer_bytes == 64 * 2**20

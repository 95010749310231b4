import json

from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.errors import ErrorRecord
from patchpack.pack import PackConfig, make_packer
from patchpack.stats import PackStats


def packed_stats(lengths, L=64):
    p, s = make_packer(PackConfig(seq_len=L, buffer_size=8)), PackStats()
    for seq in [q for i, n in enumerate(lengths) for q in p.push(i, n)] + p.flush():
        s.add_sequence(seq, L)
    for n in lengths:
        s.add_example(n, max(1, n // 2), (1, 2, n), (480, 640))
    return s


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(1, 64), max_size=60), b=st.lists(st.integers(1, 64), max_size=60))
def test_merge_equals_joint_counts_and_json_roundtrip(a, b):
    sa, sb = packed_stats(a), packed_stats(b)
    merged = PackStats.from_dict(json.loads(json.dumps(sa.to_dict()))).merge(sb)
    assert merged.examples == len(a) + len(b) == sum(k * v for k, v in merged.examples_per_seq.items())
    assert merged.tokens == sum(a) + sum(b)
    assert merged.capacity == 64 * merged.sequences
    assert 0.0 <= merged.padding_fraction <= 1.0
    assert sum(merged.tokens_per_example.values()) == len(a) + len(b)
    assert merged.wait_max == max(sa.wait_max, sb.wait_max)


def test_errors_and_summary():
    s = PackStats()
    s.add_error(ErrorRecord("k1", "s.tar", "decode", "corrupt", "bad"))
    s.add_error("corrupt")
    s.add_error("empty")
    assert s.errors == 3 and s.error_kinds == {"corrupt": 2, "empty": 1}
    assert "corrupt=2" in s.summary()
    d = s.to_dict()
    assert d["padding_fraction"] == 0.0 and d["errors"] == 3

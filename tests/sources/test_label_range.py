"""Label sets: integers in ``[0, LABEL_MAX]`` without repeats, or a ``bad-label`` record, never another exception."""

from __future__ import annotations

import json

import hostile as H
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.errors import SampleError
from patchpack.sources import Sample
from patchpack.sources.labels import LABEL_MAX, MAX_LABELS, sample_labels


def labels(ext: str, raw: bytes) -> tuple[int, ...]:
    return sample_labels(Sample("k", "s", {ext: raw}), "cls" if ext == "cls" else "json:label")


def bad(ext: str, raw: bytes) -> str:
    with pytest.raises(SampleError) as e:
        labels(ext, raw)
    assert e.value.kind == "bad-label"
    return e.value.message


@pytest.mark.parametrize("name", sorted(H.POISON_LABELS))
def test_poison_labels_are_bad_label(name):
    bad(*H.POISON_LABELS[name])


@pytest.mark.parametrize("ext,raw,want", [
    ("cls", b" 7\n", (7,)), ("cls", b"-1", ()), ("cls", str(LABEL_MAX).encode(), (LABEL_MAX,)), ("cls", b"", ()),
    ("cls", b" \n", ()), ("json", b'{"label": 3}', (3,)), ("json", b'{"label": "4"}', (4,)),
    ("json", b'{"label": 5.0}', (5,)), ("json", b"{}", ()), ("json", b'{"label": -1}', ()),
    ("json", b'{"other": [1]}', ()),
])
def test_single_class_labels(ext, raw, want):
    assert labels(ext, raw) == want


@pytest.mark.parametrize("ext,raw,want", [
    ("cls", b"1,4 7", (1, 4, 7)), ("cls", b"3\n1\n2\n", (3, 1, 2)), ("cls", b"5, 5 ,2", (5, 2)),
    ("cls", b"2\t0", (2, 0)), ("json", b'{"label": [4, 1, 4, "9", 2.0]}', (4, 1, 9, 2)), ("json", b'{"label": []}', ()),
    ("json", b'{"label": [-1]}', ()),
])
def test_label_sets_keep_order_and_drop_repeats(ext, raw, want):
    assert labels(ext, raw) == want


@pytest.mark.parametrize("ext,raw", [
    ("cls", str(LABEL_MAX + 1).encode()), ("cls", b"-2"), ("cls", b"1,,2"), ("cls", b"1,"), ("cls", b"1,-1"),
    ("cls", b"-1 -1"), ("cls", b"\xff"), ("cls", "٣".encode()), ("cls", b"1.5"), ("json", b'{"label": 2.5}'),
    ("json", b'{"label": true}'), ("json", b'{"label": null}'), ("json", b"[1]"), ("json", b'{"label": [1, -1]}'),
    ("json", b'{"label": [[1]]}'), ("json", b'{"label": [1, {"a": 2}]}'), ("json", b'{"label": [1, true]}'),
    ("json", b'{"label": [1, "x"]}'), ("json", b'{"label": [1e30]}'), ("json", b'{"label": "3 4"}'),
])
def test_out_of_range_malformed_or_nested_labels_are_bad(ext, raw):
    bad(ext, raw)


def test_huge_label_lists_are_bad():
    assert len(labels("cls", " ".join(map(str, range(MAX_LABELS))).encode())) == MAX_LABELS
    assert "more than" in bad("cls", " ".join(map(str, range(MAX_LABELS + 1))).encode())
    assert "more than" in bad("json", json.dumps({"label": list(range(MAX_LABELS + 1))}).encode())
    assert "larger than" in bad("cls", b"1 " * 2**20)


def test_any_member_of_integers_can_hold_the_labels():
    hf = Sample("k", "s", {"label": b"3", "cls": b"7"})  # a Hugging Face ClassLabel column, read as a member
    assert sample_labels(hf, "label") == (3,) and sample_labels(hf, "cls") == (7,)
    assert sample_labels(Sample("k", "s", {}), "label") == ()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["cls", "json"]), st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: ('{"label": %s}' % v).encode(), st.one_of(st.integers(), st.floats(), st.text(max_size=8))),
    st.builds(lambda v: json.dumps({"label": v}).encode(), st.recursive(
        st.one_of(st.integers(-3, 2**33), st.floats(), st.text(max_size=4), st.booleans(), st.none()),
        lambda inner: st.lists(inner, max_size=5), max_leaves=12)),
    st.builds(lambda v: ",".join(v).encode(), st.lists(st.text("0123456789-+ ,\n", max_size=6), max_size=6)),
))
def test_any_bytes_give_a_label_set_in_range_or_bad_label(ext, raw):
    try:
        got = labels(ext, raw)
    except SampleError as e:
        assert e.kind == "bad-label"
    else:
        assert isinstance(got, tuple) and len(set(got)) == len(got)
        assert all(type(v) is int and 0 <= v <= LABEL_MAX for v in got)

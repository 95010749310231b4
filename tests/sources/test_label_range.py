"""Labels are integers in ``[-1, LABEL_MAX]`` or a ``bad-label`` record: never another exception."""

from __future__ import annotations

import hostile as H
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.errors import SampleError
from patchpack.sources import Sample, sample_label
from patchpack.sources.labels import LABEL_MAX


def label(ext: str, raw: bytes) -> int:
    return sample_label(Sample("k", "s", {ext: raw}), "cls" if ext == "cls" else "json:label")


@pytest.mark.parametrize("name", sorted(H.POISON_LABELS))
def test_poison_labels_are_bad_label(name):
    ext, raw = H.POISON_LABELS[name]
    with pytest.raises(SampleError) as e:
        label(ext, raw)
    assert e.value.kind == "bad-label"


@pytest.mark.parametrize("ext,raw,want", [
    ("cls", b" 7\n", 7), ("cls", b"-1", -1), ("cls", str(LABEL_MAX).encode(), LABEL_MAX), ("json", b'{"label": 3}', 3),
    ("json", b'{"label": "4"}', 4), ("json", b'{"label": 5.0}', 5), ("json", b"{}", -1),
])
def test_ordinary_labels(ext, raw, want):
    assert label(ext, raw) == want


@pytest.mark.parametrize("ext,raw", [("cls", str(LABEL_MAX + 1).encode()), ("cls", b"-2"), ("json", b'{"label": 2.5}'),
                                     ("json", b'{"label": true}'), ("json", b"[1]")])
def test_out_of_range_or_not_integral(ext, raw):
    with pytest.raises(SampleError) as e:
        label(ext, raw)
    assert e.value.kind == "bad-label"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["cls", "json"]), st.one_of(st.binary(max_size=64),
       st.builds(lambda v: ('{"label": %s}' % v).encode(), st.one_of(st.integers(), st.floats(), st.text(max_size=8)))))
def test_any_bytes_give_an_int_in_range_or_bad_label(ext, raw):
    try:
        v = label(ext, raw)
    except SampleError as e:
        assert e.kind == "bad-label"
    else:
        assert isinstance(v, int) and -1 <= v <= LABEL_MAX

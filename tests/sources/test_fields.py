"""Text fields: a str, None for an absent optional field, or a ``bad-field`` record; never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.errors import SampleError
from patchpack.sources import Sample
from patchpack.sources.fields import DEFAULT_FIELD_MAX_BYTES, MAX_JSON_BYTES, sample_field, sample_fields


def field(members: dict[str, bytes], spec: str, max_bytes: int = DEFAULT_FIELD_MAX_BYTES):
    return sample_field(Sample("k", "s", members), spec, max_bytes)


def bad(members: dict[str, bytes], spec: str, max_bytes: int = DEFAULT_FIELD_MAX_BYTES) -> str:
    with pytest.raises(SampleError) as e:
        field(members, spec, max_bytes)
    assert e.value.kind == "bad-field" and e.value.stage == "source"
    return e.value.message


def test_member_and_json_fields_are_read_exactly():
    members = {"txt": "a cat on a mat\n".encode(), "json": json.dumps({"alt": "ünï ✓", "n": 3}).encode()}
    assert field(members, "txt") == "a cat on a mat\n"
    assert field(members, "TXT") == "a cat on a mat\n"  # member names are lower case
    assert field(members, "json:alt") == "ünï ✓"
    assert field({"txt": b""}, "txt") == ""
    assert sample_fields(Sample("k", "s", members), ["txt", "json:alt", "json:title?", "caption?"]) == {
        "txt": "a cat on a mat\n", "json:alt": "ünï ✓", "json:title": None, "caption": None}


def test_absent_fields_are_none_when_optional_else_bad():
    assert field({}, "txt?") is None and field({"json": b"{}"}, "json:alt?") is None
    assert field({"json": b'{"alt": null}'}, "json:alt?") is None
    assert field({}, "json:alt?") is None
    assert "missing (no 'txt' member)" in bad({}, "txt")
    assert "missing (no 'alt' in json)" in bad({"json": b'{"x": "y"}'}, "json:alt")
    assert "missing" in bad({"json": b'{"alt": null}'}, "json:alt")


@pytest.mark.parametrize("members,spec,why", [
    ({"txt": b"caf\xe9"}, "txt", "not UTF-8"),
    ({"txt": b"a\x00b"}, "txt", "NUL"),
    ({"txt": b"x" * 101}, "txt", "over the cap of 100"),
    ({"txt": "é".encode() * 51}, "txt", "over the cap of 100"),
    ({"json": json.dumps({"alt": "x" * 101}).encode()}, "json:alt", "over the cap of 100"),
    ({"json": json.dumps({"alt": "é" * 51}).encode()}, "json:alt", "over the cap of 100"),
    ({"json": b'{"alt": "a\\u0000b"}'}, "json:alt", "NUL"),
    ({"json": b'{"alt": "\\ud800"}'}, "json:alt", "lone surrogate"),
    ({"json": b'{"alt": 3}'}, "json:alt", "not a string"),
    ({"json": b'{"alt": ["a"]}'}, "json:alt?", "not a string"),
    ({"json": b'{"alt": {"en": "a"}}'}, "json:alt", "not a string"),
    ({"json": b'{"alt": true}'}, "json:alt", "not a string"),
    ({"json": b"[1]"}, "json:alt", "not an object"),
    ({"json": b"{nope"}, "json:alt?", "not valid JSON"),
    ({"json": b"\xff\xfe"}, "json:alt", "not valid JSON"),
    ({"json": b'{"alt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"}, "json:alt", "RecursionError"),
    ({"json": b'{"alt": "a", "pad": "' + b"x" * MAX_JSON_BYTES + b'"}'}, "json:alt", "json member of"),
])
def test_hostile_fields_are_bad_field(members, spec, why):
    assert why in bad(members, spec, max_bytes=100)


def test_the_first_bad_field_of_several_raises():
    with pytest.raises(SampleError) as e:
        sample_fields(Sample("k", "s", {"txt": b"ok", "json": b"{}"}), ["txt", "json:alt"])
    assert e.value.kind == "bad-field" and "json:alt" in e.value.message


SPECS = st.sampled_from(["txt", "txt?", "json:alt", "json:alt?", "caption?"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["txt", "json", "caption"]), st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps({"alt": v}).encode(), st.recursive(
        st.one_of(st.text(max_size=60), st.integers(), st.floats(), st.booleans(), st.none()),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=8)),
    st.builds(lambda v: b'{"alt": "' + v + b'"}', st.binary(max_size=40)),
)), SPECS, st.integers(1, 120))
def test_any_bytes_give_a_checked_str_none_or_bad_field(members, spec, max_bytes):
    try:
        got = field(members, spec, max_bytes)
    except SampleError as e:
        assert e.kind == "bad-field"
    else:
        if got is None:
            assert spec.endswith("?")
        else:
            assert type(got) is str and "\x00" not in got and len(got.encode("utf-8")) <= max_bytes

"""webdataset url conventions: brace counting agrees with braceexpand; huge patterns are refused."""

from __future__ import annotations

import braceexpand
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpack.sources.wds import brace_count, expand_urls

_text = st.text(alphabet="abc-_/.0", max_size=3)
_range = st.tuples(st.integers(-3, 12), st.integers(-3, 12), st.sampled_from(["", "..1", "..3", "..-2"])).map(
    lambda t: f"{{{t[0]}..{t[1]}{t[2]}}}")
_letters = st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd")).map(lambda t: f"{{{t[0]}..{t[1]}}}")


def _patterns(depth: int):
    leaf = st.one_of(_text, _range, _letters)
    if depth == 0:
        return st.lists(leaf, max_size=2).map("".join)
    inner = _patterns(depth - 1)
    group = st.lists(inner, min_size=2, max_size=3).map(lambda alts: "{" + ",".join(alts) + "}")
    return st.lists(st.one_of(leaf, group), max_size=3).map("".join)


@given(_patterns(2))
def test_brace_count_is_the_number_of_expansions(pattern):
    assert brace_count(pattern) == sum(1 for _ in braceexpand.braceexpand(pattern))


def test_a_pattern_over_the_limit_is_refused_before_it_is_expanded():
    with pytest.raises(ValueError, match="expands to more than 1,000,000 urls; check the brace ranges"):
        expand_urls("s3://bucket/x-{000000000..999999999}.tar")  # would need ~70 GB as a list
    assert len(expand_urls("a-{0..9}.tar::b-{0..4}.tar", limit=15)) == 15
    with pytest.raises(ValueError, match="more than 14 urls"):
        expand_urls("a-{0..9}.tar::b-{0..4}.tar", limit=14)


def test_object_store_urls_go_through_fsspec_and_other_schemes_keep_gopen(monkeypatch):
    from patchpack.sources import remote
    from patchpack.sources.wds import local_path, missing_local, open_url

    urls = ["s3://b/a.tar", "gs://b/a.tar", "hf://datasets/u/d/a.parquet", "https://h/a.tar", "memory://x/a.tar"]
    assert all(remote.is_remote(u) and local_path(u) is None for u in urls)
    assert missing_local(urls) == []
    assert not any(remote.is_remote(u) for u in ("pipe:cat a.tar", "file:///a.tar", "a.tar", "fake://h/a.tar"))
    opened = []
    monkeypatch.setattr("patchpack.sources.wds.open_remote", lambda url, config: opened.append((url, config)) or "s")
    policy = remote.RemoteConfig(retries=1)
    assert open_url("https://h/a.tar") == "s" and open_url("s3://b/a.tar", policy) == "s"
    assert opened == [("https://h/a.tar", None), ("s3://b/a.tar", policy)]

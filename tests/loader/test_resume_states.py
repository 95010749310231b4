"""Resume states that cannot lie: every field checked, the fingerprint required, shards checked where
the state points into them; a damaged state is refused in one line, never a silent skip or repeat."""

from __future__ import annotations

import copy
import io
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import keys_of, make_samples, write_shards
from patchpack import make_loader
from patchpack.errors import ResumeError
from patchpack.loader.resume import decode_state
from patchpack.pipeline.schema import read_state

SMALL = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=2, buffer_size=8, seed=2)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("states"), make_samples(40, sizes=((16, 24), (24, 16)), seed=4),
                        per_shard=10)


def _saved(urls, cut=3):
    """Keys delivered and the loader's state after ``cut`` batches (in its nested form, to tamper)."""
    loader = make_loader(urls, **SMALL)
    it = iter(loader)
    head = [next(it) for _ in range(cut)]
    return keys_of(head), decode_state(loader.state_dict())


def _resume(urls, state):
    loader = make_loader(urls, **SMALL)
    loader.load_state_dict(state)
    return keys_of(loader)


def _paths(obj, prefix=()):
    """Every (path, value) leaf and dict of a state, for tampering."""
    if isinstance(obj, dict):
        yield prefix, obj
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        yield prefix, obj
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))
    else:
        yield prefix, obj


def _set(state, path, value):
    out = copy.deepcopy(state)
    target = out
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


_DELETE = object()
_BAD = [_DELETE, -1, 10**18, 10**12, "x", None, 1.5, True, [], {}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_a_tampered_state_is_refused_in_one_line_or_resumes_exactly(shards, data):
    before, state = _saved(shards)
    full = sorted(keys_of(make_loader(shards, **SMALL)))
    leaves = [p for p, _ in _paths(state) if p and p[0] not in ("stats", "sources")]
    path = data.draw(st.sampled_from(leaves))
    value = data.draw(st.sampled_from(_BAD))
    tampered = _set(state, path, value)
    try:
        after = _resume(shards, tampered)
    except ResumeError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert sorted(before + after) == full, f"{path} = {value!r} resumed into another epoch"


@pytest.mark.parametrize("field,value,message", [
    (("epoch",), -1, "epoch"),
    (("workers", "0", "parent", "parent", "parent", "sources", 0, "next"), 10**18, "next"),
    (("workers", "0", "parent", "parent", "parent", "sources", 0, "next"), -3, "next"),
    (("workers", "0", "parent", "parent", "parent", "sources", 0, "task"), 10**12, "task"),
    (("workers", "0", "parent", "parent", "parent", "epoch"), -2, "epoch"),
    (("fingerprint",), _DELETE, "fingerprint"),
    (("workers",), _DELETE, "workers"),
])
def test_impossible_numbers_and_missing_fields_name_the_field(shards, field, value, message):
    _, state = _saved(shards)
    with pytest.raises(ResumeError, match=message):
        _resume(shards, _set(state, field, value))


def test_a_state_without_its_fingerprint_never_reads_another_dataset(shards, tmp_path):
    _, state = _saved(shards)
    other = write_shards(tmp_path, make_samples(10, seed=9, prefix="o"), per_shard=5)
    with pytest.raises(ResumeError, match="other shards or another config"):
        _resume(other, state)
    with pytest.raises(ResumeError, match="fingerprint is missing"):
        _resume(other, _set(state, ("fingerprint",), _DELETE))


def _mid_shard(urls):
    """A state whose read position is inside a shard (after some of its samples)."""
    for cut in range(1, 12):
        _, state = _saved(urls, cut)
        cur = read_state(state["workers"]["0"])["sources"][0]
        if cur["next"] > 0 and cur["last"]:
            return state
    raise AssertionError("no cut stops inside a shard")


def test_a_position_past_the_end_of_its_shard_is_refused(shards):
    state = _mid_shard(shards)
    # a number that passes the range check but points past the shard's 10 samples
    with pytest.raises(ResumeError, match="changed since the state was saved"):
        _resume(shards, _set(state, ("workers", "0", "parent", "parent", "parent", "sources", 0, "next"), 500))


def _rewrite_without(url: str, drop_index: int) -> None:
    with tarfile.open(url) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    gone = keys[drop_index]
    with tarfile.open(url, "w") as tf:
        for m, data in members:
            if m.name.split(".")[0] != gone:
                tf.addfile(m, io.BytesIO(data))


def test_a_shard_changed_since_saving_is_refused_not_silently_skipped(shards, tmp_path):
    urls = write_shards(tmp_path, make_samples(40, sizes=((16, 24), (24, 16)), seed=4), per_shard=10)
    state = _mid_shard(urls)
    last = read_state(state["workers"]["0"])["sources"][0]["last"]
    shard = urls[int(last[1:]) // 10]  # the shard being read (10 samples a shard)
    _rewrite_without(shard, 0)  # a sample deleted: every later index shifts
    with pytest.raises(ResumeError, match="changed since the state was saved"):
        _resume(urls, state)

"""Weighted mixtures: shares follow the weights, each source exactly once per epoch,
per-source options, stats and errors, exact resume."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from media import keys_of, make_samples, write_shards
from patchpack import Source, make_loader
from patchpack.decode.video import VideoConfig
from patchpack.sources.mixture import as_sources
from videos import encode_video

SMALL = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=3, buffer_size=6)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    a = write_shards(d / "a", make_samples(40, sizes=((16, 16), (16, 24)), prefix="a", seed=1), per_shard=10)
    b = write_shards(d / "b", make_samples(20, sizes=((24, 16),), prefix="b", seed=2), per_shard=10)
    b[1:1] = []
    b.append(str(d / "b" / "missing.tar"))  # a shard that cannot be read: an error of source b
    return a, b


def test_shares_follow_the_weights_over_a_long_stream(two):
    a, b = two
    loader = make_loader([Source(a, 0.7, name="a", resampled=True), Source(b[:2], 0.3, name="b", resampled=True)],
                         **SMALL)
    it = iter(loader)
    keys = keys_of(next(it) for _ in range(150))
    n = len(keys)
    share = Counter(k[0] for k in keys)
    assert n > 1000
    for name, w in (("a", 0.7), ("b", 0.3)):
        assert abs(share[name] - n * w) < 4 * math.sqrt(n * w * (1 - w)), (share, n)
    assert set(loader.source_stats) == {"a", "b"}
    assert loader.source_stats["a"].examples + loader.source_stats["b"].examples >= n


def test_each_source_exactly_once_per_epoch_interleaved(two):
    a, b = two
    loader = make_loader({a[0].replace("000000", "{000000..000003}"): 0.5, "::".join(b): 0.5}, epochs=2, **SMALL)
    keys = keys_of(loader)
    expected = Counter({f"a{i:05d}": 2 for i in range(40)}) + Counter({f"b{i:05d}": 2 for i in range(20)})
    assert Counter(keys) == expected
    first = keys[: len(keys) // 4]
    assert {k[0] for k in first} == {"a", "b"}  # interleaved, not one source after the other
    stats = loader.source_stats
    errs = [e for e in loader.errors if e.kind == "unreadable"]
    assert errs and all("missing" in e.shard for e in errs)
    name_b = [n for n in stats if "::" in n or n.endswith(".tar") and "/b/" in n][0]
    assert stats[name_b].errors == len(errs) and sum(s.errors for s in stats.values()) == len(errs)


def test_interleaving_is_deterministic_for_a_seed(two):
    a, b = two
    mix = lambda: [Source(a, 2, name="a"), Source(b, 1, name="b")]  # noqa: E731
    assert keys_of(make_loader(mix(), **SMALL)) == keys_of(make_loader(mix(), **SMALL))
    assert keys_of(make_loader(mix(), **SMALL)) != keys_of(make_loader(mix(), seed=3, **SMALL))


@pytest.mark.parametrize("cut", [1, 2, 4])
def test_resume_equals_the_uninterrupted_run(two, cut):
    a, b = two
    mix = lambda: [Source(a, 0.6, name="a"), Source(b, 0.4, name="b", max_patches=4)]  # noqa: E731
    full = make_loader(mix(), **SMALL)
    ref = [(tuple(k for r in x.sample_keys for k in r), x.patches.numpy().tobytes()) for x in full]
    loader = make_loader(mix(), **SMALL)
    it = iter(loader)
    head = [next(it) for _ in range(cut)]
    state = loader.state_dict()
    resumed = make_loader(mix(), **SMALL)
    resumed.load_state_dict(state)
    got = [(tuple(k for r in x.sample_keys for k in r), x.patches.numpy().tobytes()) for x in head + list(resumed)]
    assert got == ref
    assert resumed.stats.to_dict() == full.stats.to_dict()
    assert {n: s.to_dict() for n, s in resumed.source_stats.items()} == {
        n: s.to_dict() for n, s in full.source_stats.items()}


def test_per_source_options(two, tmp_path):
    a, b = two
    loader = make_loader([Source(a, 1, name="small", max_patches=1), Source(b[:2], 1, name="big")], **SMALL)
    grids = {}
    for batch in loader:
        for r, row in enumerate(batch.sample_keys):
            for j, k in enumerate(row):
                grids[k] = batch.grids[r, j].tolist()
    assert all(g[1] * g[2] == 1 for k, g in grids.items() if k[0] == "a")
    assert any(g[1] * g[2] > 1 for k, g in grids.items() if k[0] == "b")
    # a video source beside an image source: images become one tubelet of the same token width
    clips = [{"__key__": f"v{i}", "mp4": encode_video(8, 32, 48, fps=8), "cls": b"1"} for i in range(3)]
    v = write_shards(tmp_path / "v", clips, per_shard=3)
    mixed = make_loader([Source(a[:1], 1, name="img"), Source(v, 1, name="vid", video=VideoConfig(frames=4, tubelet=2))],
                        **dict(SMALL, seq_len=128))
    batches = list(mixed)
    assert {k[0] for k in keys_of(batches)} == {"a", "v"}
    assert all(x.patches.shape[-1] == 2 * 8 * 8 * 3 for x in batches)


def test_each_source_reads_with_its_own_member_cap(two):
    """A source's ``max_member_bytes`` reaches its reader: its members over the cap are reported."""
    a, b = two
    loader = make_loader([Source(a[:1], 1, name="a"), Source(b[:1], 1, name="b", max_member_bytes=16)], **SMALL)
    keys = keys_of(loader)
    assert sorted(keys) == [f"a{i:05d}" for i in range(10)]
    over = [e for e in loader.errors if e.kind == "oversize-member"]
    assert sorted({e.key for e in over}) == [f"b{i:05d}" for i in range(10)]
    assert loader.source_stats["b"].error_kinds.get("oversize-member") == len(over)


def test_mixture_mistakes_fail_in_one_line(two):
    a, b = two
    with pytest.raises(ValueError, match="positive"):
        Source(a, 0)
    with pytest.raises(ValueError, match="names must differ"):
        as_sources([Source(a, 1, name="x"), Source(b, 1, name="x")])
    with pytest.raises(ValueError, match="belongs to one source"):
        make_loader([Source(a, 1, name="x"), Source(a[:1], 1, name="y")], **SMALL)
    with pytest.raises(ValueError, match="cannot differ per source"):
        make_loader([Source(a, 1, seq_len=32), Source(b, 1)], **SMALL)
    with pytest.raises(ValueError, match="token width"):
        make_loader([Source(a, 1, patch_size=4), Source(b, 1)], **SMALL)
    with pytest.raises(TypeError, match="unknown loader option"):
        make_loader([Source(a, 1, frobnicate=3), Source(b, 1)], **SMALL)


@pytest.mark.parametrize("world,workers", [(1, 0), (3, 1)])
def test_mixture_resumes_elastically_exactly_once_per_source(two, world, workers):
    a, b = two
    mix = lambda: [Source(a, 0.6, name="a"), Source(b, 0.4, name="b")]  # noqa: E731
    before, states = [], []
    for rank in range(2):  # saved as 2 ranks x 2 workers, mid-epoch
        loader = make_loader(mix(), rank=rank, world_size=2, num_workers=2, **SMALL)
        it = iter(loader)
        before += keys_of([next(it), next(it)])
        states.append(loader.state_dict())
        del it
    after = []
    for rank in range(world):
        loader = make_loader(mix(), rank=rank, world_size=world, num_workers=workers, **SMALL)
        loader.load_state_dict(states)
        after += keys_of(loader)
    assert Counter(before + after) == Counter({f"a{i:05d}": 1 for i in range(40)}) + Counter(
        {f"b{i:05d}": 1 for i in range(20)})
    with pytest.raises(ValueError, match="other shards or another config"):
        make_loader([Source(a, 0.5, name="a"), Source(b, 0.4, name="b")], **SMALL).load_state_dict(states)


def test_mixture_exactly_once_with_workers_and_ranks(two):
    a, b = two
    mix = {a[0].replace("000000", "{000000..000003}"): 0.5, "::".join(b[:2]): 0.5}
    keys = []
    for rank in range(2):
        keys += keys_of(make_loader(mix, rank=rank, world_size=2, num_workers=2, **SMALL))
    assert Counter(keys) == Counter({f"a{i:05d}": 1 for i in range(40)}) + Counter({f"b{i:05d}": 1 for i in range(20)})

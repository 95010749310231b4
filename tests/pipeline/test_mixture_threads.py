"""Mixtures x decode threads x workers x resume: every source's examples are made with that source's
own options, whatever interleaves, and every layout gives the single-threaded run's examples."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patchpack.pipeline.batch as batch_stage
from media import make_samples, write_shards
from patchpack import Source, make_loader

SMALL = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=2, buffer_size=4, seed=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixthreads")
    a = write_shards(d / "a", make_samples(12, sizes=((40, 56),), prefix="a", seed=1), per_shard=6)
    b = write_shards(d / "b", make_samples(12, sizes=((56, 40),), prefix="b", seed=2), per_shard=6)
    return a, b


def _mix(a, b):
    return [Source(a, 1, name="a", image__resample="nearest"), Source(b, 1, name="b", image__resample="bicubic")]


def _tokens_by_key(batches) -> dict[str, bytes]:
    out = {}
    for batch in batches:
        for r, keys in enumerate(batch.sample_keys):
            for j, k in enumerate(keys):
                seg = batch.segment_ids[r].numpy() == j + 1
                out[k] = batch.patches[r].numpy()[seg].tobytes()
    return out


def test_each_example_is_decoded_with_its_own_source_options(shards, monkeypatch):
    """Two examples of different sources inside the per-example step at once (a barrier holds the
    first until the second arrives): each must still be decoded with its own source's filter."""
    a, b = shards
    alone = {**_tokens_by_key(make_loader(a, image__resample="nearest", **SMALL)),
             **_tokens_by_key(make_loader(b, image__resample="bicubic", **SMALL))}
    barrier = threading.Barrier(2, timeout=2)
    step = batch_stage.example_tokens

    def held_at_a_barrier(held, length, cfg):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return step(held, length, cfg)

    monkeypatch.setattr(batch_stage, "example_tokens", held_at_a_barrier)
    loader = make_loader(_mix(a, b), decode_threads=2, **SMALL)
    configs_before = list(loader.dataset.sources.configs)
    got = _tokens_by_key(loader)
    wrong = sorted(k for k in got if got[k] != alone[k])
    assert set(got) == set(alone) and not wrong, f"{len(wrong)} examples made with another source's options"
    assert loader.dataset.sources.configs == configs_before  # nothing swapped a config


def _run(mix, threads: int, workers: int, cut: int | None, workers_after: int = 0) -> list[tuple[str, bytes]]:
    """Examples (key, tokens) of one epoch; with ``cut``, stopped after ``cut`` batches and resumed
    with ``workers_after`` workers (another count than ``workers``: an elastic resume)."""
    loader = make_loader(mix(), **dict(SMALL, decode_threads=threads, num_workers=workers))
    if cut is None:
        return sorted(_tokens_by_key(loader).items())
    it = iter(loader)
    head = [b for _, b in zip(range(cut), it)]
    if len(head) < cut:  # the pass ended: its state is the next epoch's start
        return sorted(_tokens_by_key(head).items())
    state = loader.state_dict()
    resumed = make_loader(mix(), **dict(SMALL, decode_threads=threads, num_workers=workers_after))
    resumed.load_state_dict(state)
    batches = head + list(resumed)
    keys = [k for b in batches for row in b.sample_keys for k in row]
    assert len(keys) == len(set(keys)), "an example came twice"
    return sorted(_tokens_by_key(batches).items())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(threads=st.sampled_from([1, 2, 3]), workers=st.sampled_from([0, 2]),
       cut=st.one_of(st.none(), st.integers(1, 5)), workers_after=st.sampled_from([0, 1, 2]))
def test_any_threads_workers_and_resume_cut_give_the_single_threaded_examples(shards, threads, workers, cut,
                                                                             workers_after):
    a, b = shards
    reference = _run(lambda: _mix(a, b), 1, 0, None)
    assert len(reference) == 24
    assert _run(lambda: _mix(a, b), threads, workers, cut, workers_after) == reference

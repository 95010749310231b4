"""The drop schedule follows where each example sits in the run (its epoch and its shard's place in
the epoch), the same for any worker count and after a resume; a second pass is further along."""

from __future__ import annotations

import numpy as np
import pytest

from media import make_samples, write_shards
from patchpack import make_loader
from patchpack.drop import DropConfig, keep_count, schedule_factor, schedule_progress
from patchpack.sources import shard_order

RATE = 0.8
KW = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=2, buffer_size=6, seed=5, drop__kind="constant",
          drop__rate=RATE, drop__schedule="sigmoid", drop__rho_max=1.0, drop__rho_min=0.25,
          drop__schedule_epochs=2)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("sched"), make_samples(24, sizes=((48, 48),), seed=3), per_shard=4)


def _kept(batches) -> dict[str, int]:
    return {k: int((b.segment_ids[r] == j + 1).sum()) for b in batches
            for r, keys in enumerate(b.sample_keys) for j, k in enumerate(keys)}


def _expected(urls, epoch: int) -> dict[str, int]:
    """Each example's kept tokens by the schedule: progress = (epoch + shard rank / shards) / 2."""
    cfg = DropConfig(kind="constant", rate=RATE, schedule="sigmoid", rho_max=1.0, rho_min=0.25, schedule_epochs=2)
    order = shard_order(urls, seed=5, epoch=epoch)
    out = {}
    for i in range(24):
        shard = urls[i // 4]
        progress = schedule_progress(epoch, order.index(shard) / len(urls), 2)
        out[f"s{i:05d}"] = keep_count(36, RATE * schedule_factor(cfg, progress))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_each_pass_keeps_what_the_schedule_says_for_its_place_in_the_run(shards, workers):
    loader = make_loader(shards, num_workers=workers, **KW)
    first, second = _kept(loader), _kept(loader)  # two passes: epochs 0 and 1
    assert first == _expected(shards, 0) and second == _expected(shards, 1)
    # the second pass is further along a decreasing schedule: it keeps more (0.627 both times before)
    share = lambda kept: np.mean([v / 36 for v in kept.values()])  # noqa: E731
    assert share(second) > share(first) + 0.1


def test_a_resumed_pass_keeps_what_the_uninterrupted_one_does(shards):
    loader = make_loader(shards, **KW)
    list(loader)  # epoch 0
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    resumed = make_loader(shards, num_workers=2, **KW)  # elastic: another worker count
    resumed.load_state_dict(loader.state_dict())
    assert {**_kept(head), **_kept(resumed)} == _expected(shards, 1)

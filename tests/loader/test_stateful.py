"""The loader is a torch ``Stateful``: trainers and ``torch.distributed.checkpoint`` save and restore it
like a model or an optimizer, and the batches after a restore equal the uninterrupted run's."""

from __future__ import annotations

import json

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.stateful import Stateful

from media import keys_of, make_samples, write_shards
from patchpack import make_loader

KW = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=3, buffer_size=8, seed=1)


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("stateful"), make_samples(30, seed=1), per_shard=9)


def test_the_loader_is_stateful_and_its_state_is_flat_json(urls):
    loader = make_loader(urls, **KW)
    assert isinstance(loader, Stateful)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert all(not isinstance(v, (dict, list)) for v in state.values())  # flat: a fresh loader has the same keys
    assert set(state) == set(make_loader(urls, **KW).state_dict())


@pytest.mark.parametrize("cut", [1, 3])
def test_torch_distributed_checkpoint_round_trip_resumes_exactly(urls, tmp_path, cut):
    full = keys_of(make_loader(urls, **KW))
    loader = make_loader(urls, **KW)
    it = iter(loader)
    head = [next(it) for _ in range(cut)]
    dcp.save({"loader": loader}, checkpoint_id=str(tmp_path / "ckpt"))
    restored = make_loader(urls, **KW)
    dcp.load({"loader": restored}, checkpoint_id=str(tmp_path / "ckpt"))
    assert keys_of(head) + keys_of(restored) == full

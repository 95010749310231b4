"""Elastic resume: a state saved with one worker count and world size resumes with another,
and the epoch still delivers every example exactly once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from media import BROKEN, keys_of, make_samples, write_shards
from patchpack.loader.resume import decode_state
from patchpack.pipeline.schema import pack_state
from patchpack.loader import make_loader
from patchpack.pipeline.elastic import ElasticResumeError

SMALL = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=2, buffer_size=4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """61 samples plus one broken, over 7 shards of 9 (uneven for every layout below)."""
    d = tmp_path_factory.mktemp("elastic")
    samples = make_samples(61, seed=4)
    samples.insert(20, {"__key__": "broken", "jpg": b""})
    urls = write_shards(d, samples, per_shard=9)
    return urls, Counter(s["__key__"] for s in samples if s["__key__"] != "broken")


def _save(urls, world, workers, batches, **kw):
    """Run every rank of a ``world x workers`` layout for ``batches`` batches; its keys and states."""
    delivered, states = [], []
    for rank in range(world):
        loader = make_loader(urls, rank=rank, world_size=world, num_workers=workers, **dict(SMALL, **kw))
        it = iter(loader)
        delivered += keys_of(next(it) for _ in range(batches))
        states.append(loader.state_dict())
        del it
    return delivered, states


def _resume(urls, states, world, workers, **kw):
    delivered = []
    for rank in range(world):
        loader = make_loader(urls, rank=rank, world_size=world, num_workers=workers, **dict(SMALL, **kw))
        loader.load_state_dict(states)
        delivered += keys_of(loader)
    return delivered


@pytest.mark.parametrize("world,workers", [(1, 3), (3, 1), (1, 0), (4, 0)])
def test_elastic_resume_delivers_the_epoch_exactly_once(shards, world, workers):
    urls, expected = shards
    before, states = _save(urls, 2, 0, 3)
    assert any(decode_state(st)["workers"] for st in states) and len(before) > 5
    assert Counter(before + _resume(urls, states, world, workers)) == expected


def test_elastic_resume_twice_and_with_buffered_examples(shards):
    urls, expected = shards
    before, states = _save(urls, 2, 0, 4, buffer_size=8)
    held = sum(len(json.dumps(pack_state(ws)["packer"]).split('"__item__"')) - 1 for st in states
               for ws in decode_state(st)["workers"].values())
    assert held > 0  # examples in the packer buffers are part of what is re-dealt
    middle, states2 = _save_after(urls, states, 3, 0, 2, buffer_size=8)
    rest = _resume(urls, states2, 1, 0, buffer_size=8)
    assert Counter(before + middle + rest) == expected


def _save_after(urls, states, world, workers, batches, **kw):
    delivered, out = [], []
    for rank in range(world):
        loader = make_loader(urls, rank=rank, world_size=world, num_workers=workers, **dict(SMALL, **kw))
        loader.load_state_dict(states)
        it = iter(loader)
        for _ in range(batches):
            b = next(it, None)
            if b is not None:
                delivered += keys_of([b])
        out.append(loader.state_dict())
    return delivered, out


def test_same_layout_from_a_list_is_the_exact_resume(shards):
    urls, _ = shards
    full = [keys_of(make_loader(urls, rank=r, world_size=2, **SMALL)) for r in range(2)]
    before, states = _save(urls, 2, 0, 2)
    for rank in range(2):
        loader = make_loader(urls, rank=rank, world_size=2, **SMALL)
        loader.load_state_dict(states)  # the list of every rank's state: each rank takes its own
        mine = [k for k in before if k in set(full[rank])]
        assert full[rank][:len(mine)] == mine and keys_of(loader) == full[rank][len(mine):]


def test_state_from_other_shards_or_config_fails_with_a_clear_error(shards):
    urls, _ = shards
    _, states = _save(urls, 2, 0, 2)
    with pytest.raises(ValueError, match="other shards or another config"):
        make_loader(urls[:-1], **SMALL).load_state_dict(states)
    with pytest.raises(ValueError, match="other shards or another config"):
        make_loader(urls, **dict(SMALL, max_patches=32)).load_state_dict(states)
    # batch size, error reporting and the layout itself may change
    make_loader(urls, **dict(SMALL, batch_size=5), errors_path=None).load_state_dict(states)


def test_elastic_resume_needs_every_rank(shards):
    urls, _ = shards
    _, states = _save(urls, 2, 0, 2)
    with pytest.raises(ElasticResumeError, match="states of all 2 ranks"):
        make_loader(urls, **SMALL).load_state_dict(states[0])
    with pytest.raises(ElasticResumeError, match="resampled"):
        _, rs = _save(urls, 2, 0, 2, resampled=True)
        make_loader(urls, resampled=True, **SMALL).load_state_dict(rs)


_SCRIPT = textwrap.dedent("""
    import json, sys, torch.distributed as dist
    from patchpack.loader import gather_states, make_loader
    dist.init_process_group("gloo")
    urls, mode, workers, path = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    loader = make_loader(urls, num_workers=workers, seq_len=64, patch_size=8, max_patches=48, batch_size=2,
                         buffer_size=4)
    keys = []
    if mode == "save":
        it = iter(loader)
        for _ in range(2):
            keys += [k for row in next(it).sample_keys for k in row]
        states = gather_states(loader)
        del it
    else:
        with open(path) as fh:
            loader.load_state_dict(json.load(fh))
        keys = [k for b in loader for row in b.sample_keys for k in row]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, keys)
    if dist.get_rank() == 0:
        if mode == "save":
            with open(path, "w") as fh:
                json.dump(states, fh)
        print("RESULT" + json.dumps([k for ks in gathered for k in ks]))
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(urls, world, workers, mode, path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world))
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, json.dumps(urls), mode, str(workers), str(path)],
                              env=dict(env, RANK=str(r)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    (line,) = [x for x in outs[0][0].splitlines() if x.startswith("RESULT")]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_elastic_resume_across_real_processes(shards, tmp_path):
    """2 ranks x 2 workers (gloo) saved mid-epoch, resumed as 1 x 3, 3 x 1 and 1 x 0."""
    urls, expected = shards
    path = tmp_path / "state.json"
    before = _run(urls, 2, 2, "save", path)
    assert 0 < len(before) < sum(expected.values())
    states = json.loads(path.read_text())
    assert [s["world_size"] for s in states] == [2, 2] and [s["num_workers"] for s in states] == [2, 2]
    for world, workers in [(1, 3), (3, 1)]:
        after = _run(urls, world, workers, "resume", path)
        assert Counter(before + after) == expected, (world, workers)
    loader = make_loader(urls, num_workers=0, **SMALL)  # 1 x 0: the main process
    loader.load_state_dict(states)
    assert Counter(before + keys_of(loader)) == expected

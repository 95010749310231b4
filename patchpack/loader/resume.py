"""Loader resume: the exact path (same consumers) and the elastic path (any worker count and world size).

``PackedLoader.load_state_dict`` takes one rank's ``state_dict()`` or the list of every
rank's (:func:`gather_states`). Before anything is trusted, every field is checked (present,
of its type, in range, naming this loader's shards and sources), the fingerprint must match
this loader's shards and options, and the shards are checked where the state points into
them (the sample before each read position, every held example: same index, same key). Any
failure is a :class:`~patchpack.errors.ResumeError` in one line. With the same
``num_workers`` and world size the batches after a resume equal the uninterrupted run's;
otherwise the rest of the epoch is re-dealt (:func:`patchpack.pipeline.elastic.redeal`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import ResumeError
from ..pipeline.elastic import ElasticResumeError, held_refs, redeal
from ..pipeline.read import cursor_tasks
from ..pipeline.schema import check_worker_state, read_state
from ..sources import fetch_samples
from ..stats import PackStats

if TYPE_CHECKING:
    from .dataset import PackedDataset

__all__ = ["gather_states", "plan_resume", "ResumePlan", "STATE_FORMAT", "ElasticResumeError", "encode_state",
           "decode_state"]

STATE_FORMAT = "patchpack.loader/2"
#: the parts of a loader state whose shape varies, held as JSON strings
_NESTED = ("workers", "stats", "sources")


def encode_state(state: dict) -> dict:
    """The flat form of a nested loader state: :data:`_NESTED` parts as compact JSON strings."""
    return {k: json.dumps(v, separators=(",", ":")) if k in _NESTED else v for k, v in state.items()}


def decode_state(state: Any) -> dict:
    """The nested form of a loader state (its JSON-string parts parsed), for reading it.

    Raises:
        ResumeError: a part that is not the JSON it should be (one line).
    """
    if not isinstance(state, dict):
        raise ResumeError(f"a loader state is an object, got {type(state).__name__}")
    out = dict(state)
    for k in _NESTED:
        if isinstance(out.get(k), (str, bytes)):
            try:
                out[k] = json.loads(out[k])
            except (ValueError, RecursionError) as exc:
                raise ResumeError(f"state field {k}: not JSON ({type(exc).__name__})") from None
    return out


def gather_states(loader) -> list[dict]:
    """Every rank's ``loader.state_dict()`` (``torch.distributed.all_gather_object``), in rank order;
    ``[loader.state_dict()]`` without an initialised process group. Save this list to resume
    on a different world size; every rank of the new job loads the same list."""
    state = loader.state_dict()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, state)
    return sorted(out, key=lambda s: int(s["rank"]))


@dataclass
class ResumePlan:
    """What a loader continues from: its epoch, this rank's worker states, the next worker, stats."""

    epoch: int
    worker_states: dict[int, dict]
    next_worker: int
    stats: PackStats
    source_stats: dict[str, PackStats] = field(default_factory=dict)
    delivered: int = 0


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ResumeError(f"state field {where}: {str(value)[:40]!r} is not an integer in [{low}, {high}]")
    return value


def _stats(value: Any, where: str) -> PackStats:
    try:
        return PackStats.from_dict(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ResumeError(f"state field {where}: not loader stats ({type(exc).__name__})") from None


def _check_loader_state(s: Any, i: int, expected: str) -> None:
    if not isinstance(s, dict) or s.get("format") != STATE_FORMAT:
        got = s.get("format") if isinstance(s, dict) else type(s).__name__
        raise ResumeError(f"state {i} is not a packed-loader state of this version (format {str(got)[:40]!r}, "
                          f"expected {STATE_FORMAT!r})")
    for name in ("epoch", "num_workers", "rank", "world_size", "next_worker", "batches", "workers", "stats",
                 "fingerprint"):
        if name not in s:
            raise ResumeError(f"state field {name} is missing (state {i})")
    if s["fingerprint"] != expected:
        raise ResumeError(f"the state was saved for other shards or another config (fingerprint "
                          f"{str(s['fingerprint'])[:32]} != {expected}); resume with the same urls and loader options")
    _int(s["epoch"], "epoch", 0, 2**40)
    world = _int(s["world_size"], "world_size", 1, 2**20)
    workers = _int(s["num_workers"], "num_workers", 1, 2**16)
    _int(s["rank"], "rank", 0, world - 1)
    _int(s["next_worker"], "next_worker", 0, workers - 1)
    if not isinstance(s["workers"], dict) or any(not (isinstance(w, str) and w.isdigit() and int(w) < workers)
                                                 for w in s["workers"]):
        raise ResumeError(f"state field workers: keys must be worker indices below num_workers={workers}")
    for name in ("stats", "sources"):
        if not isinstance(s.get(name, {}), dict):
            raise ResumeError(f"state field {name}: expected an object")
    delivered = _int(s["batches"], "batches", 0, 2**48)
    counted = sum(ws.get("batches", 0) if isinstance(ws, dict) and isinstance(ws.get("batches"), int) else 0
                  for ws in s["workers"].values())
    if counted != delivered:
        raise ResumeError(f"state field workers: the workers' states account for {counted} batches, the loader "
                          f"received {delivered}: a worker's state is missing or altered")


def _tasks_counter(ds: "PackedDataset", consumer: int, consumers: int):
    cfg = ds.config

    def tasks_of(k: int, epoch: int) -> int:
        return len(cursor_tasks(ds.sources.urls_by_source[k], consumer, consumers, cfg.seed, cfg.shuffle_shards,
                                epoch))
    return tasks_of


def _verify_shards(states: dict[int, dict], consumers: int, ds: "PackedDataset") -> None:
    """Re-read the sample before every read position and every held example: the shard must hold
    the sample the state names there (one scan per shard)."""
    wanted: dict[str, dict[int, str]] = {}
    for c, st in states.items():
        rd = read_state(st)
        for k, cur in enumerate(rd["sources"]):
            if cur.get("last") is None or ds.sources.resampled[k] or cur["exhausted"] or rd["done"]:
                continue
            tasks = cursor_tasks(ds.sources.urls_by_source[k], c, consumers, ds.config.seed, ds.config.shuffle_shards,
                                 int(rd["epoch"]), cur.get("dealt"))
            if int(cur["task"]) < len(tasks) and int(cur["next"]) > 0:
                wanted.setdefault(tasks[int(cur["task"])][0].url, {})[int(cur["next"]) - 1] = cur["last"]
        for ref in held_refs(st):
            wanted.setdefault(ref["shard"], {})[int(ref["index"])] = ref["key"]
    for url, keys in wanted.items():
        k = ds.sources.source_of(url)
        options = ds.sources.configs[k if k is not None else 0].read_options
        try:
            found = fetch_samples(url, keys, options)
        except KeyError:
            found = {}
        for index, key in sorted(keys.items()):
            got = found.get(index)
            if got is None or got.key != key:
                what = f"sample {index} is {got.key!r}" if got is not None else f"it has no readable sample {index}"
                raise ResumeError(f"{url} changed since the state was saved: the state names {key!r} at sample "
                                  f"{index}, but {what}; resume needs the same shards")


def plan_resume(state: dict | Sequence[dict], ds: "PackedDataset", workers: int) -> ResumePlan:
    """What ``ds``'s loader with ``workers`` workers continues from (module doc).

    Raises:
        ResumeError: a field missing, of another type or out of range; other shards or options;
            a shard changed where the state points into it.
        ElasticResumeError: a different layout without every old rank's state, or a state the
            rest of whose epoch cannot be re-dealt.
    """
    states = [decode_state(s) for s in (state if isinstance(state, (list, tuple)) else [state])]
    if not states:
        raise ResumeError("no loader state given")
    expected = ds.fingerprint()
    for i, s in enumerate(states):
        _check_loader_state(s, i, expected)
    by_rank = {int(s["rank"]): s for s in states}
    old_world, old_workers = int(states[0]["world_size"]), int(states[0]["num_workers"])
    if any(int(s["world_size"]) != old_world or int(s["num_workers"]) != old_workers for s in states):
        raise ResumeError("the states given were saved with different world sizes or worker counts")
    old_consumers = old_world * old_workers
    old: dict[int, dict] = {}
    for r, s in by_rank.items():
        for w, ws in s["workers"].items():
            c = r * old_workers + int(w)
            check_worker_state(ws, f"workers.{w}", ds.sources.urls_by_source, ds.sources.resampled,
                               _tasks_counter(ds, c, old_consumers), ds.config.pack)
            old[c] = ws
    _verify_shards(old, old_consumers, ds)
    if old_workers == workers and old_world == ds.world_size:
        s = by_rank.get(ds.rank) if len(states) > 1 else states[0]
        if s is None:
            raise ResumeError(f"no state of rank {ds.rank} among the {len(states)} given")
        return ResumePlan(int(s["epoch"]), {int(w): ws for w, ws in s["workers"].items()}, int(s["next_worker"]),
                          _stats(s["stats"], "stats"), _source_stats(s), int(s["batches"]))
    return _elastic(states, by_rank, old, old_world, old_workers, ds, workers)


def _source_stats(s: dict) -> dict[str, PackStats]:
    return {n: _stats(d, f"sources.{n}") for n, d in (s.get("sources") or {}).items()}


def _elastic(states, by_rank, old, old_world, old_workers, ds, workers) -> ResumePlan:
    if set(by_rank) != set(range(old_world)):
        raise ElasticResumeError(
            f"the state was saved with world_size={old_world}, num_workers={old_workers} and this loader has "
            f"world_size={ds.world_size}, num_workers={workers}: an elastic resume needs the states of all "
            f"{old_world} ranks, e.g. the list from patchpack.loader.gather_states(loader)")
    epochs = {int(s["epoch"]) for s in states}
    if len(epochs) != 1:
        raise ElasticResumeError(f"ranks were saved in different epochs {sorted(epochs)}")
    epoch = epochs.pop()
    new = redeal(old, ds.sources, old_world * old_workers, ds.world_size * workers, epoch, ds.serve_stored)
    stats = PackStats()
    source_stats: dict[str, PackStats] = {}
    if ds.rank == 0:  # the stats so far go to one rank, so that their sum over ranks stays right
        for s in states:
            stats.merge(_stats(s["stats"], "stats"))
            for n, st in _source_stats(s).items():
                source_stats.setdefault(n, PackStats()).merge(st)
    return ResumePlan(epoch, {w: new[ds.rank * workers + w] for w in range(workers)}, 0, stats, source_stats)

"""Elastic resume: re-deal the rest of an epoch over a different number of consumers.

A saved loader state holds, per consumer (``rank * num_workers + worker``), its position
in its shard tasks and the examples it holds (packer buffer and rows not yet batched) as
references. :func:`redeal` turns the states of *all* old consumers into start states for
``new_consumers`` consumers such that the rest of the epoch is delivered exactly once:

* the unread part of every old consumer's tasks (the current task from its next sample
  index, the later tasks whole; every task of a consumer that never delivered a batch)
  becomes a list of shard slices ``(url, offset, stride, start)``; the slices are dealt
  round robin, and the ones left over when they do not divide evenly are split by sample
  index (``stride * k``), as :func:`patchpack.sources.plan_shards` splits shards;
* every held example is dealt round robin and pushed into its new consumer's packer
  before that consumer reads anything, with the plan and kept count it was admitted with.

What is exact: the set of examples of the epoch (each delivered once). What is not: the
order and the packing of the rest of the epoch, which depend on the new consumer count.
The next epochs are planned for the new consumers as usual.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields, is_dataclass
from typing import Any, Sequence

from ..config import LoaderConfig
from ..sources import ShardTask, plan_shards
from .state import collect_refs

__all__ = ["redeal", "fingerprint", "ElasticResumeError", "task_slices", "dealt_tasks", "deal_slices", "held_refs",
           "check_epoch"]


class ElasticResumeError(ValueError):
    """A saved state cannot be re-dealt (other shards or config, workers in different epochs, resampled)."""


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# options that do not change which examples an epoch holds or how each is planned
_FREE = {"rank", "world_size", "errors", "errors_path", "batch_size", "epochs", "progress_samples", "decode_threads"}


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _ADDRESS.sub("", getattr(obj, "__qualname__", None) or repr(obj))


def fingerprint(urls: Sequence[str], cfg: LoaderConfig, extra: Any = None) -> str:
    """A short digest of the shard list and every option that decides an epoch's examples
    and their plans (not the batch size, worker count, world size or error reporting);
    ``extra``: anything else that does (a mixture's sources)."""
    conf = {k: v for k, v in _plain(cfg).items() if k not in _FREE}
    blob = json.dumps({"urls": list(urls), "config": conf, "extra": _plain(extra)}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def task_slices(state: dict | None, urls: Sequence[str], cfg: LoaderConfig, consumer: int, consumers: int,
                epoch: int) -> list[list]:
    """The unread ``[url, offset, stride, start]`` slices of one old consumer in ``epoch``."""
    if state is None:
        return [[t.url, t.offset, t.stride, 0] for t in plan_shards(
            urls, consumer, consumers, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle_shards)]
    if state.get("done") or int(state["epoch"]) > epoch:
        return []
    dealt = state.get("dealt")
    if dealt is not None:
        tasks = [list(t) for t in dealt]
    else:
        tasks = [[t.url, t.offset, t.stride, 0] for t in plan_shards(
            urls, consumer, consumers, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle_shards)]
    task, nxt = int(state["task"]), int(state["next"])
    out = []
    for i in range(task, len(tasks)):
        url, offset, stride, start = tasks[i]
        out.append([url, int(offset), int(stride), max(int(start), nxt) if i == task else int(start)])
    return out


def held_refs(state: dict | None) -> list[dict]:
    refs: list[dict] = []
    if state is not None:
        collect_refs(state.get("packer"), refs)
        collect_refs(state.get("rows"), refs)
        refs.extend(state.get("pending") or [])
    return refs


def check_epoch(states: dict[int, dict | None], epoch: int) -> None:
    for c, st in sorted(states.items()):
        if st is None:
            continue
        e = int(st["epoch"])
        if e < epoch:
            raise ElasticResumeError(f"consumer {c} is in epoch {e}, before the loader's epoch {epoch}")
        if e > epoch and not st.get("done") and (int(st["task"]) or int(st["next"]) or held_refs(st)):
            raise ElasticResumeError(
                f"consumer {c} already started epoch {e} while the loader is in epoch {epoch}: elastic resume "
                "works within one epoch; resume with the same num_workers and world size, or save at an epoch end")


def deal_slices(slices: list[list], n: int) -> list[list[list]]:
    """Round robin whole slices; split the leftover ones by sample index (like ``plan_shards``)."""
    out: list[list[list]] = [[] for _ in range(n)]
    whole = (len(slices) // n) * n
    for i in range(whole):
        out[i % n].append(slices[i])
    rest = slices[whole:]
    r = len(rest)
    for c in range(n if r else 0):
        i = c % r
        sharers = list(range(i, n, r))
        k, j = len(sharers), sharers.index(c)
        url, offset, stride, start = rest[i]
        out[c].append([url, offset + j * stride, stride * k, start])
    return out


def redeal(states: dict[int, dict | None], urls: Sequence[str], cfg: LoaderConfig, old_consumers: int,
           new_consumers: int, epoch: int) -> list[dict]:
    """Start states of ``new_consumers`` consumers that finish ``epoch`` (module doc).

    Args:
        states: old consumer index -> its latest stream state (missing or ``None``: it
            delivered no batch yet).
        urls: the expanded shard urls (the same as when saving).
        cfg: the loader config (the same as when saving).
        old_consumers, new_consumers: ``world_size * max(1, num_workers)`` before and now.
        epoch: the loader's epoch at saving time.

    Raises:
        ElasticResumeError: resampled streams, or consumers in different epochs.
    """
    if cfg.resampled:
        raise ElasticResumeError("resampled streams have no epoch to re-deal; resume them with the same "
                                 "num_workers and world size")
    full = {c: states.get(c) for c in range(old_consumers)}
    check_epoch(full, epoch)
    slices: list[list] = []
    held: list[dict] = []
    seen = 0
    for c in range(old_consumers):
        st = full[c]
        slices += task_slices(st, urls, cfg, c, old_consumers, epoch)
        held += [r for r in held_refs(st) if int(r["epoch"]) == epoch]
        seen += int(st["seen"]) if st is not None else 0
    held.sort(key=lambda r: (r["shard"], int(r["index"])))
    dealt = deal_slices(slices, new_consumers)
    out = []
    for c in range(new_consumers):
        mine = dealt[c]
        out.append({
            "epoch": epoch, "task": 0, "next": int(mine[0][3]) if mine else 0, "seen": seen // new_consumers,
            "batches": 0, "done": False, "packer": None, "rows": [], "dealt": mine,
            "pending": held[c::new_consumers],
        })
    return out


def dealt_tasks(dealt: list[list]) -> list[tuple[ShardTask, int]]:
    """``(ShardTask, start index)`` pairs of a re-dealt task list."""
    return [(ShardTask(url, int(offset), int(stride)), int(start)) for url, offset, stride, start in dealt]

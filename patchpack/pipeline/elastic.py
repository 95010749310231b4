"""Elastic resume: re-deal the rest of an epoch over a different number of consumers.

A saved loader state holds, per consumer (``rank * num_workers + worker``), its read position
in every source (:mod:`.read`) and the examples it holds (packer buffer and rows not yet
batched) as references. :func:`redeal` turns the states of *all* old consumers into start
states for ``new_consumers`` consumers such that the rest of the epoch is delivered exactly once:

* per finite source, the unread part of every old consumer's tasks (the current task from
  its next sample index, the later tasks whole; every task of a consumer that never delivered
  a batch) becomes a list of shard slices ``(url, offset, stride, start)``; the slices are
  dealt round robin, and the ones left over when they do not divide evenly are split by
  sample index (``stride * k``), as :func:`patchpack.sources.plan_shards` splits shards;
* every held example is dealt round robin and pushed into its new consumer's packer before
  that consumer reads anything, with the plan and kept count it was admitted with;
* resampled sources start new draws.

What is exact: the set of examples of the epoch (each delivered once) and each example's
randomness. What is not: the order and the packing of the rest of the epoch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields, is_dataclass
from typing import Any, Sequence

from ..config import LoaderConfig
from ..sources import plan_shards
from .held import collect_refs
from .schema import ResumeError, pack_state, read_state
from .sources import Sources

__all__ = ["redeal", "fingerprint", "ElasticResumeError", "deal_slices", "held_refs", "start_state"]


class ElasticResumeError(ResumeError):
    """A saved state cannot be re-dealt (workers in different epochs, a resampled loader)."""


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# options that do not change which examples an epoch holds or how each is planned
_FREE = {"rank", "world_size", "errors", "errors_path", "batch_size", "epochs", "decode_threads", "tokenizer",
         "text_len", "num_classes"}


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


def held_refs(state: dict | None) -> list[dict]:
    """The references of every example a worker state holds."""
    ps = pack_state(state) if state is not None else None
    if ps is None:
        return []
    return collect_refs([ps["packer"], ps["rows"], ps.get("pending", [])], [])


def _unread(state: dict | None, urls: Sequence[str], source: int, cfg: LoaderConfig, consumer: int,
            consumers: int, epoch: int) -> list[list]:
    """The unread ``[url, offset, stride, start]`` slices of one source of one old consumer."""
    planned = [[t.url, t.offset, t.stride, 0] for t in plan_shards(
        urls, consumer, consumers, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle_shards)]
    if state is None:
        return planned
    rd = read_state(state)
    if rd["done"] or int(rd["epoch"]) > epoch:
        return []
    cur = rd["sources"][source]
    if cur["exhausted"]:
        return []
    tasks = [list(t) for t in cur["dealt"]] if cur.get("dealt") is not None else planned
    task, nxt = int(cur["task"]), int(cur["next"])
    return [[u, int(o), int(st), max(int(b), nxt) if i == task else int(b)]
            for i, (u, o, st, b) in enumerate(tasks) if i >= task]


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


def start_state(epoch: int, cursors: list[dict], pending: list[dict], stored: bool) -> dict:
    """A worker state that starts reading at ``cursors`` in ``epoch`` with ``pending`` examples
    (``{"__item__": ref}`` each) to pack first (the shape :mod:`.schema` describes)."""
    read = {"epoch": epoch, "step": 0, "done": False, "sources": cursors}
    middle = {"parent": read} if stored else {"packer": None, "rows": [], "pending": pending,
                                             "parent": {"parent": read}}
    return {"batches": 0, "epoch": epoch, "parent": middle}


def _check_epochs(states: dict[int, dict | None], epoch: int) -> None:
    for c, st in sorted(states.items()):
        if st is None:
            continue
        rd = read_state(st)
        e = int(rd["epoch"])
        if e < epoch:
            raise ElasticResumeError(f"consumer {c} is in epoch {e}, before the loader's epoch {epoch}")
        started = any(int(cur["task"]) or int(cur["next"]) for cur in rd["sources"])
        if e > epoch and not rd["done"] and (started or held_refs(st)):
            raise ElasticResumeError(
                f"consumer {c} already started epoch {e} while the loader is in epoch {epoch}: elastic resume "
                "works within one epoch; resume with the same num_workers and world size, or save at an epoch end")


def redeal(states: dict[int, dict | None], sources: Sources, old_consumers: int, new_consumers: int,
           epoch: int, stored: bool = False) -> list[dict]:
    """Start states of ``new_consumers`` consumers that finish ``epoch`` (module doc).

    Args:
        states: old consumer index -> its latest state (missing or ``None``: no batch yet).
        sources: the loader's sources (the same as when saving).
        old_consumers, new_consumers: ``world_size * max(1, num_workers)`` before and now.
        epoch: the loader's epoch at saving time.
        stored: the states are of a stored-row stream (no packer).

    Raises:
        ElasticResumeError: a resampled loader, or consumers in different epochs.
    """
    cfg = sources.base
    if cfg.resampled:
        raise ElasticResumeError("resampled streams have no epoch to re-deal; resume them with the same "
                                 "num_workers and world size")
    full = {c: states.get(c) for c in range(old_consumers)}
    _check_epochs(full, epoch)
    per_source: list[list[list[list]]] = []
    for k, urls in enumerate(sources.urls_by_source):
        slices = [] if sources.resampled[k] else [
            sl for c in range(old_consumers) for sl in _unread(full[c], urls, k, cfg, c, old_consumers, epoch)]
        per_source.append(deal_slices(slices, new_consumers))
    held = sorted((r for st in full.values() for r in held_refs(st) if int(r["epoch"]) == epoch),
                  key=lambda r: (r["shard"], int(r["index"])))
    out = []
    for c in range(new_consumers):
        cursors = []
        for k, dealt in enumerate(per_source):
            mine = None if sources.resampled[k] else dealt[c]
            first = int(mine[0][3]) if mine else 0
            cursors.append({"task": 0, "next": first, "exhausted": False, "last": None,
                            **({"dealt": mine} if mine is not None else {})})
        out.append(start_state(epoch, cursors, [{"__item__": r} for r in held[c::new_consumers]], stored))
    return out

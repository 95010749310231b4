"""Loader resume: the exact path (same consumers) and the elastic path (any worker count and world size).

``PackedLoader.load_state_dict`` takes one rank's ``state_dict()`` or the list of every
rank's (:func:`gather_states`). With the same ``num_workers`` and world size the batches
after a resume equal the uninterrupted run's. Otherwise the rest of the epoch is re-dealt
over the new consumers (:func:`patchpack.pipeline.elastic.redeal`): every example of the
epoch is still delivered exactly once, in another order. Both need the same shards and
config, checked through a fingerprint saved with the state.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..config import LoaderConfig
from ..pipeline.elastic import ElasticResumeError, fingerprint, redeal
from ..pipeline.mixture import redeal_mixture
from ..stats import PackStats

__all__ = ["gather_states", "plan_resume", "STATE_FORMAT", "ElasticResumeError"]

STATE_FORMAT = "patchpack.loader/1"


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


def _check(state: dict, expected: str) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a packed-loader state (format {got!r})")
    saved = state.get("fingerprint")
    if saved is not None and saved != expected:
        raise ValueError("the state was saved for other shards or another config (fingerprint "
                         f"{saved} != {expected}); resume with the same urls and loader options")


def plan_resume(state: dict | Sequence[dict], urls: Sequence[str], cfg: LoaderConfig, rank: int, world_size: int,
                workers: int, mixture=None) -> tuple[int, dict[int, dict], int, PackStats]:
    """``(epoch, worker states, next worker, stats)`` for this rank of the new layout.

    Raises:
        ValueError: not a loader state, or other shards/config.
        ElasticResumeError: a different layout without every old rank's state, or a state
            the rest of whose epoch cannot be re-dealt.
    """
    states = list(state) if isinstance(state, (list, tuple)) else [state]
    if not states:
        raise ValueError("no loader state given")
    expected = fingerprint(urls, cfg, mixture.signature() if mixture is not None else None)
    for s in states:
        _check(s, expected)
    same = all(int(s["num_workers"]) == workers and int(s["world_size"]) == world_size for s in states)
    if same:
        mine = [s for s in states if int(s["rank"]) == rank] if len(states) > 1 else states
        if not mine:
            raise ValueError(f"no state of rank {rank} among the {len(states)} given")
        s = mine[0]
        return (int(s["epoch"]), {int(w): ws for w, ws in s["workers"].items()}, int(s["next_worker"]),
                PackStats.from_dict(s["stats"]))
    old_world, old_workers = int(states[0]["world_size"]), int(states[0]["num_workers"])
    by_rank = {int(s["rank"]): s for s in states}
    if set(by_rank) != set(range(old_world)) or any(
            int(s["world_size"]) != old_world or int(s["num_workers"]) != old_workers for s in states):
        raise ElasticResumeError(
            f"the state was saved with world_size={old_world}, num_workers={old_workers} and this loader has "
            f"world_size={world_size}, num_workers={workers}: an elastic resume needs the states of all "
            f"{old_world} ranks, e.g. the list from patchpack.loader.gather_states(loader)")
    epochs = {int(s["epoch"]) for s in states}
    if len(epochs) != 1:
        raise ElasticResumeError(f"ranks were saved in different epochs {sorted(epochs)}")
    epoch = epochs.pop()
    old = {r * old_workers + int(w): ws for r, s in by_rank.items() for w, ws in s["workers"].items()}
    if cfg.resampled:
        raise ElasticResumeError("resampled streams have no epoch to re-deal; resume them with the same "
                                 "num_workers and world size")
    if mixture is not None:
        new = redeal_mixture(old, mixture, cfg, old_world * old_workers, world_size * workers, epoch)
    else:
        new = redeal(old, urls, cfg, old_world * old_workers, world_size * workers, epoch)
    stats = PackStats()
    if rank == 0:  # the stats so far go to one rank, so that their sum over ranks stays right
        for s in states:
            stats.merge(PackStats.from_dict(s["stats"]))
    return epoch, {w: new[rank * workers + w] for w in range(workers)}, 0, stats

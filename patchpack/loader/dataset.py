"""The packed DataLoader: shards in, :class:`~patchpack.loader.batch.PackedBatch` out.

Each consumer (one DataLoader worker of one rank) runs a
:class:`patchpack.pipeline.stream.ConsumerStream`: packing is decided from image headers and
video metadata, and pixels exist only for the rows of the batch being built. Per-example randomness (sampled resolution,
drop rate, which tokens are dropped) comes from a generator seeded by
``(seed, epoch, sample key)``, so it does not depend on worker count or arrival order.

**Exactly once.** Shards are split over ``world_size * num_workers`` consumers by
:func:`patchpack.sources.plan_shards` (whole shards round robin, the remainder shared
by sample index modulo). Every sample is packed into some batch or reported as an
:class:`~patchpack.errors.ErrorRecord`. Ranks may get different numbers of batches.

**Resume.** Each batch carries its worker's state (``batch.info["state"]``): the
epoch, the shard position ``(task, next sample index)``, the packer state with each
held example as a small reference ``(shard url, sample index, key, probe, kept)``
and the rows emitted but not yet batched. :class:`PackedLoader` keeps the latest
state per worker and the round-robin position. On resume the held examples' bytes
are re-read from their shards (tar shards have no index: each shard holding a
buffered example is scanned up to the last such example, at most
``max_wait / samples_per_shard + 1`` shards per worker, with no pixel decoding), and
each worker skips ahead in its current shard. The batches after a resume equal the
uninterrupted run's, given the same shards, config, ``num_workers`` and world size.

**Stats and errors.** Each batch carries what happened since its worker's previous
batch: ``info["stats"]`` (a :class:`~patchpack.stats.PackStats` delta) and
``info["errors"]`` (records). A worker whose stream ends with unreported stats sends
one empty marker batch, which :class:`PackedLoader` absorbs and never yields.
:class:`PackedLoader` merges them into ``loader.stats`` / ``loader.errors`` and
appends errors to ``LoaderConfig.errors_path`` (JSONL).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..config import LoaderConfig, check_stored_shards
from ..errors import ErrorRecord
from ..pipeline.elastic import fingerprint
from ..pipeline.mixture import Mixture, MixtureStream
from ..pipeline.packed import PackedRowStream, serves_packed
from ..pipeline.stream import ConsumerStream, StreamBatch
from ..sources import expand_sources
from ..sources.mixture import is_mixture
from ..stats import PackStats
from .batch import PackedBatch, collate
from .resume import STATE_FORMAT as _STATE_FORMAT
from .resume import plan_resume

__all__ = ["PackedDataset", "PackedLoader", "make_loader", "dist_info", "batch_of"]



def batch_of(item: StreamBatch, cfg: LoaderConfig) -> PackedBatch:
    """Collate one worker-stream item into a :class:`PackedBatch` (``info`` attached)."""
    e = cfg.row_slots
    if e is None:
        e = max([len(r) for r in item.rows] + [1])
    batch = collate(item.rows, cfg.pack.seq_len, e, cfg.token_dim)
    batch.info = item.info
    return batch


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit values, else ``torch.distributed``, else ``RANK``/``WORLD_SIZE``."""
    if rank is not None and world_size is not None:
        r, w = int(rank), int(world_size)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank is not None:
        r = int(rank)
    if world_size is not None:
        w = int(world_size)
    if not 0 <= r < w:
        raise ValueError(f"rank {r} out of range for world size {w}")
    return r, w


class PackedDataset(IterableDataset):
    """An ``IterableDataset`` of :class:`PackedBatch` (use ``DataLoader(batch_size=None)``).

    The rank and world size are resolved when the dataset is made (in the main
    process); worker ids come from ``torch.utils.data.get_worker_info()``.
    Prefer :func:`make_loader`, whose :class:`PackedLoader` adds resume, stats and
    the errors file. Used on its own, a worker's stream may end with an empty marker
    batch (``info["empty"]`` true, ``B = 0``) carrying its last stats and errors.
    """

    def __init__(self, urls: str | Sequence[str], config: LoaderConfig | None = None) -> None:
        super().__init__()
        self.config = config or LoaderConfig()
        self.mixture = Mixture(urls, self.config) if is_mixture(urls) else None
        if self.mixture is not None:
            self.config = self.mixture.base
        self.urls = self.mixture.urls if self.mixture is not None else expand_sources(urls)
        if self.mixture is None:  # stored shards made with another patch size or a larger budget
            check_stored_shards(self.urls, self.config)
        self.serve_packed = self.mixture is None and serves_packed(self.urls, self.config)
        self.rank, self.world_size = dist_info(self.config.rank, self.config.world_size)
        # set by PackedLoader before each pass
        self.start_epoch = 0
        self.worker_offset = 0
        self.resume: dict[int, dict] = {}

    def __iter__(self) -> Iterator[PackedBatch]:
        wi = get_worker_info()
        workers, wid = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        logical = (wid + self.worker_offset) % workers
        kind = PackedRowStream if self.serve_packed else ConsumerStream  # stored packed rows served as they are
        stream = (kind(self.urls, self.config, *self._position(workers, logical))
                  if self.mixture is None else MixtureStream(self.mixture, self.config, *self._position(workers, logical)))
        cfg = self.config
        return (batch_of(item, cfg) for item in stream)


    def _position(self, workers: int, logical: int) -> tuple:
        """``(consumer, consumers, worker, start epoch, resume state)`` of one worker."""
        return (self.rank * workers + logical, self.world_size * workers, logical, self.start_epoch,
                self.resume.get(logical))

    def fingerprint(self) -> str:
        """Digest of the shards, sources and config a saved state must match."""
        return fingerprint(self.urls, self.config, self.mixture.signature() if self.mixture is not None else None)


def _passthrough(batch: PackedBatch) -> PackedBatch:
    return batch


class PackedLoader(DataLoader):
    """A ``DataLoader`` of :class:`PackedBatch` with ``state_dict()``/``load_state_dict()``.

    Attributes:
        stats: :class:`PackStats` merged over every batch received (marker batches included).
        errors: every :class:`ErrorRecord` received.
        source_stats: for a mixture, source name -> :class:`PackStats` (examples and errors).
    """

    def __init__(self, dataset: PackedDataset, **kwargs: Any) -> None:
        if kwargs.pop("persistent_workers", False):
            raise ValueError("persistent_workers is not supported: each pass sends the resume state to the workers")
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "collate_fn"):
            if bad in kwargs:
                raise TypeError(f"{bad} is fixed by the packed loader (rows per batch: LoaderConfig.batch_size)")
        super().__init__(dataset, batch_size=None, collate_fn=_passthrough, **kwargs)
        self.stats = PackStats()
        self.source_stats: dict[str, PackStats] = {}  # per source of a mixture
        self.errors: list[ErrorRecord] = []
        self._epoch = 0
        self._states: dict[int, dict] = {}
        self._next_worker = 0
        self._resume_pending = False

    @property
    def config(self) -> LoaderConfig:
        return self.dataset.config

    @property
    def _workers(self) -> int:
        return max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at ``epoch`` (shard order and per-example randomness depend on it)."""
        self._epoch = int(epoch)
        self._states, self._next_worker, self._resume_pending = {}, 0, False

    def __iter__(self) -> Iterator[PackedBatch]:  # type: ignore[override]
        ds: PackedDataset = self.dataset
        if not self._resume_pending:
            self._states, self._next_worker = {}, 0
        self._resume_pending = False
        ds.start_epoch, ds.worker_offset = self._epoch, self._next_worker
        ds.resume = dict(self._states)
        for batch in super().__iter__():
            self._absorb(batch)
            if not batch.info.get("empty"):
                yield batch
        self._epoch += 0 if self.config.epochs is None else self.config.epochs
        self._states, self._next_worker = {}, 0

    def _absorb(self, batch: PackedBatch) -> None:
        info = batch.info
        worker = int(info["worker"])
        self._states[worker] = info["state"]
        self._next_worker = (worker + 1) % self._workers
        self.stats.merge(info["stats"])
        for name, st in info.get("sources", {}).items():
            self.source_stats.setdefault(name, PackStats()).merge(st)
        errs = info["errors"]
        if errs:
            self.errors.extend(errs)
            path = self.config.errors_path
            if path:
                with open(path, "a", encoding="utf-8") as fh:
                    for rec in errs:
                        rec.write_jsonl(fh)

    def state_dict(self) -> dict:
        """JSON-serialisable position: the latest state of every worker, the round-robin
        position, the epoch and the merged stats."""
        ds: PackedDataset = self.dataset
        return {
            "format": _STATE_FORMAT,
            "epoch": self._epoch,
            "num_workers": self._workers,
            "rank": ds.rank,
            "world_size": ds.world_size,
            "next_worker": self._next_worker,
            "workers": {str(w): s for w, s in sorted(self._states.items())},
            "stats": self.stats.to_dict(),
            "fingerprint": ds.fingerprint(),
            **({"sources": {n: st.to_dict() for n, st in self.source_stats.items()}} if ds.mixture else {}),
        }

    def load_state_dict(self, state: dict | list[dict]) -> None:
        """Continue from ``state`` at the next ``iter()``: one rank's :meth:`state_dict`, or the
        list of every rank's (:func:`~patchpack.loader.resume.gather_states`).

        With the same ``num_workers`` and world size the following batches equal the
        uninterrupted run's. With others (elastic; needs every old rank's state) the rest of
        the epoch is re-dealt over the new consumers: every example still comes exactly once,
        in another order. The shards and config must be the same (checked)."""
        ds: PackedDataset = self.dataset
        self._epoch, self._states, self._next_worker, self.stats = plan_resume(
            state, ds.urls, self.config, ds.rank, ds.world_size, self._workers, ds.mixture)
        own = [s for s in (state if isinstance(state, (list, tuple)) else [state]) if int(s["rank"]) == ds.rank]
        self.source_stats = {n: PackStats.from_dict(d) for n, d in (own[0] if own else {}).get("sources", {}).items()}
        self._resume_pending = True


def make_loader(
    urls: str | Sequence[str],
    config: LoaderConfig | None = None,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    timeout: float = 0,
    multiprocessing_context: Any = None,
    **overrides: Any,
) -> PackedLoader:
    """A DataLoader of :class:`PackedBatch` over webdataset shards or image folders.

    Args:
        urls: webdataset tar urls (brace patterns expanded, e.g.
            ``"data/train-{000..099}.tar"``), image folders, or patchpack shards
            (``*.arrow`` or a ``patchpack preprocess`` folder); one or a list. A mixture:
            ``{url pattern: weight}`` or a list of :class:`~patchpack.sources.mixture.Source` with
            per-source options (:mod:`patchpack.pipeline.mixture`).
        config: the pipeline configuration (defaults: :class:`LoaderConfig`).
        num_workers, pin_memory, prefetch_factor, timeout, multiprocessing_context:
            as for ``torch.utils.data.DataLoader``.
        **overrides: :class:`LoaderConfig` fields (``batch_size=``, ``seed=``), or fields
            of its sections by name (``seq_len=``, ``patch_size=``, ``max_patches=``,
            ``max_per_seq=``) or as ``section__field`` (``image__max_pixels=``).

    >>> loader = make_loader("shards/train-{000..003}.tar", seq_len=1024, patch_size=16,
    ...                      max_patches=256, batch_size=8, num_workers=4)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     logits = model(batch.to("cuda"))
    """
    cfg = (config or LoaderConfig()).with_overrides(**overrides)
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory, "timeout": timeout}
    if num_workers > 0:
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return PackedLoader(PackedDataset(urls, cfg), **kwargs)

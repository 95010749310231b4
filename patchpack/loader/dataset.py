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
from ..sources.wds import missing_local
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
        missing = missing_local(self.urls)
        if missing and len(missing) == len(self.urls):  # nothing could ever come out: a wrong path
            raise FileNotFoundError(f"no such file or folder: {missing[0]}" + (
                f" (nor any of the other {len(missing) - 1} local paths given)" if len(missing) > 1 else "")
                + "; check the paths (a missing one among others is an error record, not a failure)")
        if self.mixture is None:  # stored shards made with another patch size or a larger budget
            check_stored_shards(self.urls, self.config)
        self.serve_packed = self.mixture is None and serves_packed(self.urls, self.config)
        self.rank, self.world_size = dist_info(self.config.rank, self.config.world_size)
        # set by PackedLoader before each pass; in shared memory so that persistent workers,
        # which keep their copy of the dataset, read each new pass's values
        self._pass = torch.zeros(3, dtype=torch.int64).share_memory_()  # epoch, worker offset, pass id
        self.resume: dict[int, dict] = {}
        self.resume_pass = 0  # the pass id `resume` belongs to

    @property
    def start_epoch(self) -> int:
        return int(self._pass[0])

    @start_epoch.setter
    def start_epoch(self, epoch: int) -> None:
        self._pass[0] = int(epoch)

    @property
    def worker_offset(self) -> int:
        return int(self._pass[1])

    @worker_offset.setter
    def worker_offset(self, offset: int) -> None:
        self._pass[1] = int(offset)

    @property
    def pass_id(self) -> int:
        """Counts the loader's passes (``iter()`` calls)."""
        return int(self._pass[2])

    @pass_id.setter
    def pass_id(self, n: int) -> None:
        self._pass[2] = int(n)

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
        resume = self.resume.get(logical) if self.resume_pass == self.pass_id else None
        return (self.rank * workers + logical, self.world_size * workers, logical, self.start_epoch, resume)

    def fingerprint(self) -> str:
        """Digest of the shards, sources and config a saved state must match."""
        return fingerprint(self.urls, self.config, self.mixture.signature() if self.mixture is not None else None)


def _passthrough(batch: PackedBatch) -> PackedBatch:
    return batch


class _SizesOnlyStream(ConsumerStream):
    """A consumer stream that makes every packing decision but builds no pixels (for counting)."""

    def _rows(self, rows):
        for seq in rows:
            for item in seq.handles:
                item.data = b""
        return [[] for _ in rows]


class PackedLoader(DataLoader):
    """A ``DataLoader`` of :class:`PackedBatch` with ``state_dict()``/``load_state_dict()``.

    ``len(loader)`` is the number of batches of the next pass where it is known (see
    :meth:`__len__`), else a ``TypeError`` saying why. ``persistent_workers`` and ``drop_last``
    are accepted (see :func:`make_loader`); the other batching options are fixed.

    Attributes:
        stats: :class:`PackStats` merged over every batch received (marker batches included).
        errors: every :class:`ErrorRecord` received.
        source_stats: for a mixture, source name -> :class:`PackStats` (examples and errors).
    """

    def __init__(self, dataset: PackedDataset, *, drop_last: bool = False, **kwargs: Any) -> None:
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "collate_fn"):
            if bad in kwargs:
                raise TypeError(f"{bad} is fixed by the packed loader (rows per batch: LoaderConfig.batch_size)")
        if kwargs.get("persistent_workers") and not kwargs.get("num_workers"):
            kwargs.pop("persistent_workers")  # nothing to keep alive without workers
        super().__init__(dataset, batch_size=None, collate_fn=_passthrough, **kwargs)
        # DataLoader's own drop_last is about batching samples, which a packed loader does not do
        object.__setattr__(self, "drop_last", bool(drop_last))
        self._counted: dict[tuple, int] = {}
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
        if self._states and self._workers_alive():
            raise RuntimeError("a resume state cannot reach persistent workers that are already running; "
                               "call load_state_dict before the first pass, or use persistent_workers=False")
        ds.start_epoch, ds.worker_offset, ds.pass_id = self._epoch, self._next_worker, ds.pass_id + 1
        ds.resume, ds.resume_pass = dict(self._states), ds.pass_id
        full = self.config.batch_size
        for batch in super().__iter__():
            self._absorb(batch)
            if not batch.info.get("empty") and not (self.drop_last and batch.batch_size < full):
                yield batch
        self._epoch += 0 if self.config.epochs is None else self.config.epochs
        self._states, self._next_worker = {}, 0

    def _workers_alive(self) -> bool:
        return bool(self.persistent_workers and getattr(self, "_iterator", None) is not None)

    def __len__(self) -> int:
        """Batches the next pass yields on this rank, where that is known without reading pixels.

        Known for patchpack shards (``*.arrow``: their stored rows, or a dry run of the packing
        decisions over the stored sizes; cached per epoch) and after :meth:`count_batches` (any
        finite source).
        After :meth:`load_state_dict` it is still the whole pass's count.

        Raises:
            TypeError: the length is unknown: an endless loader (``epochs=None``, ``resampled``),
                a mixture, or webdataset/folder sources not counted yet. ``TypeError`` is what
                trainers expect from a loader without a length (they fall back to ``max_steps``).
        """
        key = self._count_key()
        if key in self._counted:
            return self._counted[key]
        reason = self._uncountable()
        if reason:
            raise TypeError(f"len() of this packed loader is unknown: {reason}")
        if not all(str(u).endswith(".arrow") for u in self.dataset.urls):
            raise TypeError("len() of a packed loader over webdataset or folder sources needs every sample's "
                            "header: call loader.count_batches() once (no pixel decoding), or give the trainer "
                            "max_steps")
        return self.count_batches()

    def count_batches(self) -> int:
        """Count the batches of the next pass on this rank with a dry run of the packing decisions
        (every sample's header or stored size is read; no pixels are decoded) and remember it for
        ``len()``. Costs one read of the data for webdataset/folder sources."""
        reason = self._uncountable()
        if reason:
            raise TypeError(f"cannot count the batches of this packed loader: {reason}")
        ds: PackedDataset = self.dataset
        workers, full, n = self._workers, self.config.batch_size, 0
        for logical in range(workers):
            consumer, consumers, worker, _, _ = ds._position(workers, logical)
            kind = PackedRowStream if ds.serve_packed else _SizesOnlyStream  # as PackedDataset picks
            stream = kind(ds.urls, self.config, consumer, consumers, worker, self._epoch)
            for item in stream:
                if item.info.get("empty"):
                    continue
                n += not (self.drop_last and len(item.rows) < full)
        self._counted[self._count_key()] = n
        return n

    def _count_key(self) -> tuple:
        return (self._epoch, self._workers, self.drop_last)

    def _uncountable(self) -> str | None:
        cfg = self.config
        if cfg.epochs is None or cfg.resampled:
            return "it is endless (epochs=None or resampled=True); give the trainer max_steps"
        if self.dataset.mixture is not None:
            return "a mixture's batch count is not computed; give the trainer max_steps"
        return None

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
    persistent_workers: bool = False,
    drop_last: bool = False,
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
        persistent_workers: keep the worker processes between passes (no effect without
            workers). Each pass still starts where the loader says (next epoch, or a resume
            given to :meth:`~PackedLoader.load_state_dict` *before the first pass*; a resume
            after the workers started fails loudly).
        drop_last: do not yield a batch with fewer than ``batch_size`` rows (each worker's
            last batch of a pass). Its examples are then not trained on in that pass; stats
            and the resume state still count them as delivered.
        **overrides: :class:`LoaderConfig` fields (``batch_size=``, ``seed=``), or fields
            of its sections by name (``seq_len=``, ``patch_size=``, ``max_patches=``,
            ``max_per_seq=``) or as ``section__field`` (``image__max_pixels=``).

    >>> loader = make_loader("shards/train-{000..003}.tar", seq_len=1024, patch_size=16,
    ...                      max_patches=256, batch_size=8, num_workers=4)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     logits = model(batch.to("cuda"))
    """
    cfg = (config or LoaderConfig()).with_overrides(**overrides)
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory, "timeout": timeout,
                              "drop_last": drop_last}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return PackedLoader(PackedDataset(urls, cfg), **kwargs)

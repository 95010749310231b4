"""The ``DataLoader`` of packed batches: resume, length, stats, errors and data-wait timing.

:class:`PackedLoader` satisfies torch's ``Stateful`` protocol (``state_dict()`` /
``load_state_dict()``, as torchdata's ``StatefulDataLoader`` does), so trainers and
``torch.distributed.checkpoint`` save and restore it like any other component.
"""

from __future__ import annotations

import time
from os import PathLike
from typing import Any, Iterator

from torch.utils.data import DataLoader

from ..config import LoaderConfig
from ..configfile import load_config_file
from ..errors import ErrorRecord
from ..stats import PackStats
from .batch import PackedBatch
from .dataset import PackedDataset
from .resume import STATE_FORMAT, encode_state, plan_resume
from ..pipeline.wait import DataWait

__all__ = ["PackedLoader", "make_loader"]


def _passthrough(batch: PackedBatch) -> PackedBatch:
    return batch


class PackedLoader(DataLoader):
    """A ``DataLoader`` of :class:`PackedBatch` with ``state_dict()``/``load_state_dict()``.

    ``len(loader)`` is the number of batches of the next pass where it is known (see
    :meth:`__len__`), else a ``TypeError`` saying why. ``persistent_workers`` and ``drop_last``
    are accepted (see :func:`make_loader`); the other batching options are fixed.

    Attributes:
        stats: :class:`PackStats` merged over every batch received (marker batches included).
        errors: every :class:`ErrorRecord` received.
        source_stats: for a mixture, source name -> :class:`PackStats` (examples and errors).
        data_wait: how long each ``next()`` blocked (:class:`~patchpack.pipeline.wait.DataWait`).
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
        self.counted: dict[tuple, int] = {}
        self.stats = PackStats()
        self.source_stats: dict[str, PackStats] = {}
        self.errors: list[ErrorRecord] = []
        self.data_wait = DataWait()
        self.epoch = 0
        self.worker_states: dict[int, dict] = {}
        self.next_worker = 0
        self.delivered = 0  # batches received from the workers in this pass (their states' batch counts sum to it)
        self.resume_pending = False

    @property
    def config(self) -> LoaderConfig:
        return self.dataset.config

    @property
    def workers(self) -> int:
        """Logical workers (consumers on this rank): ``max(1, num_workers)``."""
        return max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at ``epoch`` (shard order and per-example randomness depend on it)."""
        self.epoch = int(epoch)
        self.worker_states, self.next_worker, self.delivered, self.resume_pending = {}, 0, 0, False

    def __iter__(self) -> Iterator[PackedBatch]:  # type: ignore[override]
        ds: PackedDataset = self.dataset
        if not self.resume_pending:
            self.worker_states, self.next_worker, self.delivered = {}, 0, 0
        self.resume_pending = False
        if self.worker_states and self.persistent_workers and getattr(self, "_iterator", None) is not None:
            raise RuntimeError("a resume state cannot reach persistent workers that are already running; "
                               "call load_state_dict before the first pass, or use persistent_workers=False")
        ds.start_epoch, ds.worker_offset, ds.pass_id = self.epoch, self.next_worker, ds.pass_id + 1
        ds.resume, ds.resume_pass = dict(self.worker_states), ds.pass_id
        full = self.config.batch_size
        batches = super().__iter__()
        start = last = time.perf_counter()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            now = time.perf_counter()
            self._absorb(batch)
            if not batch.info.empty and not (self.drop_last and batch.batch_size < full):
                batch.info.wait_seconds = now - last
                self.data_wait.add(now - last)
                self.data_wait.wall += now - start
                yield batch
                start = last = time.perf_counter()
        self.epoch += 0 if self.config.epochs is None else self.config.epochs
        self.worker_states, self.next_worker, self.delivered = {}, 0, 0

    def __len__(self) -> int:
        """Batches the next pass yields on this rank, where that is known without reading pixels.

        Known for patchpack shards (``*.arrow``: their stored rows, or a dry run of the packing
        decisions over the stored sizes; cached per epoch) and after :meth:`count_batches` (any
        finite source). After :meth:`load_state_dict` it is still the whole pass's count.

        Raises:
            TypeError: the length is unknown: an endless loader (``epochs=None``, ``resampled``),
                a mixture, or webdataset/folder sources not counted yet. ``TypeError`` is what
                trainers expect from a loader without a length (they fall back to ``max_steps``).
        """
        key = self._count_key()
        if key in self.counted:
            return self.counted[key]
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
        full, n = self.config.batch_size, 0
        for logical in range(self.workers):
            for item in ds.stream(ds.position(self.workers, logical, self.epoch), materialize=False):
                if not item.info.empty:
                    n += not (self.drop_last and len(item.rows) < full)
        self.counted[self._count_key()] = n
        return n

    def _count_key(self) -> tuple:
        return (self.epoch, self.workers, self.drop_last)

    def _uncountable(self) -> str | None:
        cfg = self.config
        if cfg.epochs is None or cfg.resampled:
            return "it is endless (epochs=None or resampled=True); give the trainer max_steps"
        if self.dataset.sources.mixture:
            return "a mixture's batch count is not computed; give the trainer max_steps"
        return None

    def _absorb(self, batch: PackedBatch) -> None:
        info = batch.info
        self.worker_states[info.worker] = info.state
        self.delivered += not info.empty
        self.next_worker = (info.worker + 1) % self.workers
        self.stats.merge(info.stats)
        for name, st in info.sources.items():
            self.source_stats.setdefault(name, PackStats()).merge(st)
        if info.errors:
            self.errors.extend(info.errors)
            path = self.config.errors_path
            if path:
                with open(path, "a", encoding="utf-8") as fh:
                    for rec in info.errors:
                        rec.write_jsonl(fh)

    def state_dict(self) -> dict:
        """The loader's position: the latest state of every worker, the round-robin position, the
        epoch and the merged stats (:func:`~patchpack.loader.resume.encode_state`).

        Flat and JSON-ready: the parts whose shape varies (``workers``, ``stats``, ``sources``)
        are JSON strings, so checkpointers that flatten a state into the shape of a fresh
        loader's (``torch.distributed.checkpoint``) store and restore them whole.
        :func:`~patchpack.loader.resume.decode_state` gives the nested form."""
        ds: PackedDataset = self.dataset
        return encode_state({
            "format": STATE_FORMAT, "epoch": self.epoch, "num_workers": self.workers, "rank": ds.rank,
            "world_size": ds.world_size, "next_worker": self.next_worker, "batches": self.delivered,
            "workers": {str(w): s for w, s in sorted(self.worker_states.items())},
            "stats": self.stats.to_dict(), "fingerprint": ds.fingerprint(),
            "sources": {n: st.to_dict() for n, st in self.source_stats.items()},
        })

    def load_state_dict(self, state: dict | list[dict]) -> None:
        """Continue from ``state`` at the next ``iter()``: one rank's :meth:`state_dict`, or the
        list of every rank's (:func:`~patchpack.loader.resume.gather_states`).

        With the same ``num_workers`` and world size the following batches equal the
        uninterrupted run's. With others (elastic; needs every old rank's state) the rest of
        the epoch is re-dealt over the new consumers: every example still comes exactly once,
        in another order. The state is checked field by field and against this loader's shards
        and options first.

        Raises:
            ResumeError: one line naming the field, the shard or the option that does not fit.
        """
        ds: PackedDataset = self.dataset
        plan = plan_resume(state, ds, self.workers)
        self.epoch, self.worker_states, self.next_worker = plan.epoch, plan.worker_states, plan.next_worker
        self.delivered = plan.delivered
        self.stats, self.source_stats = plan.stats, plan.source_stats
        self.resume_pending = True


def make_loader(
    urls,
    config: LoaderConfig | str | PathLike | None = None,
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
    """A DataLoader of :class:`PackedBatch` over webdataset shards, folders or patchpack shards.

    Args:
        urls: webdataset tar urls (brace patterns expanded, e.g.
            ``"data/train-{000..099}.tar"``), image folders, or patchpack shards
            (``*.arrow`` or a ``patchpack preprocess`` folder); one or a list. A mixture:
            ``{url pattern: weight}`` or a list of :class:`~patchpack.sources.mixture.Source` with
            per-source options (:mod:`patchpack.pipeline.sources`).
        config: the pipeline configuration (defaults: :class:`LoaderConfig`), or the path of a
            config file (TOML or YAML, as ``patchpack config`` writes it; :mod:`patchpack.configfile`).
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
    if isinstance(config, (str, PathLike)):  # a config file, as `patchpack config` writes it
        config = load_config_file(config)
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

"""Stored rows of ``preprocess --packed`` shards served as they are: no decode, no repacking.

When every source is a ``"packed"`` patchpack shard and ``LoaderConfig.packed_shards`` is
``"serve"`` (the default), a worker runs :class:`PackedRowStream` instead of the packing
stream: each stored row (one packed sequence, its examples already dropped and placed back
to back) becomes one row of a batch, its tokens read as views onto the memory-mapped shard
and copied once, into the batch, by the collation at the torch edge.

The contract is the packing stream's (:class:`~patchpack.pipeline.stream.StreamBatch`, the
same ``info`` keys): rows are split over consumers by :func:`~patchpack.sources.plan_shards`
with the row index as the sample index, so every stored row is served exactly once per
epoch; the state is the shard position ``(epoch, task, next row)`` and resume (also an
elastic one, re-dealt like sample indices) continues after the last row served. Shards are
checked against their manifest (``verify``) and rows against themselves as the example
reader does; a bad shard or row is an :class:`~patchpack.errors.ErrorRecord`.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

from ..config import LoaderConfig
from ..errors import ErrorRecord
from ..pack import PackedSequence
from ..sources import plan_shards
from ..stats import PackStats
from ..storage.format import ShardFormatError
from ..storage.manifest import check_shard
from ..storage.reader import BadRow, ShardReader, read_shard_metadata
from ..tokenize import Tokens
from .elastic import dealt_tasks
from .stream import StreamBatch, keep_record

__all__ = ["PackedRowStream", "serves_packed", "stored_seq_len"]


def serves_packed(urls: Sequence[str], cfg: LoaderConfig) -> bool:
    """Whether the loader serves ``urls`` as stored rows: ``packed_shards="serve"`` and every
    url a readable ``"packed"`` patchpack shard (anything else is read as examples)."""
    if cfg.packed_shards != "serve" or not urls or cfg.resampled:
        return False
    for url in urls:
        if not str(url).endswith(".arrow") or not os.path.isfile(url):
            return False
        try:
            if read_shard_metadata(url).get("format") != "packed":
                return False
        except Exception:  # unreadable: the example reader reports it
            return False
    return True


def stored_seq_len(url: str) -> int | None:
    """The sequence length ``L`` a packed shard was made with (``None`` when not recorded)."""
    pack = read_shard_metadata(url).get("config", {}).get("pack")
    seq_len = pack.get("seq_len") if isinstance(pack, dict) else None
    return seq_len if type(seq_len) is int and seq_len > 0 else None


class PackedRowStream:
    """One consumer's share of the stored rows, ``batch_size`` rows per :class:`StreamBatch`."""

    def __init__(self, urls: Sequence[str], cfg: LoaderConfig, consumer: int, num_consumers: int, worker: int,
                 start_epoch: int = 0, state: dict | None = None) -> None:
        self.urls, self.cfg = list(urls), cfg
        self.consumer, self.num_consumers, self.worker = consumer, num_consumers, worker
        self.start_epoch = start_epoch
        self.epoch, self.task, self.next = start_epoch, 0, 0
        self.seen = self.batches = 0
        self.done = False
        self.dealt: list[list] | None = None
        self.stats = PackStats()
        self.errors: list[ErrorRecord] = []
        if state is not None:
            self.epoch, self.task, self.next = int(state["epoch"]), int(state["task"]), int(state["next"])
            self.seen, self.batches, self.done = int(state["seen"]), int(state["batches"]), bool(state["done"])
            self.dealt = state.get("dealt")
        for url in self.urls[:1]:
            made = stored_seq_len(url)
            if made is not None and made > cfg.pack.seq_len:
                raise ValueError(f"{os.path.dirname(url) or url}: the rows were packed to seq_len={made}; this loader "
                                 f"has seq_len={cfg.pack.seq_len}: use seq_len={made} (or more), or "
                                 "packed_shards='repack' to pack the stored examples again")

    def state_dict(self) -> dict:
        """The shard position; the same keys as the packing stream's (nothing is held)."""
        return {"epoch": self.epoch, "task": self.task, "next": self.next, "seen": self.seen,
                "batches": self.batches, "done": self.done, "packer": None, "rows": [],
                **({"dealt": self.dealt} if self.dealt is not None else {})}

    def _record(self, rec: ErrorRecord) -> None:
        keep_record(rec, self.cfg, self.errors, self.stats)

    def _tasks(self) -> list:
        if self.dealt is not None:
            return dealt_tasks(self.dealt)
        cfg = self.cfg
        return [(t, 0) for t in plan_shards(self.urls, self.consumer, self.num_consumers, seed=cfg.seed,
                                             epoch=self.epoch, shuffle=cfg.shuffle_shards)]

    def _rows_of(self, task, start: int) -> Iterator[list[Tokens] | None]:
        """The owned rows of one shard from row ``start`` (``None`` after a record), updating ``next``."""
        url = task.url
        problem = check_shard(url, self.cfg.verify)
        if problem is not None:
            if task.owns(0) and start == 0:
                self._record(ErrorRecord(url, url, "source", "checksum", f"shard not used: {problem}"))
            return
        try:
            reader = ShardReader(url)
        except (ShardFormatError, OSError) as exc:
            if task.owns(0) and start == 0:
                self._record(ErrorRecord(url, url, "source", "shard", f"cannot open patchpack shard: {exc}"))
            return
        try:
            for index, row in enumerate(reader.iter_checked()):
                if index < start or not task.owns(index):
                    continue
                self.next = index + 1
                if isinstance(row, BadRow):
                    self._record(ErrorRecord(row.key or f"{url}#row{row.row}", url, "source", "bad-row",
                                             f"row {row.row}: {row.message}"))
                    yield None
                    continue
                yield row
        except Exception as exc:  # a record batch Arrow cannot read
            if task.owns(0):
                self._record(ErrorRecord(url, url, "source", "shard",
                                         f"patchpack shard unreadable: {type(exc).__name__}: {exc}"))

    def _take(self, row: list[Tokens]) -> list[Tokens] | None:
        """Count one stored row; ``None`` (and a record) when it does not fit the batch layout."""
        cfg = self.cfg
        total, slots = sum(len(t) for t in row), cfg.row_slots
        if total > cfg.pack.seq_len or (slots is not None and len(row) > slots):
            self._record(ErrorRecord(row[0].key if row else "", row[0].meta.get("source_shard", "") if row else "",
                                     "pack", "oversize", f"stored row of {total} tokens and {len(row)} examples "
                                     f"does not fit seq_len={cfg.pack.seq_len}, max_per_seq={slots}"))
            return None
        self.seen += len(row)
        for t in row:
            self.stats.add_example(int(t.meta.get("source_tokens", len(t))), len(t), t.grid,
                                   t.meta.get("source_size"))
        self.stats.add_sequence(PackedSequence([t.key for t in row], [len(t) for t in row], [0] * len(row), 0),
                                cfg.pack.seq_len)
        return row

    def _info(self, empty: bool = False) -> dict:
        info = {"worker": self.worker, "consumer": self.consumer, "epoch": self.epoch,
                "batch_index": self.batches, "stats": self.stats, "errors": self.errors,
                "state": self.state_dict(), "empty": empty}
        self.stats, self.errors = PackStats(), []
        return info

    def __iter__(self) -> Iterator[StreamBatch]:
        cfg = self.cfg
        end = None if cfg.epochs is None else self.start_epoch + cfg.epochs
        bs = cfg.batch_size
        rows: list[list[Tokens]] = []
        while not self.done and (end is None or self.epoch < end):
            tasks = self._tasks()
            while self.task < len(tasks):
                task, first = tasks[self.task]
                for row in self._rows_of(task, max(first, self.next)):
                    row = self._take(row) if row is not None else None
                    if row is not None:
                        rows.append(row)
                    if len(rows) == bs:
                        self.batches += 1
                        yield StreamBatch(rows, self._info())
                        rows = []
                self.task += 1
                self.next = tasks[self.task][1] if self.task < len(tasks) else 0
            self.epoch, self.task, self.next, self.dealt = self.epoch + 1, 0, 0, None
            if end is not None and self.epoch >= end:
                self.done = True
            if rows:  # nothing waits across epochs
                self.batches += 1
                yield StreamBatch(rows, self._info())
                rows = []
        if self.errors or self.stats.errors or self.stats.sequences:
            yield StreamBatch([], self._info(empty=True))

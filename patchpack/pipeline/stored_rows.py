"""Stored rows of ``preprocess --packed`` shards served as they are: no decode, no repacking.

When every source is a ``"packed"`` patchpack shard and ``LoaderConfig.packed_shards`` is
``"serve"`` (the default), a worker reads stored rows instead of examples: each stored row
(one packed sequence, its examples already dropped and placed back to back) becomes one row
of a batch, its tokens views onto the memory-mapped shard, copied once, into the batch, by
the collation at the torch edge.

The read stage is the example stream's (:class:`~patchpack.pipeline.read.ReadStage`) with
:func:`read_stored_rows` as its task reader, so rows are split over consumers by sample index
exactly once per epoch, and exact and elastic resume work as for examples.
:class:`StoredRowStage` refuses a row that does not fit the batch layout (``oversize``);
shards are checked against their manifest (``verify``) and rows against themselves.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

from ..config import LoaderConfig
from ..errors import ErrorKind, ErrorRecord
from ..sources import ReadOptions, ShardTask
from ..sources.arrow import bad_row_records
from ..storage.format import ShardFormatError
from ..storage.manifest import check_shard
from ..storage.reader import BadRow, ShardReader, read_shard_metadata
from .batch import StoredRow
from .read import Arrival, EpochEnd, ReadStage

__all__ = ["serves_packed", "stored_seq_len", "read_stored_rows", "StoredRowStage", "check_stored_seq_len"]


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


def check_stored_seq_len(urls: Sequence[str], cfg: LoaderConfig) -> None:
    """Refuse a loader whose ``seq_len`` is below the one the stored rows were packed to.

    Raises:
        ValueError: one line with the fix.
    """
    for url in urls[:1]:
        made = stored_seq_len(url)
        if made is not None and made > cfg.pack.seq_len:
            raise ValueError(f"{os.path.dirname(url) or url}: the rows were packed to seq_len={made}; this loader "
                             f"has seq_len={cfg.pack.seq_len}: use seq_len={made} (or more), or "
                             "packed_shards='repack' to pack the stored examples again")


def read_stored_rows(task: ShardTask, start: int, options: ReadOptions) -> Iterator[StoredRow | ErrorRecord]:
    """The owned rows of one packed shard from row ``start`` (a task reader for the read stage)."""
    url = task.url
    problem = check_shard(url, options.verify)
    if problem is not None:
        if task.owns(0) and start == 0:
            yield ErrorRecord(url, url, "source", ErrorKind.CHECKSUM, f"shard not used: {problem}")
        return
    try:
        reader = ShardReader(url)
    except (ShardFormatError, OSError) as exc:
        if task.owns(0) and start == 0:
            yield ErrorRecord(url, url, "source", ErrorKind.UNREADABLE, f"cannot open patchpack shard: {exc}")
        return
    try:
        for index, row in enumerate(reader.iter_checked()):
            if index < start or not task.owns(index):
                continue
            if isinstance(row, BadRow):
                yield from bad_row_records(row, url)
                continue
            yield StoredRow(row, key=row[0].key if row else f"{url}#row{index}", shard=url, index=index)
    except Exception as exc:  # a record batch Arrow cannot read
        if task.owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.SHARD,
                              f"patchpack shard unreadable: {type(exc).__name__}: {exc}")


class StoredRowStage:
    """Stored rows of ``parent`` that fit the batch layout; the others as ``oversize`` records."""

    def __init__(self, parent: ReadStage, cfg: LoaderConfig) -> None:
        self.parent, self.cfg = parent, cfg

    def state_dict(self) -> dict:
        return {"parent": self.parent.state_dict()}

    def load_state_dict(self, state: dict, make: Callable | None = None) -> None:
        self.parent.load_state_dict(state["parent"])

    def __iter__(self) -> Iterator[StoredRow | ErrorRecord | EpochEnd]:
        cfg = self.cfg
        slots = cfg.row_slots
        for item in self.parent:
            if not isinstance(item, Arrival):
                yield item
                continue
            row = item.sample
            total = sum(len(t) for t in row)
            if total > cfg.pack.seq_len or (slots is not None and len(row) > slots):
                yield ErrorRecord(row.key, row.shard, "pack", ErrorKind.OVERSIZE,
                                  f"stored row of {total} tokens and {len(row)} examples does not fit "
                                  f"seq_len={cfg.pack.seq_len}, max_per_seq={slots}")
                continue
            yield row

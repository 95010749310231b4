"""The batch stage: packed sequences in, :class:`~patchpack.pipeline.info.StreamBatch` out.

Each sequence's examples become tokens (:func:`~patchpack.pipeline.tokens.example_tokens`,
with the example's own source config) by ``decode_threads`` threads, started as soon as the
sequence is packed so they decode while the stream reads and packs what follows; results
come back in order, so batches do not depend on the thread count. Stats, per-source stats
and error records are kept here, on the stream's thread, and handed out with each batch
(:class:`~patchpack.pipeline.info.StreamInfo`) together with the resume state. Stored rows
(already tokenized) pass through with the same bookkeeping.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from ..augment import TransformError
from ..config import LoaderConfig
from ..errors import ErrorRecord, SampleError
from ..pack import PackedSequence
from ..tokenize import Tokens
from .admit import failed_record
from .counters import StreamCounters
from .held import Held
from .info import StreamBatch, StreamInfo
from .read import EpochEnd
from .threads import DecodePool
from .tokens import example_tokens

__all__ = ["BatchStage", "StoredRow"]


class StoredRow(list):
    """A row read already packed (``preprocess --packed``): its examples' tokens, in slot order,
    and where it was read (``key``: its first example's; ``shard``; ``index``: the row's)."""

    def __init__(self, tokens, *, key: str, shard: str, index: int) -> None:
        super().__init__(tokens)
        self.key, self.shard, self.index = key, shard, index


class BatchStage:
    """Rows of ``parent`` into batches of ``batch_size`` (module doc).

    Args:
        configs: the config of every source (index = ``Held.source``); ``configs[0]`` holds
            what the whole stream shares (batch size, sequence length, error policy).
        source_of: the source index of a shard url (for per-source stats of records).
        source_names: names for per-source stats (empty: none are kept).
        materialize: ``False`` makes every decision but no pixels (counting batches).
    """

    def __init__(self, parent, configs: Sequence[LoaderConfig], worker: int, consumer: int, epoch: int,
                 source_of: Callable[[str], int | None], source_names: Sequence[str] = (),
                 materialize: bool = True) -> None:
        self.parent, self.configs, self.cfg = parent, list(configs), configs[0]
        self.worker, self.consumer, self.epoch, self.batches = worker, consumer, epoch, 0
        self.materialize = materialize
        self.counters = StreamCounters(self.cfg.errors == "raise", source_of, source_names, self.cfg.pack.seq_len)
        self.pool = DecodePool(self.cfg.decode_threads)
        self.rows: list[tuple[PackedSequence | StoredRow, list]] = []  # (row, its started jobs)

    def state_dict(self) -> dict:
        return {"batches": self.batches, "epoch": self.epoch, "parent": self.parent.state_dict()}

    def load_state_dict(self, state: dict, make: Callable[[dict], Held]) -> None:
        self.batches, self.epoch = int(state["batches"]), int(state["epoch"])
        self.parent.load_state_dict(state["parent"], make)

    def __iter__(self) -> Iterator[StreamBatch]:
        size = self.cfg.batch_size
        for item in self.parent:
            if isinstance(item, ErrorRecord):
                self.counters.keep(item)
            elif isinstance(item, EpochEnd):
                self.epoch = item.epoch + 1
                if item.last and self.rows:
                    yield self._batch()
            else:
                self._take(item)
                if len(self.rows) >= size:
                    yield self._batch()
        while self.rows:
            yield self._batch()
        if self.counters.errors or self.counters.stats.errors or self.counters.stats.sequences:
            yield StreamBatch([], self._info(empty=True))

    def _take(self, row: PackedSequence | StoredRow) -> None:
        jobs = []
        if isinstance(row, PackedSequence) and self.materialize and self.pool.threads > 1:
            jobs = [self.pool.submit(self._make, (h, n)) for h, n in zip(row.handles, row.lengths)]
        self.rows.append((row, jobs))

    def _make(self, job: tuple[Held, int]) -> Tokens | Exception:
        """One example's tokens, or what stopped them (runs in the decode threads)."""
        held, length = job
        try:
            return example_tokens(held, length, self.configs[held.source])
        except Exception as exc:
            return exc

    def _batch(self) -> StreamBatch:
        taken, self.rows = self.rows[: self.cfg.batch_size], self.rows[self.cfg.batch_size:]
        rows = [self._stored(row) if isinstance(row, StoredRow) else self._packed(row, jobs) for row, jobs in taken]
        self.batches += 1
        return StreamBatch(rows, self._info())

    def _packed(self, seq: PackedSequence, jobs: list) -> list[Tokens]:
        pairs = list(zip(seq.handles, seq.lengths))
        if not self.materialize:
            for held, _ in pairs:
                held.data = b""
            return []
        results = [f.result() for f in jobs] if jobs else [self._make(p) for p in pairs]
        toks, arrivals = [], []
        for (held, _), arrival, made in zip(pairs, seq.arrivals, results):
            held.data = b""  # release the compressed bytes (or stored tokens)
            if isinstance(made, TransformError):
                raise made
            if isinstance(made, Exception):
                self.counters.keep(made.record(held.key, held.shard) if isinstance(made, SampleError)
                                   else failed_record(held.key, held.shard, "decode", made))
                continue
            toks.append(made)
            arrivals.append(arrival)
            self.counters.example(held, len(made))
        self.counters.sequence(toks, arrivals, seq.emitted_at)
        return toks

    def _stored(self, row: StoredRow) -> list[Tokens]:
        self.counters.stored_row(row)
        return list(row)

    def _info(self, empty: bool = False) -> StreamInfo:
        stats, errors, sources = self.counters.take()
        return StreamInfo(self.worker, self.consumer, self.epoch, self.batches - (0 if empty else 1), stats, errors,
                          self.state_dict(), empty, sources)

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
from ..stats import PackStats
from ..tokenize import Tokens
from .admit import failed_record
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
        self.source_of, self.names, self.materialize = source_of, list(source_names), materialize
        self.pool = DecodePool(self.cfg.decode_threads)
        self.rows: list[tuple[PackedSequence | StoredRow, list]] = []  # (row, its started jobs)
        self._new_counters()

    def _new_counters(self) -> None:
        self.stats, self.errors = PackStats(), []
        self.source_stats = [PackStats() for _ in self.names]

    def state_dict(self) -> dict:
        return {"batches": self.batches, "epoch": self.epoch, "parent": self.parent.state_dict()}

    def load_state_dict(self, state: dict, make: Callable[[dict], Held]) -> None:
        self.batches, self.epoch = int(state["batches"]), int(state["epoch"])
        self.parent.load_state_dict(state["parent"], make)

    def __iter__(self) -> Iterator[StreamBatch]:
        size = self.cfg.batch_size
        for item in self.parent:
            if isinstance(item, ErrorRecord):
                self.keep(item)
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
        if self.errors or self.stats.errors or self.stats.sequences:
            yield StreamBatch([], self._info(empty=True))

    def keep(self, rec: ErrorRecord) -> None:
        """Keep a record (with its source's stats), or raise it under ``errors="raise"``."""
        if self.cfg.errors == "raise":
            raise SampleError(rec.kind, rec.message, key=rec.key, shard=rec.shard, stage=rec.stage)
        self.errors.append(rec)
        self.stats.add_error(rec)
        k = self.source_of(rec.shard) if self.names else None
        if k is not None:
            self.source_stats[k].add_error(rec)

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
                self.keep(made.record(held.key, held.shard) if isinstance(made, SampleError)
                          else failed_record(held.key, held.shard, "decode", made))
                continue
            toks.append(made)
            arrivals.append(arrival)
            self._count(held, len(made))
        self.stats.add_sequence(PackedSequence([t.key for t in toks], [len(t) for t in toks], arrivals,
                                               seq.emitted_at), self.cfg.pack.seq_len)
        return toks

    def _count(self, held: Held, kept: int) -> None:
        plan = held.plan
        self.stats.add_example(plan.tokens, kept, plan.grid, plan.source_size)
        if self.names:
            st = self.source_stats[held.source]
            st.add_example(plan.tokens, kept, plan.grid, plan.source_size)
            st.examples += 1
            st.tokens += kept

    def _stored(self, row: StoredRow) -> list[Tokens]:
        for t in row:
            self.stats.add_example(int(t.meta.get("source_tokens", len(t))), len(t), t.grid, t.meta.get("source_size"))
        self.stats.add_sequence(PackedSequence([t.key for t in row], [len(t) for t in row], [0] * len(row), 0),
                                self.cfg.pack.seq_len)
        return list(row)

    def _info(self, empty: bool = False) -> StreamInfo:
        info = StreamInfo(self.worker, self.consumer, self.epoch, self.batches - (0 if empty else 1), self.stats,
                          self.errors, self.state_dict(), empty, dict(zip(self.names, self.source_stats)))
        self._new_counters()
        return info

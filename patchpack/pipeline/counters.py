"""What a worker stream counts between two batches: packing stats, error records, per-source stats.

:class:`StreamCounters` is kept on the stream's thread (never by the decode threads) and handed
out, then reset, with each batch (:class:`~patchpack.pipeline.info.StreamInfo`).
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import ErrorRecord, SampleError
from ..pack import PackedSequence
from ..stats import PackStats
from ..tokenize import Tokens
from .held import Held

__all__ = ["StreamCounters"]


class StreamCounters:
    """Stats and records since the last batch (module doc).

    Args:
        raise_errors: raise a record as a :class:`SampleError` instead of keeping it
            (``errors="raise"``).
        source_of: the source index of a shard url (for per-source stats of records).
        source_names: names for per-source stats (empty: none are kept).
        seq_len: ``L``, the capacity of a sequence.
    """

    def __init__(self, raise_errors: bool, source_of: Callable[[str], int | None], source_names: Sequence[str],
                 seq_len: int) -> None:
        self.raise_errors, self.source_of, self.names, self.seq_len = raise_errors, source_of, list(source_names), seq_len
        self.reset()

    def reset(self) -> None:
        self.stats, self.errors = PackStats(), []
        self.per_source = [PackStats() for _ in self.names]

    def take(self) -> tuple[PackStats, list[ErrorRecord], dict[str, PackStats]]:
        """What was counted since the last call, then start afresh."""
        out = self.stats, self.errors, dict(zip(self.names, self.per_source))
        self.reset()
        return out

    def keep(self, rec: ErrorRecord) -> None:
        """Keep a record (with its source's stats), or raise it under ``errors="raise"``."""
        if self.raise_errors:
            raise SampleError(rec.kind, rec.message, key=rec.key, shard=rec.shard, stage=rec.stage)
        self.errors.append(rec)
        self.stats.add_error(rec)
        k = self.source_of(rec.shard) if self.names else None
        if k is not None:
            self.per_source[k].add_error(rec)

    def example(self, held: Held, kept: int) -> None:
        """One example made into ``kept`` tokens."""
        plan = held.plan
        self.stats.add_example(plan.tokens, kept, plan.grid, plan.source_size)
        if self.names:
            st = self.per_source[held.source]
            st.add_example(plan.tokens, kept, plan.grid, plan.source_size)
            st.examples += 1
            st.tokens += kept

    def sequence(self, toks: Sequence[Tokens], arrivals: Sequence[int], emitted_at: int) -> None:
        """One packed row of ``toks`` (in slot order)."""
        self.stats.add_sequence(PackedSequence([t.key for t in toks], [len(t) for t in toks], list(arrivals),
                                               emitted_at), self.seq_len)

    def stored_row(self, row: Sequence[Tokens]) -> None:
        """One stored row served as it is."""
        for t in row:
            self.stats.add_example(int(t.meta.get("source_tokens", len(t))), len(t), t.grid, t.meta.get("source_size"))
        self.sequence(row, [0] * len(row), 0)

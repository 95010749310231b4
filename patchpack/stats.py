"""Packing statistics: JSON-serialisable and mergeable across workers and ranks.

Histograms are ``dict``s from a bucket to a count. Token counts are bucketed to
powers of two (``tokens_per_example``: bucket ``k`` holds ``2**(k-1) < n <= 2**k``);
rates and padding fractions to hundredths; grids are ``"HxW"`` strings so that the
whole object round-trips through JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .errors import ErrorRecord
from .pack import PackedSequence

__all__ = ["PackStats"]


def _pow2_bucket(n: int) -> int:
    return max(0, math.ceil(math.log2(max(1, n))))


def _pct_bucket(x: float) -> float:
    return round(min(max(x, 0.0), 1.0), 2)


@dataclass
class PackStats:
    """Counters and histograms over a packed stream.

    Attributes:
        examples: examples packed into emitted sequences.
        sequences: sequences emitted.
        tokens: real (non-padding) tokens in emitted sequences.
        capacity: ``sequences * L`` token slots.
        source_tokens: tokens before dropping, over examples seen by :meth:`add_example`.
        dropped_tokens: tokens removed by dropping (and by oversize truncation).
        errors: error records counted; ``error_kinds`` by kind.
        texts: texts tokenized into ``text_ids``; ``truncated_texts``: those cut to ``text_len``.
        wait_max, wait_sum: arrivals an example spent in the packer (max, total).
        examples_per_seq: examples in a sequence -> number of sequences.
        tokens_per_example: power-of-two bucket of packed tokens -> examples.
        grids: fitted grid ``"HxW"`` -> examples; ``source_sizes``: source ``"HxW"``
            bucketed to 32 px -> examples.
        drop_rates: realised drop fraction (hundredths) -> examples.
        padding_per_seq: padding fraction of a sequence (hundredths) -> sequences.
    """

    examples: int = 0
    sequences: int = 0
    tokens: int = 0
    capacity: int = 0
    source_tokens: int = 0
    dropped_tokens: int = 0
    errors: int = 0
    texts: int = 0
    truncated_texts: int = 0
    wait_max: int = 0
    wait_sum: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    examples_per_seq: dict[int, int] = field(default_factory=dict)
    tokens_per_example: dict[int, int] = field(default_factory=dict)
    grids: dict[str, int] = field(default_factory=dict)
    source_sizes: dict[str, int] = field(default_factory=dict)
    drop_rates: dict[float, int] = field(default_factory=dict)
    padding_per_seq: dict[float, int] = field(default_factory=dict)

    _HISTOGRAMS = (
        "error_kinds", "examples_per_seq", "tokens_per_example", "grids", "source_sizes", "drop_rates",
        "padding_per_seq",
    )

    # -- accumulation ---------------------------------------------------------------
    def add_sequence(self, seq: PackedSequence, seq_len: int) -> None:
        """Count one emitted sequence of capacity ``seq_len``."""
        n, tok = len(seq.lengths), seq.tokens
        self.sequences += 1
        self.examples += n
        self.tokens += tok
        self.capacity += seq_len
        _inc(self.examples_per_seq, n)
        _inc(self.padding_per_seq, _pct_bucket(1.0 - tok / seq_len))
        for length, arrival in zip(seq.lengths, seq.arrivals):
            _inc(self.tokens_per_example, _pow2_bucket(length))
            wait = seq.emitted_at - 1 - arrival
            self.wait_sum += wait
            if wait > self.wait_max:
                self.wait_max = wait

    def add_example(
        self,
        tokens_before: int,
        tokens_after: int,
        grid: tuple[int, ...] | None = None,
        source_size: tuple[int, int] | None = None,
    ) -> None:
        """Count one example's drop (``tokens_before -> tokens_after``), fitted grid and source size."""
        self.source_tokens += tokens_before
        self.dropped_tokens += tokens_before - tokens_after
        _inc(self.drop_rates, _pct_bucket(1.0 - tokens_after / max(1, tokens_before)))
        if grid is not None:
            h, w = grid[-2:]
            _inc(self.grids, f"{int(h)}x{int(w)}")
        if source_size is not None:
            h, w = (32 * round(int(s) / 32) for s in source_size)
            _inc(self.source_sizes, f"{h}x{w}")

    def add_error(self, record: ErrorRecord | str) -> None:
        """Count one error record (or a bare kind)."""
        kind = record if isinstance(record, str) else record.kind
        self.errors += 1
        _inc(self.error_kinds, kind)

    def merge(self, other: "PackStats") -> "PackStats":
        """Add ``other`` into ``self`` (in place) and return ``self``."""
        for f in fields(self):
            name = f.name
            if name in self._HISTOGRAMS:
                mine = getattr(self, name)
                for k, v in getattr(other, name).items():
                    mine[k] = mine.get(k, 0) + v
            elif name == "wait_max":
                self.wait_max = max(self.wait_max, other.wait_max)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    # -- derived --------------------------------------------------------------------
    @property
    def padding_fraction(self) -> float:
        """Share of token slots that are padding, in ``[0, 1]``."""
        return 1.0 - self.tokens / self.capacity if self.capacity else 0.0

    @property
    def mean_examples_per_seq(self) -> float:
        return self.examples / self.sequences if self.sequences else 0.0

    @property
    def max_wait(self) -> int:
        return self.wait_max

    @property
    def mean_wait(self) -> float:
        return self.wait_sum / self.examples if self.examples else 0.0

    @property
    def drop_fraction(self) -> float:
        return self.dropped_tokens / self.source_tokens if self.source_tokens else 0.0

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready dict: raw fields plus derived figures."""
        d = asdict(self)
        for name in self._HISTOGRAMS:
            d[name] = {str(k): v for k, v in sorted(getattr(self, name).items(), key=lambda kv: _sort_key(kv[0]))}
        d.update(
            padding_fraction=self.padding_fraction,
            mean_examples_per_seq=self.mean_examples_per_seq,
            mean_wait=self.mean_wait,
            drop_fraction=self.drop_fraction,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PackStats":
        """Inverse of :meth:`to_dict` (derived figures are ignored)."""
        kw = {}
        conv = {"examples_per_seq": int, "tokens_per_example": int, "drop_rates": float, "padding_per_seq": float}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name in cls._HISTOGRAMS:
                key = conv.get(f.name, str)
                v = {key(k): int(c) for k, c in v.items()}
            kw[f.name] = v
        return cls(**kw)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"examples packed   {self.examples:,} in {self.sequences:,} sequences "
            f"({self.mean_examples_per_seq:.2f} per sequence)",
            f"padding           {100 * self.padding_fraction:.3f}% of {self.capacity:,} token slots",
            f"tokens            {self.tokens:,} packed, {self.dropped_tokens:,} dropped "
            f"({100 * self.drop_fraction:.1f}% of {self.source_tokens:,})",
            f"packer delay      an example stays in the packer while {self.mean_wait:.0f} others arrive, on average "
            f"(at most {self.max_wait})",
        ]
        if self.texts:
            lines.append(f"texts             {self.texts:,} tokenized, {self.truncated_texts:,} cut to text_len")
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.error_kinds.items())) or "none"
        lines.append(f"errors            {self.errors} ({kinds})")
        return "\n".join(lines)


def _inc(d: dict, k) -> None:
    d[k] = d.get(k, 0) + 1


def _sort_key(k):
    if isinstance(k, str) and "x" in k:
        a, _, b = k.partition("x")
        try:
            return (0, int(a), int(b))
        except ValueError:
            return (1, k)
    return (0, k) if not isinstance(k, str) else (1, k)

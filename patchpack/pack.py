"""Streaming bin packing of examples (by token count) into sequences of length ``L``.

The packer sees only ``(handle, length)`` pairs, so it can decide where an example
goes before its pixels exist. Algorithms (``PackConfig.algorithm``):

* ``"bfd"`` (default): best-fit decreasing over a bounded buffer. Every
  ``buffer_size`` arrivals the buffer is sorted longest first and each example goes
  into the open sequence whose free space fits it most tightly (a new sequence
  when none does). Sequences that are not full are *carried* open into the next
  round, where later small examples fill their gaps. A sequence is emitted as
  soon as it is full, reaches ``max_per_seq`` examples, or its free space is
  smaller than every length seen so far; and at the latest when its oldest example
  would otherwise wait more than ``max_wait`` arrivals (the age bound).
* ``"first-fit"``: no sorting; each example goes into the oldest open sequence
  that fits (NaViT's greedy packing), with the same emission and age rules.
* ``"next-fit"``: one open sequence; emitted when the next example does not fit.

:func:`pack_offline` is the offline best-fit-decreasing reference over a whole
list. Examples longer than ``seq_len`` follow ``PackConfig.oversize``: ``"skip"``
(default: reported in ``Packer.rejected``, never packed), ``"truncate"`` (packed
with only ``seq_len`` tokens, the rest counted as dropped) or ``"raise"``.
The packer is deterministic: the same stream of lengths gives the same sequences.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, NamedTuple, Sequence

__all__ = [
    "PackConfig",
    "Packer",
    "PackedSequence",
    "OversizeError",
    "pack_lengths",
    "pack_offline",
    "ALGORITHMS",
]

ALGORITHMS = ("bfd", "first-fit", "next-fit")


class OversizeError(ValueError):
    """An example is longer than the sequence length and ``oversize="raise"``."""


@dataclass(frozen=True)
class PackConfig:
    """Packing policy.

    Attributes:
        seq_len: ``L``, tokens per sequence.
        max_per_seq: ``Emax``, examples per sequence (``None``: no cap).
        buffer_size: arrivals per best-fit round (``bfd``); bounds memory together
            with ``max_wait``.
        max_wait: age bound in arrivals: no example waits longer from arrival to
            emission. Default ``4 * buffer_size``; must be ``>= 2 * buffer_size``.
        algorithm: one of :data:`ALGORITHMS`.
        oversize: ``"skip"``, ``"truncate"`` or ``"raise"`` for examples longer than ``L``.
    """

    seq_len: int = 1024
    max_per_seq: int | None = None
    buffer_size: int = 256
    max_wait: int | None = None
    algorithm: str = "bfd"
    oversize: str = "skip"

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        if self.max_per_seq is not None and self.max_per_seq < 1:
            raise ValueError("max_per_seq must be >= 1")
        if self.buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        if self.max_wait is not None and self.max_wait < 2 * self.buffer_size:
            raise ValueError("max_wait must be at least 2 * buffer_size")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown packing algorithm {self.algorithm!r}; expected one of {ALGORITHMS}")
        if self.oversize not in ("skip", "truncate", "raise"):
            raise ValueError("oversize must be 'skip', 'truncate' or 'raise'")

    @property
    def wait_bound(self) -> int:
        return self.max_wait if self.max_wait is not None else 4 * self.buffer_size


class PackedSequence(NamedTuple):
    """One emitted sequence: its examples in slot order.

    ``lengths`` are the packed token counts (after truncation), ``arrivals`` the
    0-based arrival index of each example, ``emitted_at`` the number of arrivals
    seen when the sequence was emitted (wait = ``emitted_at - 1 - arrival``).
    """

    handles: list
    lengths: list[int]
    arrivals: list[int]
    emitted_at: int

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


class _Bin:
    __slots__ = ("free", "oldest", "items")

    def __init__(self, free: int, oldest: int) -> None:
        self.free = free
        self.oldest = oldest
        self.items: list[tuple[int, int, Any]] = []  # (arrival, length, handle)


class _FreeIndex:
    """Open bins bucketed by free space, for O(log L) best-fit lookups."""

    __slots__ = ("keys", "buckets")

    def __init__(self) -> None:
        self.keys: list[int] = []  # sorted distinct free sizes with a non-empty bucket
        self.buckets: dict[int, list[_Bin]] = {}

    def add(self, b: _Bin) -> None:
        bucket = self.buckets.get(b.free)
        if bucket is None:
            self.buckets[b.free] = [b]
            insort(self.keys, b.free)
        else:
            bucket.append(b)

    def best(self, n: int) -> _Bin | None:
        """Remove and return the open bin with the least free space ``>= n`` (oldest first on ties)."""
        i = bisect_left(self.keys, n)
        if i == len(self.keys):
            return None
        free = self.keys[i]
        bucket = self.buckets[free]
        b = bucket.pop(0)
        if not bucket:
            del self.buckets[free]
            del self.keys[i]
        return b

    def remove(self, b: _Bin) -> None:
        bucket = self.buckets[b.free]
        bucket.remove(b)
        if not bucket:
            del self.buckets[b.free]
            del self.keys[bisect_left(self.keys, b.free)]

    def __iter__(self):
        for k in self.keys:
            yield from self.buckets[k]

    def __len__(self) -> int:
        return sum(len(v) for v in self.buckets.values())


@dataclass
class Packer:
    """Streaming packer: :meth:`push` examples, collect emitted sequences, :meth:`flush` at the end.

    >>> p = Packer(PackConfig(seq_len=8, buffer_size=4))
    >>> out = [s for n in [5, 3, 4, 4, 8, 1] for s in p.push(n, n)] + p.flush()
    >>> sorted(s.lengths for s in out)
    [[1], [4, 4], [5, 3], [8]]
    """

    config: PackConfig = field(default_factory=PackConfig)
    #: ``(handle, length)`` of examples refused under ``oversize="skip"``.
    rejected: list = field(default_factory=list)
    #: tokens cut by ``oversize="truncate"``.
    truncated_tokens: int = 0

    def __post_init__(self) -> None:
        self._arrivals = 0
        self._pending: list[tuple[int, int, Any]] = []
        self._open = _FreeIndex()
        self._fifo: list[_Bin] = []  # first-fit / next-fit open bins, oldest first
        self._min_len = self.config.seq_len

    # -- public API -----------------------------------------------------------------
    @property
    def arrivals(self) -> int:
        return self._arrivals

    @property
    def held(self) -> int:
        """Examples currently held (buffered or in open sequences)."""
        return len(self._pending) + sum(len(b.items) for b in self._bins())

    def push(self, handle: Hashable, length: int) -> list[PackedSequence]:
        """Add one example of ``length`` tokens; return the sequences this completes."""
        cfg = self.config
        length = int(length)
        if length < 1:
            raise ValueError(f"example {handle!r} has {length} tokens; every example needs at least one")
        arrival = self._arrivals
        self._arrivals += 1
        if length > cfg.seq_len:
            if cfg.oversize == "raise":
                raise OversizeError(f"example {handle!r} has {length} tokens > seq_len={cfg.seq_len}")
            if cfg.oversize == "skip":
                self.rejected.append((handle, length))
                return []
            self.truncated_tokens += length - cfg.seq_len
            length = cfg.seq_len
        if length < self._min_len:
            self._min_len = length
        item = (arrival, length, handle)
        if cfg.algorithm == "bfd":
            self._pending.append(item)
            if len(self._pending) >= cfg.buffer_size:
                return self._round(final=False)
            return []
        return self._push_fifo(item)

    def flush(self) -> list[PackedSequence]:
        """Emit everything held (end of stream)."""
        if self.config.algorithm == "bfd":
            return self._round(final=True)
        out = [self._emit(b) for b in self._fifo]
        self._fifo = []
        return out

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (handles are stored as given)."""
        return {
            "arrivals": self._arrivals,
            "min_len": self._min_len,
            "pending": list(self._pending),
            "bins": [(b.free, b.oldest, list(b.items)) for b in self._bins()],
            "rejected": list(self.rejected),
            "truncated_tokens": self.truncated_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.__post_init__()
        self._arrivals = state["arrivals"]
        self._min_len = state["min_len"]
        self._pending = [tuple(x) for x in state["pending"]]
        self.rejected = list(state["rejected"])
        self.truncated_tokens = state["truncated_tokens"]
        for free, oldest, items in state["bins"]:
            b = _Bin(free, oldest)
            b.items = [tuple(x) for x in items]
            if self.config.algorithm == "bfd":
                self._open.add(b)
            else:
                self._fifo.append(b)

    # -- internals ------------------------------------------------------------------
    def _bins(self) -> list[_Bin]:
        return list(self._open) if self.config.algorithm == "bfd" else list(self._fifo)

    def _emit(self, b: _Bin) -> PackedSequence:
        arrivals, lengths, handles = zip(*b.items)
        return PackedSequence(list(handles), list(lengths), list(arrivals), self._arrivals)

    def _done(self, b: _Bin) -> bool:
        cap = self.config.max_per_seq
        return b.free < self._min_len or (cap is not None and len(b.items) >= cap)

    def _round(self, final: bool) -> list[PackedSequence]:
        cfg = self.config
        out: list[PackedSequence] = []
        pending, self._pending = self._pending, []
        pending.sort(key=lambda it: (-it[1], it[0]))
        index = self._open
        for item in pending:
            n = item[1]
            b = index.best(n)
            if b is None:
                b = _Bin(cfg.seq_len, item[0])
            elif item[0] < b.oldest:
                b.oldest = item[0]
            b.items.append(item)
            b.free -= n
            if self._done(b):
                out.append(self._emit(b))
            else:
                index.add(b)
        if final:
            out.extend(self._emit(b) for b in index)
            self._open = _FreeIndex()
            return out
        # age bound: emit what would exceed max_wait before the next round completes
        deadline = self._arrivals + cfg.buffer_size - cfg.wait_bound
        stale = [b for b in index if b.oldest <= deadline or self._done(b)]
        for b in sorted(stale, key=lambda b: b.oldest):
            index.remove(b)
            out.append(self._emit(b))
        return out

    def _push_fifo(self, item: tuple[int, int, Any]) -> list[PackedSequence]:
        cfg = self.config
        n = item[1]
        out: list[PackedSequence] = []
        target = None
        if cfg.algorithm == "next-fit":
            if self._fifo and self._fifo[0].free < n:
                out.append(self._emit(self._fifo.pop()))
            if self._fifo:
                target = self._fifo[0]
        else:
            for b in self._fifo:
                if b.free >= n:
                    target = b
                    break
        if target is None:
            target = _Bin(cfg.seq_len, item[0])
            self._fifo.append(target)
        target.items.append(item)
        target.free -= n
        keep = []
        deadline = self._arrivals - cfg.wait_bound
        for b in self._fifo:
            if self._done(b) or b.oldest <= deadline:
                out.append(self._emit(b))
            else:
                keep.append(b)
        self._fifo = keep
        return out


def pack_lengths(
    lengths: Sequence[int] | Iterable[int],
    seq_len: int,
    *,
    max_per_seq: int | None = None,
    buffer_size: int = 256,
    max_wait: int | None = None,
    algorithm: str = "bfd",
    oversize: str = "skip",
) -> list[list[int]]:
    """Pack token counts into sequences of at most ``seq_len`` tokens.

    Returns the sequences as lists of indices into ``lengths``, in emission order.
    Oversize examples are left out under ``oversize="skip"`` (see :class:`Packer`
    to get them reported).

    >>> pack_lengths([5, 3, 4, 4, 8, 1], seq_len=8, buffer_size=4)
    [[2, 3], [0, 1], [4], [5]]
    """
    packer = Packer(PackConfig(seq_len, max_per_seq, buffer_size, max_wait, algorithm, oversize))
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        for s in packer.push(i, n):
            out.append(s.handles)
    out.extend(s.handles for s in packer.flush())
    return out


def pack_offline(lengths: Sequence[int], seq_len: int, max_per_seq: int | None = None) -> list[list[int]]:
    """Offline best-fit decreasing over the whole list: the reference for padding.

    Examples longer than ``seq_len`` are left out. Returns index lists.
    """
    order = sorted((i for i, n in enumerate(lengths) if 0 < n <= seq_len), key=lambda i: (-lengths[i], i))
    index = _FreeIndex()
    bins: list[_Bin] = []
    for i in order:
        n = int(lengths[i])
        b = index.best(n)
        if b is None:
            b = _Bin(seq_len, i)
            bins.append(b)
        b.items.append((i, n, i))
        b.free -= n
        if b.free > 0 and (max_per_seq is None or len(b.items) < max_per_seq):
            index.add(b)
    return [[it[2] for it in b.items] for b in bins]

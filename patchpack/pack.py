"""Streaming bin packing of examples (by token count) into sequences of length ``L``.

The packer sees only ``(handle, length)`` pairs, so it can decide where an example
goes before its pixels exist. Algorithms (``PackConfig.algorithm``):

* ``"bfd"`` (default): best-fit decreasing over a bounded buffer, one sequence
  at a time. Examples collect in a buffer of ``buffer_size``; when it is full,
  a sequence is *seeded* with the oldest buffered example and then filled with the
  largest buffered example that still fits, until none fits (or ``max_per_seq``
  is reached); if a gap remains, the shortest filler is swapped for the pair of
  buffered examples that closes it best. A sequence is also built early whenever the oldest buffered example
  has waited ``max_wait`` arrivals, so no example waits longer. With ``max_open > 0`` a
  sequence left with free space is *carried* open and topped up first at later
  rounds, until it is full or its oldest example would wait ``max_wait`` arrivals.
* ``"first-fit"``: no sorting; each example goes into the oldest open sequence
  that fits (NaViT's greedy packing); sequences are emitted when full or when
  their oldest example reaches ``max_wait``.
* ``"next-fit"``: one open sequence; emitted when the next example does not fit.

:func:`pack_offline` is offline best-fit decreasing over a whole list, the
reference for padding. Examples longer than ``seq_len`` follow
``PackConfig.oversize``: ``"skip"`` (default: reported in ``Packer.rejected``,
never packed), ``"truncate"`` (packed with only ``seq_len`` tokens, the rest
counted in ``Packer.truncated_tokens``) or ``"raise"``. The packer is
deterministic: the same stream of lengths gives the same sequences. Memory is
bounded: at most ``buffer_size`` examples plus the carried sequences are held.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

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
        buffer_size: examples held before a sequence is built (``bfd``); bounds both
            memory and the wait of every example.
        max_open: sequences carried open with free space (``bfd``; 0 = none).
        max_wait: age bound: no example waits more arrivals than this between its
            own arrival and its sequence's emission. Default ``2 * buffer_size``.
        algorithm: one of :data:`ALGORITHMS`.
        oversize: ``"skip"``, ``"truncate"`` or ``"raise"`` for examples longer than ``L``.
    """

    seq_len: int = 1024
    max_per_seq: int | None = None
    buffer_size: int = 1024
    max_wait: int | None = None
    algorithm: str = "bfd"
    oversize: str = "skip"
    max_open: int = 0

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        if self.max_per_seq is not None and self.max_per_seq < 1:
            raise ValueError("max_per_seq must be >= 1")
        if self.buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        if self.max_wait is not None and self.max_wait < self.buffer_size:
            raise ValueError("max_wait must be at least buffer_size")
        if self.max_open < 0:
            raise ValueError("max_open must be >= 0")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown packing algorithm {self.algorithm!r}; expected one of {ALGORITHMS}")
        if self.oversize not in ("skip", "truncate", "raise"):
            raise ValueError("oversize must be 'skip', 'truncate' or 'raise'")

    @property
    def wait_bound(self) -> int:
        return self.max_wait if self.max_wait is not None else 2 * self.buffer_size


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
    """Open bins bucketed by free space, for O(log L) best-fit lookups (offline reference)."""

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


#: steps of the pair search per sequence (bounds the cost of the pair step)
PAIR_SEARCH = 32


class _Buffer:
    """Buffered examples bucketed by length: O(log L) "largest that fits" and oldest-first."""

    __slots__ = ("keys", "buckets", "items", "order")

    def __init__(self) -> None:
        self.keys: list[int] = []  # sorted distinct lengths present
        self.buckets: dict[int, deque[int]] = {}  # length -> arrivals, oldest first
        self.items: dict[int, tuple[int, Any]] = {}  # arrival -> (length, handle)
        self.order: deque[int] = deque()  # arrivals, oldest first (lazily pruned)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, arrival: int, length: int, handle: Any) -> None:
        self.items[arrival] = (length, handle)
        self.order.append(arrival)
        bucket = self.buckets.get(length)
        if bucket is None:
            self.buckets[length] = deque((arrival,))
            insort(self.keys, length)
        else:
            bucket.append(arrival)

    def _pop_bucket(self, length: int) -> int:
        bucket = self.buckets[length]
        arrival = bucket.popleft()
        if not bucket:
            del self.buckets[length]
            del self.keys[bisect_left(self.keys, length)]
        return arrival

    def oldest(self) -> int:
        """Arrival index of the oldest buffered example (the buffer must not be empty)."""
        order, items = self.order, self.items
        while order[0] not in items:
            order.popleft()
        return order[0]

    def pop_oldest(self) -> tuple[int, int, Any]:
        arrival = self.oldest()
        self.order.popleft()
        items = self.items
        length, handle = items.pop(arrival)
        # the oldest example overall is also the oldest of its length
        self._pop_bucket(length)
        return arrival, length, handle

    def take_fitting(self, free: int, room: int, out: list) -> int:
        """Move into ``out`` the longest example that fits ``free``, repeatedly, at most ``room`` times.

        Returns the free space left. The hot loop of the packer, hence inlined.
        """
        keys, buckets, items = self.keys, self.buckets, self.items
        while free and room:
            i = bisect_right(keys, free) - 1
            if i < 0:
                break
            length = keys[i]
            bucket = buckets[length]
            arrival = bucket.popleft()
            if not bucket:
                del buckets[length]
                del keys[i]
            out.append((arrival, length, items.pop(arrival)[1]))
            free -= length
            room -= 1
        return free

    def pop_fitting(self, free: int) -> tuple[int, int, Any] | None:
        """Remove and return the longest example of at most ``free`` tokens (oldest on ties)."""
        i = bisect_right(self.keys, free) - 1
        if i < 0:
            return None
        length = self.keys[i]
        arrival = self._pop_bucket(length)
        return arrival, length, self.items.pop(arrival)[1]

    def restore(self, arrival: int, length: int, handle: Any) -> None:
        """Put back an example taken earlier, in its arrival order."""
        self.items[arrival] = (length, handle)
        insort(self.order, arrival)
        bucket = self.buckets.get(length)
        if bucket is None:
            self.buckets[length] = deque((arrival,))
            insort(self.keys, length)
        else:
            insort(bucket, arrival)

    def best_pair(self, low: int, high: int, budget: int = PAIR_SEARCH) -> tuple[int, int] | None:
        """Lengths ``(a, b)`` of two buffered examples with ``low < a + b <= high``, ``a + b`` largest.

        A two-pointer walk over the distinct lengths, stopped early at an exact fill
        or after ``budget`` steps.
        """
        keys, buckets = self.keys, self.buckets
        lo, hi = 0, bisect_right(keys, high) - 1
        best, pair = low, None
        while lo <= hi and budget > 0:
            budget -= 1
            total = keys[lo] + keys[hi]
            if total > high:
                hi -= 1
                continue
            if lo == hi and len(buckets[keys[lo]]) < 2:
                break
            if total > best:
                best, pair = total, (keys[lo], keys[hi])
                if total == high:
                    break
            lo += 1
        return pair

    def __iter__(self):
        for arrival in sorted(self.items):
            length, handle = self.items[arrival]
            yield arrival, length, handle


@dataclass
class Packer:
    """Streaming packer: :meth:`push` examples, collect emitted sequences, :meth:`flush` at the end.

    >>> p = Packer(PackConfig(seq_len=8, buffer_size=4))
    >>> out = [s for n in [5, 3, 4, 4, 8, 1] for s in p.push(n, n)] + p.flush()
    >>> [s.lengths for s in out]
    [[5, 3], [4, 4], [8], [1]]
    """

    config: PackConfig = field(default_factory=PackConfig)
    #: ``(handle, length)`` of examples refused under ``oversize="skip"``.
    rejected: list = field(default_factory=list)
    #: tokens cut by ``oversize="truncate"``.
    truncated_tokens: int = 0

    def __post_init__(self) -> None:
        self._arrivals = 0
        self._buffer = _Buffer()
        self._open: list[_Bin] = []  # carried (bfd) or open (first/next-fit) sequences, oldest first
        cfg = self.config  # hot-path constants
        self._limits = (cfg.seq_len, cfg.buffer_size, cfg.wait_bound, cfg.algorithm == "bfd")

    # -- public API -----------------------------------------------------------------
    @property
    def arrivals(self) -> int:
        """Examples pushed so far (including rejected ones)."""
        return self._arrivals

    @property
    def held(self) -> int:
        """Examples currently held (buffered or in open sequences)."""
        return len(self._buffer) + sum(len(b.items) for b in self._open)

    def push(self, handle: Any, length: int) -> list[PackedSequence]:
        """Add one example of ``length`` tokens; return the sequences this completes."""
        seq_len, buffer_size, wait_bound, bfd = self._limits
        length = int(length)
        arrival = self._arrivals
        if length < 1 or length > seq_len:
            length = self._irregular(handle, length)
            if length == 0:
                self._arrivals += 1
                return []
        self._arrivals = arrival + 1
        if not bfd:
            return self._push_fifo((arrival, length, handle))
        buf = self._buffer
        buf.add(arrival, length, handle)
        # order[0] is never younger than the oldest live example: test it before pruning
        deadline = arrival - wait_bound
        if len(buf.items) >= buffer_size or (buf.order[0] <= deadline and buf.oldest() <= deadline):
            return self._build()
        return []

    def _irregular(self, handle: Any, length: int) -> int:
        """Length to pack for an example outside ``1..seq_len`` (0: not packed)."""
        cfg = self.config
        if length < 1:
            raise ValueError(f"example {handle!r} has {length} tokens; every example needs at least one")
        if cfg.oversize == "raise":
            raise OversizeError(f"example {handle!r} has {length} tokens > seq_len={cfg.seq_len}")
        if cfg.oversize == "skip":
            self.rejected.append((handle, length))
            return 0
        self.truncated_tokens += length - cfg.seq_len
        return cfg.seq_len

    def flush(self) -> list[PackedSequence]:
        """Emit everything held (end of stream)."""
        out: list[PackedSequence] = []
        if self.config.algorithm == "bfd":
            for b in self._open:
                self._fill(b)
            out += [self._emit(b) for b in self._open]
            self._open = []
            while len(self._buffer):
                out.append(self._emit(self._seed_and_fill()))
        else:
            out += [self._emit(b) for b in self._open]
            self._open = []
        return out

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (handles are stored as given)."""
        return {
            "arrivals": self._arrivals,
            "buffer": list(self._buffer),
            "open": [(b.free, b.oldest, list(b.items)) for b in self._open],
            "rejected": list(self.rejected),
            "truncated_tokens": self.truncated_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.__post_init__()
        self._arrivals = int(state["arrivals"])
        for arrival, length, handle in state["buffer"]:
            self._buffer.add(int(arrival), int(length), handle)
        for free, oldest, items in state["open"]:
            b = _Bin(int(free), int(oldest))
            b.items = [tuple(x) for x in items]
            self._open.append(b)
        self.rejected = list(state["rejected"])
        self.truncated_tokens = int(state["truncated_tokens"])

    # -- internals ------------------------------------------------------------------
    def _emit(self, b: _Bin) -> PackedSequence:
        arrivals, lengths, handles = zip(*b.items)
        return PackedSequence(list(handles), list(lengths), list(arrivals), self._arrivals)

    def _full(self, b: _Bin) -> bool:
        cap = self.config.max_per_seq
        return b.free == 0 or (cap is not None and len(b.items) >= cap)

    def _fill(self, b: _Bin) -> None:
        """Top ``b`` up with the longest buffered examples that fit, then try one pair swap.

        Greedy longest-first can strand a gap that two smaller examples would close:
        if free space is left, the last (shortest) filler ``x`` is swapped for the
        two buffered examples whose total is largest in ``(x, x + free]``.
        """
        cap = self.config.max_per_seq
        buf, items = self._buffer, b.items
        room = (cap if cap is not None else self.config.seq_len) - len(items)
        b.free = buf.take_fitting(b.free, room, items)
        if b.free and len(items) >= 2 and (cap is None or len(items) < cap) and buf.keys:
            x = items[-1][1]
            pair = buf.best_pair(x, x + b.free)
            if pair is not None:
                old = items.pop()
                for n in pair:
                    items.append(buf.pop_fitting(n))
                buf.restore(*old)
                b.free -= pair[0] + pair[1] - x

    def _seed_and_fill(self) -> _Bin:
        """A new sequence seeded with the oldest buffered example, filled longest-first."""
        arrival, length, handle = self._buffer.pop_oldest()
        b = _Bin(self.config.seq_len - length, arrival)
        b.items.append((arrival, length, handle))
        self._fill(b)
        return b

    def _build(self) -> list[PackedSequence]:
        cfg = self.config
        out: list[PackedSequence] = []
        if self._open:  # top up carried sequences first, oldest first
            deadline = self._arrivals - 1 - cfg.wait_bound
            keep = []
            for b in self._open:
                self._fill(b)
                if self._full(b) or b.oldest <= deadline:
                    out.append(self._emit(b))
                else:
                    keep.append(b)
            self._open = keep
        buf = self._buffer
        deadline = self._arrivals - 1 - cfg.wait_bound
        items = buf.items
        while items and (len(items) >= cfg.buffer_size or (buf.order[0] <= deadline and buf.oldest() <= deadline)):
            b = self._seed_and_fill()
            if not cfg.max_open or self._full(b):
                out.append(self._emit(b))
                continue
            self._open.append(b)
            if len(self._open) > cfg.max_open:
                out.append(self._emit(self._open.pop(0)))
        return out

    def _push_fifo(self, item: tuple[int, int, Any]) -> list[PackedSequence]:
        cfg = self.config
        n = item[1]
        out: list[PackedSequence] = []
        target = None
        if cfg.algorithm == "next-fit":
            if self._open and self._open[0].free < n:
                out.append(self._emit(self._open.pop()))
            if self._open:
                target = self._open[0]
        else:
            for b in self._open:
                if b.free >= n:
                    target = b
                    break
        if target is None:
            target = _Bin(cfg.seq_len, item[0])
            self._open.append(target)
        target.items.append(item)
        target.free -= n
        if cfg.algorithm == "next-fit":
            if self._full(target):
                out.append(self._emit(self._open.pop()))
            return out
        keep = []
        deadline = self._arrivals - cfg.wait_bound
        for b in self._open:
            if self._full(b) or b.oldest <= deadline:
                out.append(self._emit(b))
            else:
                keep.append(b)
        self._open = keep
        return out


def pack_lengths(
    lengths: Sequence[int] | Iterable[int],
    seq_len: int,
    *,
    max_per_seq: int | None = None,
    buffer_size: int = 1024,
    max_wait: int | None = None,
    algorithm: str = "bfd",
    oversize: str = "skip",
    max_open: int = 0,
) -> list[list[int]]:
    """Pack token counts into sequences of at most ``seq_len`` tokens.

    Returns the sequences as lists of indices into ``lengths``, in emission order.
    Oversize examples are left out under ``oversize="skip"`` (see :class:`Packer`
    to get them reported).

    >>> pack_lengths([5, 3, 4, 4, 8, 1], seq_len=8, buffer_size=4)
    [[0, 1], [2, 3], [4], [5]]
    """
    packer = Packer(PackConfig(seq_len, max_per_seq, buffer_size, max_wait, algorithm, oversize, max_open))
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

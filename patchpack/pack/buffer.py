"""The packers' data structures: open bins, a free-space index and the length-bucketed buffer."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from typing import Any

__all__ = ["Bin", "FreeIndex", "Buffer", "PAIR_SEARCH"]


class Bin:
    __slots__ = ("free", "oldest", "items")

    def __init__(self, free: int, oldest: int) -> None:
        self.free = free
        self.oldest = oldest
        self.items: list[tuple[int, int, Any]] = []  # (arrival, length, handle)


class FreeIndex:
    """Open bins bucketed by free space, for O(log L) best-fit lookups (offline reference)."""

    __slots__ = ("keys", "buckets")

    def __init__(self) -> None:
        self.keys: list[int] = []  # sorted distinct free sizes with a non-empty bucket
        self.buckets: dict[int, list[Bin]] = {}

    def add(self, b: Bin) -> None:
        bucket = self.buckets.get(b.free)
        if bucket is None:
            self.buckets[b.free] = [b]
            insort(self.keys, b.free)
        else:
            bucket.append(b)

    def best(self, n: int) -> Bin | None:
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


class Buffer:
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

    def put_back(self, arrival: int, length: int, handle: Any) -> None:
        """Return an example taken out earlier, in its arrival order.

        ``order`` stays sorted (stale entries included), so a bisection tells whether the
        arrival is still listed; it is not when it was pruned as the oldest while out (a
        carried sequence's filler from an earlier round, or one restored from a state).
        """
        self.items[arrival] = (length, handle)
        order = self.order
        i = bisect_left(order, arrival)
        if i == len(order) or order[i] != arrival:
            order.insert(i, arrival)
        bucket = self.buckets.get(length)
        if bucket is None:
            self.buckets[length] = deque((arrival,))
            insort(self.keys, length)
        else:
            insort(bucket, arrival)

    def pop_arrival(self, arrival: int) -> tuple[int, int, Any]:
        """Remove and return the example that arrived ``arrival``-th (it must be buffered)."""
        length, handle = self.items.pop(arrival)
        bucket = self.buckets[length]
        bucket.remove(arrival)
        if not bucket:
            del self.buckets[length]
            del self.keys[bisect_left(self.keys, length)]
        return arrival, length, handle

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


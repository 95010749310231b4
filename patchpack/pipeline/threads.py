"""Decode threads inside one worker: a batch's examples made by a thread pool, in stream order.

Pillow and PyAV release the GIL while they decode and resize, so ``decode_threads=N``
threads of one worker process use ``N`` cores with one packer buffer, one shard reader
and one copy of everything else (``N`` worker processes would hold ``N`` of each).

Only pure per-example work runs in the threads (bytes -> pixels -> tokens -> dropped
tokens, each example's randomness from its own key); admission, packing, stats and error
records stay on the stream's thread, in order. Results come back in submission order, so
the batches are the same for every ``N``.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

__all__ = ["DecodePool"]

T = TypeVar("T")
R = TypeVar("R")


class DecodePool:
    """An ordered map over ``threads`` threads (``threads=1``: a plain loop, no pool)."""

    def __init__(self, threads: int = 1) -> None:
        if int(threads) < 1:
            raise ValueError(f"decode_threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self._pool: ThreadPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, computed by the pool; ``fn`` should return its
        per-item failures rather than raise them (an exception stops the whole map)."""
        items = list(items)
        if self.threads == 1 or len(items) < 2:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="patchpack-decode")
        return list(self._pool.map(fn, items))

    def submit(self, fn: Callable[[T], R], item: T) -> "Future[R] | None":
        """Start ``fn(item)`` in the pool now (``None`` with one thread: the caller runs it when
        needed). Lets a stream decode rows already packed while it reads and packs the next ones."""
        if self.threads == 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="patchpack-decode")
        return self._pool.submit(fn, item)

    def close(self) -> None:
        """Stop the threads (a later :meth:`map` starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self) -> dict:  # a stream may be pickled into DataLoader workers: no live threads
        return {"threads": self.threads, "_pool": None}

    def __setstate__(self, state: dict) -> None:
        self.threads, self._pool = state["threads"], None

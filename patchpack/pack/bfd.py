"""The default streaming packer: best-fit decreasing over a bounded buffer (``algorithm="bfd"``).

The packer sees only ``(handle, length)`` pairs, so it can decide where an example goes
before its pixels exist. Examples collect in a buffer of ``buffer_size``; when it is full,
a sequence is *seeded* with the oldest buffered example and then filled with the largest
buffered example that still fits, until none fits (or ``max_per_seq`` is reached); if a
gap remains, fillers are swapped for pairs of buffered examples that close it, and then
all fillers are re-chosen by an exact subset sum over the buffer's lengths when that fills
more (bounded work per sequence; only sequences left with a gap pay for it). A sequence is
also built early whenever the oldest buffered example has waited ``max_wait`` arrivals, so
no example waits longer. With ``max_open > 0`` a sequence left with free space is *carried*
open and topped up first at later rounds, until it is full or its oldest example would wait
``max_wait`` arrivals.

Examples longer than ``seq_len`` follow ``PackConfig.oversize``: ``"skip"`` (default:
returned in ``Emitted.rejected``, never packed), ``"truncate"`` (packed with only
``seq_len`` tokens, the rest counted in ``truncated_tokens``) or ``"raise"``. The packer is
deterministic: the same stream of lengths gives the same sequences. Memory is bounded: at
most ``buffer_size`` examples plus the carried sequences are held, and, when the packer
has a ``size_of`` (the loader's does), sequences are built as soon as the held bytes exceed
``buffer_bytes``, so a stream of large files holds fewer examples.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from .base import Emitted, Packer, register_packer
from .buffer import Bin, Buffer
from .config import PackConfig

__all__ = ["BFDPacker", "SUBSET_GROUPS"]

#: distinct buffered lengths the exact subset-sum completion tries per sequence (bounds its cost)
SUBSET_GROUPS = 16


class BFDPacker(Packer):
    """Best-fit decreasing over a bounded buffer (see module doc)."""

    def __init__(self, config: PackConfig | None = None) -> None:
        super().__init__(config)
        self._buffer = Buffer()
        cfg = self.config  # hot-path constants
        self._limits = (cfg.buffer_size, cfg.effective_max_wait)

    @property
    def held(self) -> int:
        return len(self._buffer) + sum(len(b.items) for b in self.open_bins)

    def place(self, arrival: int, length: int, handle: Any) -> Emitted:
        """Buffer the example; build sequences when the buffer is full (in examples or bytes)
        or its oldest example reached the wait bound."""
        buffer_size, effective_max_wait = self._limits
        buf = self._buffer
        buf.add(arrival, length, handle)
        full = len(buf.items) >= buffer_size
        if self.size_of is not None:
            self.held_bytes += self.size_of(handle)
            full = full or self._over_bytes()
        # order[0] is never younger than the oldest live example: test it before pruning
        deadline = arrival - effective_max_wait
        if full or (buf.order[0] <= deadline and buf.oldest() <= deadline):
            return self._build()
        return Emitted()

    def flush(self) -> Emitted:
        """Emit everything held (end of stream)."""
        out = Emitted()
        for b in self.open_bins:
            self._fill(b)
        out += [self.emit(b) for b in self.open_bins]
        self.open_bins = []
        while len(self._buffer):  # nothing waits any more: longest first, as offline
            out.append(self.emit(self._seed_and_fill(longest=True)))
        return out

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["buffer"] = list(self._buffer)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for arrival, length, handle in state["buffer"]:
            self._buffer.add(int(arrival), int(length), handle)
            if self.size_of is not None:
                self.held_bytes += self.size_of(handle)

    def _over_bytes(self) -> bool:
        cap = self.config.buffer_bytes
        return self.size_of is not None and cap is not None and self.held_bytes > cap

    # -- internals ------------------------------------------------------------------
    def _fill(self, b: Bin) -> None:
        """Top ``b`` up longest-first; if a gap remains, close it by exchanges with the buffer.

        Greedy longest-first can strand a gap that other buffered examples would close. Each
        filler ``x`` (newest first) is then swapped for the two buffered examples whose total
        is largest in ``(x, x + free]``, and if a gap still remains every filler is re-chosen
        by an exact subset sum over the buffer (:meth:`_complete`). The seed (the sequence's
        oldest example, which bounds every wait) always stays.
        """
        cap = self.config.max_per_seq
        buf, items = self._buffer, b.items
        room = (cap if cap is not None else self.config.seq_len) - len(items)
        b.free = buf.take_fitting(b.free, room, items)
        if not b.free or len(items) < 2 or not buf.keys:
            return
        j = len(items) - 1
        while j >= 1 and (cap is None or len(items) < cap):
            x = items[j][1]
            pair = buf.best_pair(x, x + b.free)
            if pair is not None:
                old = items[j]
                items[j] = buf.pop_fitting(pair[0])
                items.append(buf.pop_fitting(pair[1]))
                buf.put_back(*old)
                b.free -= pair[0] + pair[1] - x
                if not b.free or not buf.keys:
                    return
            j -= 1
        self._complete(b)

    def _complete(self, b: Bin) -> None:
        """Re-choose the fillers of ``b`` (all but the seed) as the buffered subset with the largest total that fits.

        A bitset subset sum (bit ``s`` set: total ``s`` is reachable) over the distinct buffered
        lengths, longest first, at most :data:`SUBSET_GROUPS` of them, stopped as soon as the
        space is filled exactly. The new fillers are kept only when they fill more (and
        respect ``max_per_seq``); the longest length of each group is taken oldest first.
        """
        buf, items = self._buffer, b.items
        old = items[1:]
        olds = sum(it[1] for it in old)
        space = b.free + olds
        for it in old:
            buf.put_back(*it)
        keys, buckets = buf.keys, buf.buckets
        mask = (2 << space) - 1
        bits, pieces = 1, []  # pieces: (length, copies, reachable totals before them)
        i = bisect_right(keys, space) - 1
        stop = max(-1, i - SUBSET_GROUPS)
        while i > stop:
            n = keys[i]
            i -= 1
            c = min(len(buckets[n]), space // n)
            k = 1
            while c > 0:  # copies of one length in pieces of 1, 2, 4, ...
                k = min(k, c)
                pieces.append((n, k, bits))
                bits = (bits | (bits << (n * k))) & mask
                c -= k
                k <<= 1
            if bits.bit_length() > space:  # ``space`` reachable: an exact fill
                break
        best = bits.bit_length() - 1
        chosen: list[int] = []
        if best > olds:
            t = best
            for n, k, before in reversed(pieces):
                if t and not (before >> t) & 1:
                    chosen += [n] * k
                    t -= n * k
            cap = self.config.max_per_seq
            if cap is not None and len(chosen) + 1 > cap:
                chosen = []
        del items[1:]
        if not chosen:  # keep the fillers found before
            items += [buf.pop_arrival(it[0]) for it in old]
            return
        items += [buf.pop_fitting(n) for n in chosen]
        b.free = space - best

    def _seed_and_fill(self, longest: bool = False) -> Bin:
        """A new sequence seeded with the oldest buffered example (``longest``: the longest,
        at the end of the stream), filled longest-first."""
        buf = self._buffer
        arrival, length, handle = buf.pop_fitting(self.config.seq_len) if longest else buf.pop_oldest()
        b = Bin(self.config.seq_len - length, arrival)
        b.items.append((arrival, length, handle))
        self._fill(b)
        return b

    def _build(self) -> Emitted:
        cfg = self.config
        out = Emitted()
        if self.open_bins:  # top up carried sequences first, oldest first
            deadline = self.arrivals - 1 - cfg.effective_max_wait
            keep = []
            for b in self.open_bins:
                self._fill(b)
                if self.is_full(b) or b.oldest <= deadline:
                    out.append(self.emit(b))
                else:
                    keep.append(b)
            self.open_bins = keep
        buf = self._buffer
        deadline = self.arrivals - 1 - cfg.effective_max_wait
        items = buf.items
        while items and (len(items) >= cfg.buffer_size or self._over_bytes()
                         or (buf.order[0] <= deadline and buf.oldest() <= deadline)):
            b = self._seed_and_fill()
            if not cfg.max_open or self.is_full(b):
                out.append(self.emit(b))
                continue
            self.open_bins.append(b)
            if len(self.open_bins) > cfg.max_open:
                out.append(self.emit(self.open_bins.pop(0)))
        return out


register_packer("bfd", BFDPacker)

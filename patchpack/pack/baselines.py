"""Baseline packers (first-fit, next-fit), the offline best-fit-decreasing reference and :func:`pack_lengths`.

* ``"first-fit"``: no sorting; each example goes into the oldest open sequence that fits
  (NaViT's greedy packing); sequences are emitted when full or when their oldest example
  reaches ``max_wait``.
* ``"next-fit"``: one open sequence; emitted when the next example does not fit.

:func:`pack_offline` is offline best-fit decreasing over a whole list, the reference for padding.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .base import Emitted, Packer, make_packer, register_packer
from .buffer import Bin, FreeIndex
from .config import PackConfig

__all__ = ["FirstFitPacker", "NextFitPacker", "pack_lengths", "pack_offline"]


class FirstFitPacker(Packer):
    """Each example goes into the oldest open sequence with room; age-bounded emission."""

    def place(self, arrival: int, length: int, handle: Any) -> Emitted:
        cfg = self.config
        out = Emitted()
        target = None
        for b in self.open_bins:
            if b.free >= length:
                target = b
                break
        if target is None:
            target = Bin(cfg.seq_len, arrival)
            self.open_bins.append(target)
        target.items.append((arrival, length, handle))
        target.free -= length
        keep = []
        deadline = self.arrivals - cfg.effective_max_wait
        for b in self.open_bins:
            if self.is_full(b) or b.oldest <= deadline:
                out.append(self.emit(b))
            else:
                keep.append(b)
        self.open_bins = keep
        return out


class NextFitPacker(Packer):
    """One open sequence, emitted when the next example does not fit (or it is full)."""

    def place(self, arrival: int, length: int, handle: Any) -> Emitted:
        out = Emitted()
        if self.open_bins and self.open_bins[0].free < length:
            out.append(self.emit(self.open_bins.pop()))
        if self.open_bins:
            target = self.open_bins[0]
        else:
            target = Bin(self.config.seq_len, arrival)
            self.open_bins.append(target)
        target.items.append((arrival, length, handle))
        target.free -= length
        if self.is_full(target):
            out.append(self.emit(self.open_bins.pop()))
        return out


register_packer("first-fit", FirstFitPacker)
register_packer("next-fit", NextFitPacker)


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
    Oversize examples are left out under ``oversize="skip"`` (:meth:`Packer.push`
    returns them in ``Emitted.rejected``).

    >>> pack_lengths([5, 3, 4, 4, 8, 1], seq_len=8, buffer_size=4)
    [[0, 1], [2, 3], [4], [5]]
    """
    packer = make_packer(PackConfig(seq_len, max_per_seq, buffer_size, max_wait, algorithm, oversize, max_open))
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
    index = FreeIndex()
    bins: list[Bin] = []
    for i in order:
        n = int(lengths[i])
        b = index.best(n)
        if b is None:
            b = Bin(seq_len, i)
            bins.append(b)
        b.items.append((i, n, i))
        b.free -= n
        if b.free > 0 and (max_per_seq is None or len(b.items) < max_per_seq):
            index.add(b)
    return [[it[2] for it in b.items] for b in bins]

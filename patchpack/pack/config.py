"""Packing vocabulary: :class:`PackConfig`, :class:`PackedSequence`, :class:`OversizeError`, the packer registry table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..registry import Registry

__all__ = ["PackConfig", "PackedSequence", "OversizeError", "ALGORITHMS", "PACKERS", "OVERSIZE_POLICIES"]

#: The built-in packing algorithms (``PACKERS.names()`` lists every registered one).
ALGORITHMS = ("bfd", "first-fit", "next-fit")
OVERSIZE_POLICIES = ("skip", "truncate", "raise")

#: algorithm name -> packer class; filled by :func:`patchpack.pack.register_packer`.
PACKERS: Registry[type] = Registry("packer", hint="patchpack.register_packer")


class OversizeError(ValueError):
    """An example is longer than the sequence length and ``oversize="raise"``."""


@dataclass(frozen=True)
class PackConfig:
    """Packing policy.

    Attributes:
        seq_len: ``L``, tokens per sequence.
        max_per_seq: ``E``, examples per sequence (``None``: no cap).
        buffer_size: examples held before a sequence is built (``bfd``); bounds both
            memory and the wait of every example.
        buffer_bytes: byte budget of the held examples (``bfd``, when the packer has a
            ``size_of``; the loader counts each example's compressed bytes): sequences are
            built as soon as the held bytes exceed it, whatever ``buffer_size`` says.
            Default 64 MiB per consumer; ``None``: no byte budget.
        max_open: sequences carried open with free space (``bfd``; 0 = none).
        max_wait: age bound: no example waits more arrivals than this between its
            own arrival and its sequence's emission. Default ``2 * buffer_size``.
        algorithm: a registered packer name (built in: :data:`ALGORITHMS`).
        oversize: ``"skip"``, ``"truncate"`` or ``"raise"`` for examples longer than ``L``.
    """

    seq_len: int = 1024
    max_per_seq: int | None = None
    buffer_size: int = 1024
    max_wait: int | None = None
    algorithm: str = "bfd"
    oversize: str = "skip"
    max_open: int = 0
    buffer_bytes: int | None = 64 * 2**20

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        if self.max_per_seq is not None and self.max_per_seq < 1:
            raise ValueError("max_per_seq must be >= 1")
        if self.buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        if self.buffer_bytes is not None and self.buffer_bytes < 1:
            raise ValueError("buffer_bytes must be >= 1 or None")
        if self.max_wait is not None and self.max_wait < self.buffer_size:
            raise ValueError("max_wait must be at least buffer_size")
        if self.max_open < 0:
            raise ValueError("max_open must be >= 0")
        if self.algorithm not in PACKERS:
            raise ValueError(PACKERS.unknown(self.algorithm))
        if self.oversize not in OVERSIZE_POLICIES:
            raise ValueError("oversize must be 'skip', 'truncate' or 'raise'")

    @property
    def effective_max_wait(self) -> int:
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


"""The packed batch: the torch boundary of the data pipeline.

For ``B`` sequences of length ``L`` holding at most ``E`` examples each:

=============== ===================== ==================================================
field           dtype, shape          meaning
=============== ===================== ==================================================
``patches``     uint8 ``[B, L, D]``   ``D = pt*p*p*C``; padding rows are zero
``segment_ids`` int32 ``[B, L]``      0 = padding, ``1..E`` = example slot in the row
``positions``   int32 ``[B, L, 3]``   ``(t, y, x)`` of each token in its example's grid
``grids``       int32 ``[B, E, 3]``   ``(T, H, W)`` grid of each slot (0 for empty slots)
``labels``      int64 ``[B, E]``      per-example target, -1 for empty slots
``keys``        ``list[list[str]]``   sample keys per row, slot order
=============== ===================== ==================================================

Pixels stay uint8 until the device; normalise there (the model does).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..tokenize import Tokens

__all__ = ["PackedBatch", "collate", "cu_seqlens"]


@dataclass
class PackedBatch:
    """A batch of packed sequences (see module docstring for the contract)."""

    patches: torch.Tensor
    segment_ids: torch.Tensor
    positions: torch.Tensor
    grids: torch.Tensor
    labels: torch.Tensor
    keys: list[list[str]]
    #: Per-batch extras (e.g. loader state for resume, padding stats). Not tensors.
    info: dict[str, Any] = field(default_factory=dict)

    _TENSORS = ("patches", "segment_ids", "positions", "grids", "labels")

    @property
    def batch_size(self) -> int:
        return int(self.patches.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.patches.shape[1])

    @property
    def max_per_seq(self) -> int:
        """``E``, example slots per row."""
        return int(self.grids.shape[1])

    @property
    def max_examples(self) -> int:
        """Former name of :attr:`max_per_seq`."""
        warnings.warn("PackedBatch.max_examples is now max_per_seq", DeprecationWarning, stacklevel=2)
        return self.max_per_seq

    @property
    def num_examples(self) -> int:
        return sum(len(k) for k in self.keys)

    @property
    def num_tokens(self) -> int:
        return int((self.segment_ids > 0).sum())

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.num_tokens / max(1, self.segment_ids.numel())

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        """Move the tensors to ``device`` (pixels stay uint8)."""
        moved = {n: getattr(self, n).to(device, non_blocking=non_blocking) for n in self._TENSORS}
        return PackedBatch(**moved, keys=self.keys, info=self.info)

    def pin_memory(self) -> "PackedBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        pinned = {n: getattr(self, n).pin_memory() for n in self._TENSORS}
        return PackedBatch(**pinned, keys=self.keys, info=self.info)

    def cu_seqlens(self) -> tuple[torch.Tensor, int]:
        """Cumulative example lengths over the flattened batch, for varlen kernels."""
        return cu_seqlens(self.segment_ids)

    def __eq__(self, other: object) -> bool:  # tensors make the dataclass default unusable
        if not isinstance(other, PackedBatch):
            return NotImplemented
        return self.keys == other.keys and all(
            torch.equal(getattr(self, n), getattr(other, n)) for n in self._TENSORS
        )


def collate(
    sequences: Sequence[Sequence[Tokens]],
    seq_len: int,
    max_per_seq: int | None = None,
    token_dim: int | None = None,
    *,
    max_examples: int | None = None,
) -> PackedBatch:
    """Lay out packed sequences into a :class:`PackedBatch`.

    Args:
        sequences: ``B`` rows, each a list of tokenized examples placed back to back.
        seq_len: ``L``; every row must hold at most ``L`` tokens.
        max_per_seq: ``E``; defaults to the largest row's example count
            (``max_examples=``, its former name, is accepted with a ``DeprecationWarning``).
        token_dim: ``D``; taken from the first example when omitted (needed for
            a batch with no examples at all).
    """
    if max_examples is not None:
        warnings.warn("collate(max_examples=) is now max_per_seq=", DeprecationWarning, stacklevel=2)
        max_per_seq = max_examples if max_per_seq is None else max_per_seq
    b = len(sequences)
    e = max_per_seq if max_per_seq is not None else max((len(s) for s in sequences), default=0)
    e = max(1, e)
    if token_dim is None:
        token_dim = next((ex.patches.shape[1] for s in sequences for ex in s), None)
        if token_dim is None:
            raise ValueError("cannot infer token_dim from a batch without examples")
    patches = np.zeros((b, seq_len, token_dim), np.uint8)
    segment_ids = np.zeros((b, seq_len), np.int32)
    positions = np.zeros((b, seq_len, 3), np.int32)
    grids = np.zeros((b, e, 3), np.int32)
    labels = np.full((b, e), -1, np.int64)
    keys: list[list[str]] = []
    for i, row in enumerate(sequences):
        if len(row) > e:
            raise ValueError(f"row {i} has {len(row)} examples, more than max_per_seq={e}")
        offset = 0
        for j, ex in enumerate(row):
            n = len(ex)
            if offset + n > seq_len:
                raise ValueError(f"row {i} holds more than seq_len={seq_len} tokens")
            if ex.patches.shape[1] != token_dim:
                raise ValueError(
                    f"example {ex.key!r} has token width {ex.patches.shape[1]}, expected {token_dim}"
                )
            patches[i, offset : offset + n] = ex.patches
            positions[i, offset : offset + n] = ex.positions
            segment_ids[i, offset : offset + n] = j + 1
            grids[i, j] = ex.grid
            labels[i, j] = ex.label
            offset += n
        keys.append([ex.key for ex in row])
    return PackedBatch(
        patches=torch.from_numpy(patches),
        segment_ids=torch.from_numpy(segment_ids),
        positions=torch.from_numpy(positions),
        grids=torch.from_numpy(grids),
        labels=torch.from_numpy(labels),
        keys=keys,
    )


def cu_seqlens(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(cu_seqlens int32 [n+1], max_seqlen)`` over the row-major flattened batch.

    Every example and every padding run becomes one segment; use this with varlen
    kernels that take packed ``[total, heads, dim]`` inputs.
    """
    flat = segment_ids.reshape(-1)
    b, l = segment_ids.shape
    change = torch.ones_like(flat, dtype=torch.bool)
    change[1:] = flat[1:] != flat[:-1]
    # rows always start a new segment
    change[torch.arange(0, b * l, l, device=flat.device)] = True
    starts = torch.nonzero(change).flatten()
    ends = torch.cat([starts[1:], torch.tensor([b * l], device=flat.device)])
    lens = ends - starts
    cu = torch.zeros(len(starts) + 1, dtype=torch.int32, device=flat.device)
    cu[1:] = torch.cumsum(lens, 0)
    return cu, int(lens.max()) if len(lens) else 0

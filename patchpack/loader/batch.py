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
``sample_keys`` ``list[list[str]]``   sample keys per row, slot order
=============== ===================== ==================================================

Pixels stay uint8 until the device; normalise there (the model does). A batch is also a
mapping of its five tensors, so ``model(**batch)`` works.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from collections.abc import KeysView, Mapping
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..tokenize import Tokens

__all__ = ["PackedBatch", "collate", "cu_seqlens"]


_TENSORS = ("patches", "segment_ids", "positions", "grids", "labels")
_KEYS_MOVED = ("PackedBatch.keys as the sample keys is deprecated: use batch.sample_keys "
               "(batch.keys() is the mapping's keys, as for a dict)")


class _KeysAttribute(list):
    """``batch.keys``: called, the mapping's keys (``dict`` protocol); used as a list, the sample
    keys that field used to hold, with a ``DeprecationWarning`` (use ``batch.sample_keys``)."""

    __slots__ = ("_view",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, rows: list[list[str]], view: KeysView) -> None:
        super().__init__(rows)
        self._view = view

    def __call__(self) -> KeysView:
        return self._view

    def _deprecated(self) -> None:
        warnings.warn(_KEYS_MOVED, DeprecationWarning, stacklevel=3)

    def __getitem__(self, i):
        self._deprecated()
        return list.__getitem__(self, i)

    def __iter__(self):
        self._deprecated()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._deprecated()
        return list.__len__(self)

    def __eq__(self, other: object) -> bool:
        self._deprecated()
        return list.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other


@dataclass(init=False, eq=False)
class PackedBatch(Mapping):
    """A batch of packed sequences (see module docstring for the contract).

    Also a read-only mapping of its five tensors (``patches``, ``segment_ids``, ``positions``,
    ``grids``, ``labels``): ``model(**batch)``, ``batch["patches"]`` and ``dict(batch)`` work beside
    attribute access. ``sample_keys`` and ``info`` are not in the mapping (they are not model
    inputs). ``PackedBatch(mapping)`` rebuilds a batch from those tensors, as HF ``Trainer`` and
    other tools do with ``type(batch)({...})``; such a batch has no ``sample_keys`` or ``info``.
    ``len(batch)`` is the mapping's size (5); the batch size is :attr:`batch_size`.

    ``keys=``/``batch.keys`` as the sample keys is deprecated: the field is ``sample_keys``.
    """

    patches: torch.Tensor
    segment_ids: torch.Tensor
    positions: torch.Tensor
    grids: torch.Tensor
    labels: torch.Tensor
    #: sample keys per row, in slot order
    sample_keys: list[list[str]]
    #: Per-batch extras (e.g. loader state for resume, padding stats). Not tensors.
    info: dict[str, Any] = field(default_factory=dict)

    _TENSORS = _TENSORS

    def __init__(
        self,
        patches: torch.Tensor | Mapping[str, torch.Tensor],
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        grids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        sample_keys: list[list[str]] | None = None,
        info: dict[str, Any] | None = None,
        *,
        keys: list[list[str]] | None = None,
    ) -> None:
        if isinstance(patches, Mapping):
            given = dict(patches)
            missing = [n for n in _TENSORS if n not in given]
            if missing or any(t is not None for t in (segment_ids, positions, grids, labels)):
                raise TypeError(f"PackedBatch(mapping) needs exactly the tensors {_TENSORS}; missing {missing}")
            patches, segment_ids, positions, grids, labels = (given[n] for n in _TENSORS)
        if keys is not None:
            warnings.warn("PackedBatch(keys=) is now sample_keys=", DeprecationWarning, stacklevel=2)
            sample_keys = keys if sample_keys is None else sample_keys
        tensors = (patches, segment_ids, positions, grids, labels)
        if any(t is None for t in tensors):
            raise TypeError(f"PackedBatch needs all of {_TENSORS}")
        self.patches, self.segment_ids, self.positions, self.grids, self.labels = tensors
        self.sample_keys = sample_keys if sample_keys is not None else []
        self.info = info if info is not None else {}

    # -- mapping view of the tensors ----------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in _TENSORS:
            raise KeyError(f"{name!r}: a PackedBatch maps {_TENSORS}; sample keys are batch.sample_keys, "
                           "extras batch.info")
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_TENSORS)

    def __len__(self) -> int:
        return len(_TENSORS)

    @property
    def keys(self) -> _KeysAttribute:  # type: ignore[override]
        """``batch.keys()``: the tensor names. (As a list: the deprecated sample keys.)"""
        return _KeysAttribute(self.sample_keys, KeysView(self))

    # -- sizes -----------------------------------------------------------------------------
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
        """Examples in the batch (occupied slots)."""
        return int((self.grids.prod(dim=-1) > 0).sum())

    @property
    def num_tokens(self) -> int:
        return int((self.segment_ids > 0).sum())

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.num_tokens / max(1, self.segment_ids.numel())

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        """Move the tensors to ``device`` (pixels stay uint8)."""
        moved = {n: getattr(self, n).to(device, non_blocking=non_blocking) for n in _TENSORS}
        return PackedBatch(**moved, sample_keys=self.sample_keys, info=self.info)

    def pin_memory(self) -> "PackedBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        pinned = {n: getattr(self, n).pin_memory() for n in _TENSORS}
        return PackedBatch(**pinned, sample_keys=self.sample_keys, info=self.info)

    def cu_seqlens(self, padding: bool = True) -> tuple[torch.Tensor, int]:
        """Cumulative segment lengths for varlen kernels (see :func:`cu_seqlens`)."""
        return cu_seqlens(self.segment_ids, padding=padding)

    def __eq__(self, other: object) -> bool:  # tensors make the dataclass default unusable
        if not isinstance(other, PackedBatch):
            return NotImplemented
        return self.sample_keys == other.sample_keys and all(
            torch.equal(getattr(self, n), getattr(other, n)) for n in _TENSORS
        )

    __hash__ = None  # type: ignore[assignment]


def collate(
    sequences: Sequence[Sequence[Tokens]],
    seq_len: int,
    max_per_seq: int | None = None,
    token_dim: int | None = None,
    *,
    max_examples: int | None = None,
    pin: bool = False,
) -> PackedBatch:
    """Lay out packed sequences into a :class:`PackedBatch`.

    Args:
        sequences: ``B`` rows, each a list of tokenized examples placed back to back.
        seq_len: ``L``; every row must hold at most ``L`` tokens.
        max_per_seq: ``E``; defaults to the largest row's example count
            (``max_examples=``, its former name, is accepted with a ``DeprecationWarning``).
        token_dim: ``D``; taken from the first example when omitted (needed for
            a batch with no examples at all).
        pin: allocate ``patches`` and ``positions`` in pinned (page-locked) memory, so a
            later ``.to("cuda", non_blocking=True)`` needs no staging copy (needs an
            accelerator; ``DataLoader(pin_memory=True)`` pins them afterwards instead).
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
    # one preallocated buffer per field; tokens are copied once, straight into place, and only
    # the padding is zeroed (``pin=True`` allocates the buffers in pinned memory)
    if pin:
        patches_t = torch.empty((b, seq_len, token_dim), dtype=torch.uint8, pin_memory=True)
        positions_t = torch.empty((b, seq_len, 3), dtype=torch.int32, pin_memory=True)
        patches, positions = patches_t.numpy(), positions_t.numpy()
    else:
        patches = np.empty((b, seq_len, token_dim), np.uint8)
        positions = np.empty((b, seq_len, 3), np.int32)
        patches_t, positions_t = torch.from_numpy(patches), torch.from_numpy(positions)
    segment_ids = np.zeros((b, seq_len), np.int32)
    grids = np.zeros((b, e, 3), np.int32)
    labels = np.full((b, e), -1, np.int64)
    keys: list[list[str]] = []
    for i, row in enumerate(sequences):
        if len(row) > e:
            raise ValueError(f"row {i} has {len(row)} examples, more than max_per_seq={e}")
        offset = 0
        out_p, out_q, out_s = patches[i], positions[i], segment_ids[i]
        for j, ex in enumerate(row):
            src = ex.patches
            n = len(src)
            if offset + n > seq_len:
                raise ValueError(f"row {i} holds more than seq_len={seq_len} tokens")
            if src.shape[1] != token_dim:
                raise ValueError(
                    f"example {ex.key!r} has token width {src.shape[1]}, expected {token_dim}"
                )
            end = offset + n
            out_p[offset:end] = src
            out_q[offset:end] = ex.positions
            out_s[offset:end] = j + 1
            grids[i, j] = ex.grid
            labels[i, j] = ex.label
            offset = end
        out_p[offset:] = 0
        out_q[offset:] = 0
        keys.append([ex.key for ex in row])
    return PackedBatch(
        patches=patches_t,
        segment_ids=torch.from_numpy(segment_ids),
        positions=positions_t,
        grids=torch.from_numpy(grids),
        labels=torch.from_numpy(labels),
        sample_keys=keys,
    )


def cu_seqlens(segment_ids: torch.Tensor, padding: bool = True) -> tuple[torch.Tensor, int]:
    """``(cu_seqlens int32 [n+1], max_seqlen)`` for varlen kernels taking packed ``[total, heads, dim]``.

    ``padding=True``: over the row-major flattened batch ``[B * L]``; every example and every
    padding run is one segment, so the offsets cover all ``B * L`` tokens.
    ``padding=False``: over the real tokens only, ``x[segment_ids > 0]`` (row-major); one segment
    per example, no padding.
    """
    b, l = segment_ids.shape
    flat = segment_ids.reshape(-1)
    if not padding:
        real = flat > 0
        row = torch.arange(b * l, device=flat.device) // l
        flat_ids = (row * (int(flat.max()) + 1 if flat.numel() else 1) + flat)[real]
        if flat_ids.numel() == 0:
            return torch.zeros(1, dtype=torch.int32, device=flat.device), 0
        change = torch.ones_like(flat_ids, dtype=torch.bool)
        change[1:] = flat_ids[1:] != flat_ids[:-1]
        starts = torch.nonzero(change).flatten()
        total = flat_ids.numel()
    else:
        change = torch.ones_like(flat, dtype=torch.bool)
        change[1:] = flat[1:] != flat[:-1]
        # rows always start a new segment
        change[torch.arange(0, b * l, l, device=flat.device)] = True
        starts = torch.nonzero(change).flatten()
        total = b * l
    ends = torch.cat([starts[1:], torch.tensor([total], device=flat.device)])
    lens = ends - starts
    cu = torch.zeros(len(starts) + 1, dtype=torch.int32, device=flat.device)
    cu[1:] = torch.cumsum(lens, 0)
    return cu, int(lens.max()) if len(lens) else 0

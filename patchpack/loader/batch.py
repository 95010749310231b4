"""The packed batch: the torch boundary of the data pipeline.

For ``B`` sequences of length ``L`` holding at most ``E`` examples each:

=============== ========================= ==================================================
field           dtype, shape              meaning
=============== ========================= ==================================================
``patches``     uint8 ``[B, L, D]``       ``D = pt*p*p*C``; padding rows are zero
``segment_ids`` int32 ``[B, L]``          0 = padding, ``1..E`` = example slot in the row
``positions``   int32 ``[B, L, 3]``       ``(t, y, x)`` of each token in its example's grid
``grids``       int32 ``[B, E, 3]``       ``(T, H, W)`` grid of each slot (0 for empty slots)
``labels``      int64 ``[B, E]``          single-class target, -1 for empty slots (and for an
                                          example with no label or several)
``sample_keys`` ``list[list[str]]``       sample keys per row, slot order
``texts``       ``list[list[str|None]]``  per-slot text (``LoaderConfig.fields``), or ``None``
``text_ids``    int32 ``[B, E, T]``       tokenized ``texts`` (with a tokenizer), 0-padded
``text_mask``   bool ``[B, E, T]``        real tokens of ``text_ids``
``targets``     float32 ``[B, E, C]``     multi-hot label sets (with ``num_classes``)
=============== ========================= ==================================================

Pixels stay uint8 until the device; normalise there (the model does). A batch is also a
mapping of its tensors (the five always present, and ``text_ids``/``text_mask``/``targets``
when the loader makes them), so ``model(**batch)`` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..tokenize import Tokens

__all__ = ["PackedBatch", "collate", "cu_seqlens", "TENSORS", "OPTIONAL_TENSORS"]

#: the tensors every batch has
TENSORS = ("patches", "segment_ids", "positions", "grids", "labels")
#: the tensors a batch has when its loader makes them (text fields with a tokenizer, num_classes)
OPTIONAL_TENSORS = ("text_ids", "text_mask", "targets")


class PackedBatch(Mapping):
    """A batch of packed sequences (see the module doc for the contract).

    Also a read-only mapping of its tensors: ``model(**batch)``, ``batch["patches"]`` and
    ``dict(batch)`` work beside attribute access. ``sample_keys``, ``texts`` and ``info`` are not
    in the mapping (they are not tensors). ``PackedBatch(mapping)`` rebuilds a batch from its
    tensors, as HF ``Trainer`` and other tools do with ``type(batch)({...})``; such a batch has no
    ``sample_keys``, ``texts`` or ``info``. ``len(batch)`` is the mapping's size; the batch size
    is :attr:`batch_size`.

    Attributes:
        info: the worker's :class:`~patchpack.pipeline.info.StreamInfo` for this batch (resume
            state, stats, errors), or ``None`` for a batch made outside a loader.
    """

    def __init__(self, patches: torch.Tensor | Mapping[str, torch.Tensor], segment_ids: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None, grids: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, sample_keys: list[list[str]] | None = None, info: Any = None, *,
                 texts: list[list[str | None]] | None = None, text_ids: torch.Tensor | None = None,
                 text_mask: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> None:
        if isinstance(patches, Mapping):
            given = dict(patches)
            missing = [n for n in TENSORS if n not in given]
            unknown = [n for n in given if n not in TENSORS + OPTIONAL_TENSORS]
            if missing or unknown or any(t is not None for t in (segment_ids, positions, grids, labels)):
                raise TypeError(f"PackedBatch(mapping) needs the tensors {TENSORS} (and optionally "
                                f"{OPTIONAL_TENSORS}); missing {missing}, unknown {unknown}")
            patches, segment_ids, positions, grids, labels = (given[n] for n in TENSORS)
            text_ids, text_mask, targets = (given.get(n) for n in OPTIONAL_TENSORS)
        if any(t is None for t in (patches, segment_ids, positions, grids, labels)):
            raise TypeError(f"PackedBatch needs all of {TENSORS}")
        self.patches, self.segment_ids, self.positions, self.grids, self.labels = (
            patches, segment_ids, positions, grids, labels)
        self.text_ids, self.text_mask, self.targets = text_ids, text_mask, targets
        self.sample_keys = sample_keys if sample_keys is not None else []
        self.texts = texts
        self.info = info

    # -- mapping view of the tensors ----------------------------------------------------
    def tensor_names(self) -> tuple[str, ...]:
        """The names of the tensors this batch holds (the mapping's keys)."""
        return TENSORS + tuple(n for n in OPTIONAL_TENSORS if getattr(self, n) is not None)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.tensor_names():
            raise KeyError(f"{name!r}: this PackedBatch maps {self.tensor_names()}; sample keys are "
                           "batch.sample_keys, texts batch.texts, extras batch.info")
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_names())

    def __len__(self) -> int:
        return len(self.tensor_names())

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={tuple(getattr(self, n).shape)}" for n in self.tensor_names())
        return f"PackedBatch({shapes})"

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
    def num_examples(self) -> int:
        """Examples in the batch (occupied slots)."""
        return int((self.grids.prod(dim=-1) > 0).sum())

    @property
    def num_tokens(self) -> int:
        return int((self.segment_ids > 0).sum())

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.num_tokens / max(1, self.segment_ids.numel())

    def _with(self, tensors: dict[str, torch.Tensor]) -> "PackedBatch":
        return PackedBatch(tensors, sample_keys=self.sample_keys, info=self.info, texts=self.texts)

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        """Move the tensors to ``device`` (pixels stay uint8)."""
        return self._with({n: getattr(self, n).to(device, non_blocking=non_blocking) for n in self.tensor_names()})

    def pin_memory(self) -> "PackedBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._with({n: getattr(self, n).pin_memory() for n in self.tensor_names()})

    def cu_seqlens(self, padding: bool = True) -> tuple[torch.Tensor, int]:
        """Cumulative segment lengths for varlen kernels (see :func:`cu_seqlens`)."""
        return cu_seqlens(self.segment_ids, padding=padding)

    def __eq__(self, other: object) -> bool:  # tensors make the default unusable
        if not isinstance(other, PackedBatch):
            return NotImplemented
        return (self.sample_keys == other.sample_keys and self.texts == other.texts
                and self.tensor_names() == other.tensor_names()
                and all(torch.equal(getattr(self, n), getattr(other, n)) for n in self.tensor_names()))

    __hash__ = None  # type: ignore[assignment]


def _token_buffers(b: int, seq_len: int, token_dim: int, pin: bool):
    """Uninitialised ``patches`` uint8 ``[B, L, D]`` and ``positions`` int32 ``[B, L, 3]`` as
    (numpy view, tensor) pairs; in pinned memory with ``pin``."""
    if pin:
        patches_t = torch.empty((b, seq_len, token_dim), dtype=torch.uint8, pin_memory=True)
        positions_t = torch.empty((b, seq_len, 3), dtype=torch.int32, pin_memory=True)
        return (patches_t.numpy(), patches_t), (positions_t.numpy(), positions_t)
    patches, positions = np.empty((b, seq_len, token_dim), np.uint8), np.empty((b, seq_len, 3), np.int32)
    return (patches, torch.from_numpy(patches)), (positions, torch.from_numpy(positions))


def _lay_row(i: int, row: Sequence[Tokens], out_p: np.ndarray, out_q: np.ndarray, out_s: np.ndarray,
             grids: np.ndarray, labels: np.ndarray) -> None:
    """Copy one row's examples back to back into its slice of the batch; zero the padding."""
    seq_len, token_dim = out_p.shape
    offset = 0
    for j, ex in enumerate(row):
        src = ex.patches
        end = offset + len(src)
        if end > seq_len:
            raise ValueError(f"row {i} holds more than seq_len={seq_len} tokens")
        if src.shape[1] != token_dim:
            raise ValueError(f"example {ex.key!r} has token width {src.shape[1]}, expected {token_dim}")
        out_p[offset:end] = src
        out_q[offset:end] = ex.positions
        out_s[offset:end] = j + 1
        grids[j] = ex.grid
        labels[j] = ex.label
        offset = end
    out_p[offset:] = 0
    out_q[offset:] = 0


def collate(
    sequences: Sequence[Sequence[Tokens]],
    seq_len: int,
    max_per_seq: int | None = None,
    token_dim: int | None = None,
    *,
    pin: bool = False,
) -> PackedBatch:
    """Lay out packed sequences into a :class:`PackedBatch`: one preallocated buffer per field,
    tokens copied once straight into place, only the padding zeroed.

    Args:
        sequences: ``B`` rows, each a list of tokenized examples placed back to back.
        seq_len: ``L``; every row must hold at most ``L`` tokens.
        max_per_seq: ``E``; defaults to the largest row's example count.
        token_dim: ``D``; taken from the first example when omitted (needed for
            a batch with no examples at all).
        pin: allocate ``patches`` and ``positions`` in pinned (page-locked) memory, so a
            later ``.to("cuda", non_blocking=True)`` needs no staging copy (needs an
            accelerator; ``DataLoader(pin_memory=True)`` pins them afterwards instead).
    """
    b = len(sequences)
    e = max(1, max_per_seq if max_per_seq is not None else max((len(s) for s in sequences), default=0))
    if token_dim is None:
        token_dim = next((ex.patches.shape[1] for s in sequences for ex in s), None)
        if token_dim is None:
            raise ValueError("cannot infer token_dim from a batch without examples")
    (patches, patches_t), (positions, positions_t) = _token_buffers(b, seq_len, token_dim, pin)
    segment_ids = np.zeros((b, seq_len), np.int32)
    grids = np.zeros((b, e, 3), np.int32)
    labels = np.full((b, e), -1, np.int64)
    for i, row in enumerate(sequences):
        if len(row) > e:
            raise ValueError(f"row {i} has {len(row)} examples, more than max_per_seq={e}")
        _lay_row(i, row, patches[i], positions[i], segment_ids[i], grids[i], labels[i])
    return PackedBatch(patches=patches_t, segment_ids=torch.from_numpy(segment_ids), positions=positions_t,
                       grids=torch.from_numpy(grids), labels=torch.from_numpy(labels),
                       sample_keys=[[ex.key for ex in row] for row in sequences])


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

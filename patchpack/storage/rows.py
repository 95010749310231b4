"""Slot views of one shard record batch, and the checks every slot passes before a view is made.

An ``"examples"`` row is one slot; a ``"packed"`` row is several (one per example, in order).
:func:`batch_slots` reads a record batch (already through Arrow's full validation, so every
offset is in bounds) into per-slot numpy views onto its buffers. Non-nullable columns are
read as their values were written, validity bits ignored; nullable ones (``positions``, text
fields, token ids) keep theirs.

The checks, each a message naming what is wrong (``None``: fine), shared by the reader (on
stored rows) and the writer (on what it is given):

* :func:`slot_scalar_problems`: per slot, a grid of sides ``>= 1`` and at most
  :data:`MAX_GRID_TOKENS` cells, ``1 <= tokens <= T*H*W``, source tokens between the tokens
  and the grid, source size ``>= 0``;
* :func:`positions_problems`: every slot's positions distinct cells of its own grid;
* :func:`label_set_problem`: labels in ``[0, LABEL_MAX]``, no repeats;
* :func:`text_ids_problem`: ids present exactly with their field, at most ``text_len`` of
  them, each in ``[0, vocab_size)``; text values by :func:`~patchpack.storage.format.field_problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from ..sources.labels import LABEL_MAX
from .format import TextIdsSpec, field_column, text_ids_column

__all__ = [
    "MAX_GRID_TOKENS", "Ragged", "BatchSlots", "batch_slots", "grid_cells", "slot_scalar_problems",
    "positions_problems", "label_set_problem", "text_ids_problem",
]

#: largest grid (T * H * W tokens) a slot may claim
MAX_GRID_TOKENS = 2**31 - 1


class Ragged(NamedTuple):
    """Variable-length values per slot: slot ``s`` is ``values[start[s]:end[s]]``, null where not ``valid[s]``."""

    start: np.ndarray
    end: np.ndarray
    values: np.ndarray
    valid: np.ndarray

    def pick(self, idx: np.ndarray | None) -> "Ragged":
        if idx is None:
            return self
        return Ragged(_pick(self.start, idx), _pick(self.end, idx), self.values, _pick(self.valid, idx))

    def at(self, s: int) -> np.ndarray:
        return self.values[self.start[s] : self.end[s]]

    def texts(self) -> list[str]:
        """Every slot as text (a damaged byte becomes U+FFFD: for keys and names, never for fields)."""
        buf = self.values.tobytes()
        return [buf[a:b].decode("utf-8", "replace") for a, b in zip(self.start.tolist(), self.end.tolist())]

    def tuples(self) -> list[tuple[int, ...]]:
        """Every slot's integers as a tuple."""
        lo, hi = int(self.start.min(initial=0)), int(self.end.max(initial=0))
        vals = self.values[lo:hi].tolist()
        return [tuple(vals[a - lo : b - lo]) for a, b in zip(self.start.tolist(), self.end.tolist())]


@dataclass
class BatchSlots:
    """Per-slot views of one record batch (``S`` slots over ``R`` rows).

    ``first[i]:first[i + 1]`` are row ``i``'s slots; ``aligned[i]`` is False where the slot
    columns of a packed row disagree on its slot count (its slot views are then meaningless).
    ``tokens`` and ``positions`` are per row; ``geometry`` (examples) the per-row
    ``(patch_size, tubelet, channels)`` columns; ``source_tokens`` only for packed rows.
    """

    first: np.ndarray
    aligned: np.ndarray
    keys: Ragged
    grids: np.ndarray
    lengths: np.ndarray
    source_tokens: np.ndarray | None
    labels: Ragged
    source_sizes: np.ndarray
    shards: Ragged
    metas: Ragged
    fields: dict[str, Ragged]
    text_ids: dict[str, Ragged]
    token_dim: np.ndarray
    geometry: np.ndarray | None
    tokens: Ragged
    positions: Ragged


_EMPTY = {np.dtype(t).char: np.frombuffer(b"", t) for t in (np.uint8, np.int32, np.int64)}  # read-only, as views are


def _pick(values: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """``values[idx]`` with ``idx`` clipped into range (an empty ``values`` gives zeros; ``None``: all)."""
    if idx is None:
        return values
    if len(values) == 0:
        return np.zeros((len(idx), *values.shape[1:]), values.dtype)
    return values[np.clip(idx, 0, len(values) - 1)]


def _plain(arr: pa.Array, dtype) -> np.ndarray:
    """The data buffer of a primitive array as a numpy view (validity ignored)."""
    dtype = np.dtype(dtype)
    if len(arr) == 0:
        return _EMPTY[dtype.char]
    return np.frombuffer(arr.buffers()[1], dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _fixed(arr: pa.FixedSizeListArray, width: int) -> np.ndarray:
    """int64 ``[n, width]`` of a fixed_size_list<int32> array (validity ignored)."""
    values = _plain(arr.values, np.int32)
    return values[arr.offset * width : (arr.offset + len(arr)) * width].reshape(-1, width).astype(np.int64)


def _offsets(arr: pa.Array) -> np.ndarray:
    """int64 ``[n + 1]`` offsets of a list, string or binary array (into its child or data buffer)."""
    t = arr.type
    wide = pa.types.is_large_list(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    dtype = np.dtype(np.int64 if wide else np.int32)
    if len(arr) == 0:
        return np.zeros(1, np.int64)
    return np.frombuffer(arr.buffers()[1], dtype, count=len(arr) + 1, offset=arr.offset * dtype.itemsize
                         ).astype(np.int64, copy=False)


def _valid(arr: pa.Array) -> np.ndarray:
    """bool ``[n]``: which elements are not null (from the validity bitmap)."""
    bitmap = arr.buffers()[0]
    if arr.null_count == 0 or bitmap is None:
        return np.ones(len(arr), bool)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + len(arr)].astype(bool)


def _ragged(arr: pa.Array, dtype=np.uint8) -> Ragged:
    """One :class:`Ragged` entry per element of a string, binary or list<primitive> array."""
    off = _offsets(arr)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        values = _plain(arr.values, dtype)
    else:
        data = arr.buffers()[2] if len(arr) else None
        values = np.frombuffer(data, np.uint8) if data is not None else _EMPTY["B"]
    return Ragged(off[:-1], off[1:], values, _valid(arr))


class _Columns:
    """Slot-level access to the columns of one record batch: slot ``s`` of a column is element
    ``index[s]`` of its child (examples: the column itself, one slot a row)."""

    def __init__(self, rb: pa.RecordBatch, packed: bool) -> None:
        self.rb, self.packed = rb, packed
        rows = rb.num_rows
        self.aligned = np.ones(rows, bool)
        if not packed:
            self.first = np.arange(rows + 1, dtype=np.int64)
            return
        ref = _offsets(rb.column("lengths"))
        self.first = ref - ref[0]
        self.counts = np.diff(ref)
        self.row = np.repeat(np.arange(rows), self.counts)
        self.local = np.arange(len(self.row)) - self.first[self.row]

    def slot(self, name: str) -> tuple[pa.Array, np.ndarray | None]:
        """``(child, index)`` of column ``name`` (``None``: the column itself); a packed row whose
        list disagrees on its slot count is marked not ``aligned``."""
        col = self.rb.column(name)
        if not self.packed:
            return col, None
        off = _offsets(col)
        self.aligned &= np.diff(off) == self.counts
        return col.values, off[self.row] + self.local

    def ragged(self, name: str, dtype=np.uint8) -> Ragged:
        child, idx = self.slot(name)
        return _ragged(child, dtype).pick(idx)

    def ints(self, name: str) -> np.ndarray:
        child, idx = self.slot(name)
        return _pick(_plain(child, np.int32), idx).astype(np.int64)

    def fixed(self, name: str, width: int) -> np.ndarray:
        child, idx = self.slot(name)
        return _pick(_fixed(child, width), idx)

    def v1_labels(self, name: str) -> Ragged:
        """A version-1 ``label`` per slot as a label set: none for -1, else that one label."""
        child, idx = self.slot(name)
        labels = _plain(child, np.int64)
        start = _pick(np.arange(len(labels)), idx)
        return Ragged(start, start + (_pick(labels, idx) != -1), labels, np.ones(len(start), bool))


_NAMES = {
    "examples": ("key", "grid", "num_tokens", "label_set", "label", "source_size", "source_shard", "meta"),
    "packed": ("keys", "grids", "lengths", "label_sets", "labels", "source_sizes", "source_shards", "metas"),
}


def batch_slots(rb: pa.RecordBatch, kind: str, version: int, fields: Sequence[str],
                text: TextIdsSpec | None) -> BatchSlots:
    """The :class:`BatchSlots` of a record batch of a ``kind`` shard of ``version``."""
    packed = kind == "packed"
    c = _Columns(rb, packed)
    key, grid, length, label_set, label, size, shard, meta = _NAMES[kind]
    labels = c.v1_labels(label) if version == 1 else c.ragged(label_set, np.int64)
    geometry = None if packed else np.stack([_plain(rb.column(n), np.int32) for n in ("patch_size", "tubelet",
                                                                                     "channels")], 1)
    views = dict(
        keys=c.ragged(key), grids=c.fixed(grid, 3), lengths=c.ints(length),
        source_tokens=c.ints("source_tokens") if packed else None, labels=labels, source_sizes=c.fixed(size, 2),
        shards=c.ragged(shard), metas=c.ragged(meta),
        fields={n: c.ragged(field_column(n)) for n in fields},
        text_ids={n: c.ragged(text_ids_column(n), np.int32) for n in (text.fields if text else ())},
    )  # every slot column read: c.aligned is final
    return BatchSlots(first=c.first, aligned=c.aligned, **views, geometry=geometry,
                      token_dim=_plain(rb.column("token_dim"), np.int32).astype(np.int64),
                      tokens=_ragged(rb.column("tokens")), positions=_ragged(rb.column("positions")))


def grid_cells(grids: np.ndarray) -> np.ndarray:
    """int64 ``T*H*W`` per grid row, saturated at ``MAX_GRID_TOKENS + 1`` (never overflowing)."""
    g = np.minimum(np.maximum(np.asarray(grids, np.int64), 0), MAX_GRID_TOKENS + 1)
    return np.minimum(np.minimum(g[:, 0] * g[:, 1], MAX_GRID_TOKENS + 1) * g[:, 2], MAX_GRID_TOKENS + 1)


def slot_scalar_problems(grids: np.ndarray, lengths: np.ndarray, source_tokens: np.ndarray | None,
                         source_sizes: np.ndarray) -> dict[int, str]:
    """The first problem of each slot whose grid, token count, source token count or source size is
    impossible (vectorized over the slots; see the module doc)."""
    cells = grid_cells(grids)
    bad_grid = (grids < 1).any(1) | (cells > MAX_GRID_TOKENS)
    checks = [
        (bad_grid, lambda s: f"grid {tuple(int(v) for v in grids[s])} is not a token grid of at most "
                             f"{MAX_GRID_TOKENS} cells"),
        (lengths < 1, lambda s: f"{int(lengths[s])} tokens; every example holds at least one"),
        (lengths > cells, lambda s: f"{int(lengths[s])} tokens, more than its grid "
                                    f"{tuple(int(v) for v in grids[s])} has cells ({int(cells[s])})"),
        ((source_sizes < 0).any(1), lambda s: f"source size {tuple(int(v) for v in source_sizes[s])} is negative"),
    ]
    if source_tokens is not None:
        checks.append(((source_tokens < lengths) | (source_tokens > cells),
                       lambda s: f"{int(source_tokens[s])} source tokens for {int(lengths[s])} tokens in a grid of "
                                 f"{int(cells[s])} cells"))
    out: dict[int, str] = {}
    for mask, message in checks:
        for s in np.flatnonzero(mask).tolist():
            out.setdefault(s, message(s))
    return out


def positions_problems(positions: np.ndarray, lengths: Sequence[int], grids: np.ndarray) -> dict[int, str]:
    """Slot -> what is wrong, for every slot whose positions leave its grid or repeat a cell.

    ``positions`` int32 ``[N, 3]`` holds the slots back to back (one row's, or a whole batch's),
    ``lengths`` (each ``>= 1``, summing to ``N``) and ``grids`` ``[k, 3]`` (each at most
    :data:`MAX_GRID_TOKENS` cells) describe them. Raster-ordered slots (as written: dropping
    keeps the order) are checked in one pass over their cell indices; only others are sorted.
    """
    lengths = np.asarray(lengths, np.int64)
    if not len(lengths):
        return {}
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    outside = (np.maximum.reduceat(positions, starts, axis=0) >= grids).any(1)
    if positions.min(initial=0) < 0:
        outside |= (np.minimum.reduceat(positions, starts, axis=0) < 0).any(1)
    out = {s: f"positions fall outside the grid {tuple(int(v) for v in grids[s])}"
           for s in np.flatnonzero(outside).tolist()}
    g = grids.astype(np.int32)  # inside a grid of at most 2**31 - 1 cells, a cell index fits int32
    cell = (positions[:, 0] * np.repeat(g[:, 1], lengths) + positions[:, 1]) * np.repeat(g[:, 2], lengths) \
        + positions[:, 2]
    step = np.diff(cell)
    step[starts[1:] - 1] = 1  # a slot boundary is no step
    if step.min(initial=1) > 0:
        return out
    slot = np.repeat(np.arange(len(lengths)), lengths)
    unordered = np.isin(slot, np.unique(slot[1:][step <= 0]))
    cell, slot = cell[unordered], slot[unordered]
    order = np.lexsort((cell, slot))
    repeat = (np.diff(cell[order]) == 0) & (np.diff(slot[order]) == 0)
    for s in np.unique(slot[order][1:][repeat]).tolist():
        out.setdefault(s, f"positions repeat a cell of the grid {tuple(int(v) for v in grids[s])}")
    return out


def label_set_problem(labels: Sequence[int]) -> str | None:
    """What is wrong with a label set: a label outside ``[0, LABEL_MAX]`` or a repeat."""
    if not labels:
        return None
    if min(labels) < 0 or max(labels) > LABEL_MAX:
        bad = next(v for v in labels if not 0 <= v <= LABEL_MAX)
        return f"label {bad} is outside [0, {LABEL_MAX}]"
    if len(labels) > 1 and len(set(labels)) != len(labels):
        return f"label set {tuple(labels)[:8]} repeats a label"
    return None


def text_ids_problem(ids: np.ndarray | None, has_text: bool, spec: TextIdsSpec) -> str | None:
    """What is wrong with one field's token ids: present without the field or missing with it,
    more than ``text_len`` ids, an id outside ``[0, vocab_size)``."""
    if (ids is not None) != has_text:
        return "token ids without their text" if ids is not None else "text without its token ids"
    if ids is None:
        return None
    if len(ids) > spec.text_len:
        return f"{len(ids)} token ids, more than text_len={spec.text_len}"
    high = spec.vocab_size if spec.vocab_size is not None else LABEL_MAX + 1
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= high):
        return f"a token id is outside [0, {high})"
    return None

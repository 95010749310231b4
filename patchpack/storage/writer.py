"""Atomic writing of one patchpack shard (see :mod:`patchpack.storage.format` for the layout).

The writer refuses (``ValueError`` naming the example) what the reader would refuse: tokens
of another dtype or width, no tokens or more than the grid has cells, positions outside
the grid or repeated, labels out of range or repeated, text fields other than the shard's,
over ``field_max_bytes`` or holding NUL (:func:`~patchpack.storage.format.field_problem`), token ids that do
not match their field or exceed ``text_len``; so a shard it closes reads back row for row.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..sources.fields import DEFAULT_FIELD_MAX_BYTES
from ..tokenize import Tokens
from .format import (
    GRID_TYPE, SIZE_TYPE, TMP_MARK, ShardInfo, TextIdsSpec, example_schema, field_problem, full_positions,
    meta_json, packed_schema, sha256_file, source_size,
)
from .rows import label_set_problem, positions_problems, slot_scalar_problems, text_ids_problem

__all__ = ["ShardWriter"]


def _is_full_raster(tok: Tokens) -> bool:
    t, h, w = tok.grid
    n = len(tok)
    if n != t * h * w:
        return False
    return np.array_equal(tok.positions, full_positions((int(t), int(h), int(w))))


def _binary_array(arrays: Sequence[np.ndarray | None]) -> pa.Array:
    """A large_binary array of the arrays' raw bytes (``None`` -> null), with one copy."""
    sizes = np.array([0 if a is None else a.nbytes for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for a, o, n in zip(arrays, offsets[:-1], sizes):
        if a is not None and n:
            data[o : o + n] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    validity = None
    nulls = sum(a is None for a in arrays)
    if nulls:
        validity = pa.py_buffer(np.packbits(np.array([a is not None for a in arrays]), bitorder="little"))
    return pa.Array.from_buffers(
        pa.large_binary(), len(arrays), [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls
    )


class ShardWriter:
    """Write one shard atomically.

    >>> with ShardWriter("out/shard-000000.arrow", patch_size=16, fields=["txt"]) as w:   # doctest: +SKIP
    ...     for tok in examples:
    ...         w.write(tok)
    >>> w.info.sha256                                                                      # doctest: +SKIP

    Args:
        path: final shard path (``*.arrow``); it appears only when :meth:`close` succeeds.
        kind: ``"examples"`` (:meth:`write`) or ``"packed"`` (:meth:`write_sequence`).
        patch_size, tubelet, channels: token geometry, stored per row and in the metadata.
        fields: the text field names every example carries (``Tokens.fields`` has exactly these
            keys, ``None`` for a sample without one); one column each.
        field_max_bytes: the cap on one field value (bytes of UTF-8), the loader's
            ``field_max_bytes``; recorded in the shard, which the reader holds it to.
        text: which of the fields carry token ids (``Tokens.text_ids[name]``: the unpadded
            ids, ``None`` where the field is ``None``), and from which tokenizer.
        metadata: extra JSON-serialisable schema metadata (e.g. the producing config).
        rows_per_batch, bytes_per_batch: Arrow record batch bounds (rows, token and text bytes).
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "examples",
        *,
        patch_size: int,
        tubelet: int = 1,
        channels: int = 3,
        fields: Sequence[str] = (),
        field_max_bytes: int = DEFAULT_FIELD_MAX_BYTES,
        text: TextIdsSpec | None = None,
        metadata: dict[str, Any] | None = None,
        rows_per_batch: int = 64,
        bytes_per_batch: int = 32 << 20,
    ) -> None:
        if kind not in ("examples", "packed"):
            raise ValueError(f"unknown shard kind {kind!r}; expected 'examples' or 'packed'")
        self.path = Path(path)
        self.kind = kind
        self.patch_size, self.tubelet, self.channels = int(patch_size), int(tubelet), int(channels)
        self.token_dim = self.tubelet * self.patch_size**2 * self.channels
        self.fields, self.text = tuple(fields), text
        self._id_fields = text.fields if text is not None else ()
        geometry = dict(patch_size=self.patch_size, tubelet=self.tubelet, channels=self.channels)
        md = {**geometry, **(metadata or {})}
        make = example_schema if kind == "examples" else packed_schema
        self.field_max_bytes = int(field_max_bytes)
        self.schema = make(md, self.fields, text, self.field_max_bytes)
        self.rows_per_batch, self.bytes_per_batch = rows_per_batch, bytes_per_batch
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f".{self.path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._sink = pa.OSFile(str(self.tmp_path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)  # uncompressed: memory-mappable
        self._rows: list = []
        self._pending_bytes = 0
        self.rows = self.examples = self.tokens = 0
        self.info: ShardInfo | None = None
        self._closed = False

    # -- writing -----------------------------------------------------------------------------
    def _problem(self, tok: Tokens, source_tokens: int) -> str | None:
        """What the reader would refuse in ``tok`` (see the module doc)."""
        if tok.patches.dtype != np.uint8 or tok.patches.ndim != 2 or tok.patches.shape[1] != self.token_dim:
            return f"tokens must be uint8 [N, {self.token_dim}], got {tok.patches.dtype} {tuple(tok.patches.shape)}"
        if tok.positions.shape != (len(tok), 3) or tok.positions.dtype.kind not in "iu":
            return f"positions must be integers [N, 3], got {tok.positions.dtype} {tuple(tok.positions.shape)}"
        grid = np.array([tok.grid], np.int64)
        scalar = slot_scalar_problems(grid, np.array([len(tok)]), np.array([source_tokens]),
                                      np.array([source_size(tok.meta or {})]))
        if scalar:
            return scalar[0]
        found = positions_problems(np.asarray(tok.positions), [len(tok)], grid).get(0)
        return found or label_set_problem(tok.label_set) or self._text_problem(tok)

    def _text_problem(self, tok: Tokens) -> str | None:
        if set(tok.fields) != set(self.fields):
            return f"text fields {sorted(tok.fields)} are not the shard's {sorted(self.fields)}"
        for name, value in tok.fields.items():
            wrong = None if value is None else field_problem(value, self.field_max_bytes) if isinstance(value, str) \
                else "is not a string"
            if wrong is not None:
                return f"field {name!r} {wrong}"
        if self.text is not None:
            ids = tok.text_ids
            for name in self.text.fields:
                v = ids.get(name)
                v = None if v is None else np.asarray(v)
                if v is not None and (v.ndim != 1 or (v.size and v.dtype.kind not in "iu")):
                    return f"field {name!r}: token ids must be a 1-D integer array"
                problem = text_ids_problem(v, tok.fields[name] is not None, self.text)
                if problem is not None:
                    return f"field {name!r}: {problem}"
        return None

    def _check(self, tok: Tokens, source_tokens: int | None = None) -> None:
        problem = self._problem(tok, len(tok) if source_tokens is None else int(source_tokens))
        if problem is not None:
            raise ValueError(f"example {tok.key!r}: {problem}")

    def _text_cells(self, tok: Tokens) -> tuple[list, list]:
        """The example's field values (shard order) and token id lists (``text.fields`` order)."""
        ids = tok.text_ids
        return ([tok.fields[n] for n in self.fields],
                [None if ids.get(n) is None else np.asarray(ids[n]).astype(np.int32).tolist() for n in self._id_fields])

    def write(self, tok: Tokens) -> None:
        """Append one example (``"examples"`` shards)."""
        if self.kind != "examples":
            raise TypeError("write() is for 'examples' shards; use write_sequence()")
        self._check(tok)
        meta = tok.meta or {}
        positions = None if _is_full_raster(tok) else np.asarray(tok.positions, np.int32)
        texts, ids = self._text_cells(tok)
        self._rows.append(
            (
                tok.key, list(tok.label_set), [int(g) for g in tok.grid], len(tok),
                tok.patches, positions, source_size(meta),
                str(meta.get("source_shard", "")), meta_json(meta), texts, ids,
            )
        )
        self.examples += 1
        self.tokens += len(tok)
        self._pending_bytes += tok.patches.nbytes + sum(len(t) for t in texts if t is not None)
        self._maybe_flush()

    def write_sequence(self, seq: Sequence[Tokens], source_tokens: Sequence[int] | None = None) -> None:
        """Append one packed sequence (``"packed"`` shards): its examples (at least one) in slot order.

        ``source_tokens`` are the examples' token counts before dropping (default: stored counts),
        each between the stored count and the grid's cells.
        """
        if self.kind != "packed":
            raise TypeError("write_sequence() is for 'packed' shards; use write()")
        if not seq:
            raise ValueError("a packed sequence holds at least one example")
        src = list(source_tokens) if source_tokens is not None else [len(t) for t in seq]
        if len(src) != len(seq):
            raise ValueError("source_tokens must have one entry per example")
        for tok, n in zip(seq, src):
            self._check(tok, n)
        metas = [tok.meta or {} for tok in seq]
        patches = np.concatenate([t.patches for t in seq])
        positions = np.concatenate([t.positions for t in seq])
        cells = [self._text_cells(t) for t in seq]
        self._rows.append(
            (
                [t.key for t in seq], [list(t.label_set) for t in seq], [[int(g) for g in t.grid] for t in seq],
                [len(t) for t in seq], [int(n) for n in src], patches,
                positions.astype(np.int32, copy=False), [source_size(m) for m in metas],
                [str(m.get("source_shard", "")) for m in metas], [meta_json(m) for m in metas],
                [[c[0][f] for c in cells] for f in range(len(self.fields))],
                [[c[1][f] for c in cells] for f in range(len(self._id_fields))],
            )
        )
        self.examples += len(seq)
        self.tokens += len(patches)
        self._pending_bytes += patches.nbytes + sum(len(t) for c in cells for t in c[0] if t is not None)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._rows) >= self.rows_per_batch or self._pending_bytes >= self.bytes_per_batch:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        cols = list(zip(*self._rows))
        n = len(self._rows)
        *fixed, texts, ids = cols
        if self.kind == "examples":
            key, label, grid, ntok, tokens, positions, src, shard, meta = fixed
            const = lambda v: pa.array(np.full(n, v, np.int32))  # noqa: E731
            arrays = [
                pa.array(key, pa.string()), pa.array(label, pa.list_(pa.int64())), pa.array(grid, GRID_TYPE),
                const(self.patch_size), const(self.tubelet), const(self.channels),
                pa.array(ntok, pa.int32()), const(self.token_dim), _binary_array(tokens),
                _binary_array(positions), pa.array(src, SIZE_TYPE),
                pa.array(shard, pa.string()), pa.array(meta, pa.string()),
            ]
        else:
            keys, labels, grids, lengths, srctok, tokens, positions, srcs, shards, metas = fixed
            arrays = [
                pa.array(keys, pa.list_(pa.string())), pa.array(labels, pa.list_(pa.list_(pa.int64()))),
                pa.array(grids, pa.list_(GRID_TYPE)), pa.array(lengths, pa.list_(pa.int32())),
                pa.array(srctok, pa.list_(pa.int32())), pa.array(np.full(n, self.token_dim, np.int32)),
                _binary_array(tokens), _binary_array(positions),
                pa.array(srcs, pa.list_(SIZE_TYPE)), pa.array(shards, pa.list_(pa.string())),
                pa.array(metas, pa.list_(pa.string())),
            ]
        text_cols = self.schema.types[len(arrays):]
        cells = [[row[f] for row in texts] for f in range(len(self.fields))] + \
            [[row[f] for row in ids] for f in range(len(self._id_fields))]
        arrays += [pa.array(values, t) for values, t in zip(cells, text_cols)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += n
        self._rows = []
        self._pending_bytes = 0

    # -- finishing -----------------------------------------------------------------------------
    def close(self) -> ShardInfo:
        """Finish the file, fsync it and rename it into place; returns its :class:`ShardInfo`."""
        if self._closed:
            assert self.info is not None
            return self.info
        try:
            self._flush()
            self._writer.close()
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._sink.close()
            digest = sha256_file(self.tmp_path)
            size = self.tmp_path.stat().st_size
            os.replace(self.tmp_path, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.info = ShardInfo(str(self.path), self.rows, self.examples, self.tokens, size, digest)
        return self.info

    def abort(self) -> None:
        """Drop everything written so far (the final path is never touched)."""
        self._closed = True
        for closer in (self._writer.close, self._sink.close):
            try:
                closer()
            except Exception:
                pass
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)



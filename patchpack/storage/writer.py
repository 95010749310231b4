"""Atomic writing of one patchpack shard (see :mod:`patchpack.storage.format` for the layout)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..tokenize import Tokens
from .format import (
    _GRID, _SIZE, _TMP_MARK, ShardInfo, _meta_json, _source_size, example_schema, full_positions,
    packed_schema, sha256_file,
)

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

    >>> with ShardWriter("out/shard-000000.arrow", patch_size=16) as w:   # doctest: +SKIP
    ...     for tok in examples:
    ...         w.write(tok)
    >>> w.info.sha256                                                     # doctest: +SKIP

    Args:
        path: final shard path (``*.arrow``); it appears only when :meth:`close` succeeds.
        kind: ``"examples"`` (:meth:`write`) or ``"packed"`` (:meth:`write_sequence`).
        patch_size, tubelet, channels: token geometry, stored per row and in the metadata.
        metadata: extra JSON-serialisable schema metadata (e.g. the producing config).
        rows_per_batch, bytes_per_batch: Arrow record batch bounds (rows, token bytes).
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "examples",
        *,
        patch_size: int,
        tubelet: int = 1,
        channels: int = 3,
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
        geometry = dict(patch_size=self.patch_size, tubelet=self.tubelet, channels=self.channels)
        md = {**geometry, **(metadata or {})}
        self.schema = example_schema(md) if kind == "examples" else packed_schema(md)
        self.rows_per_batch, self.bytes_per_batch = rows_per_batch, bytes_per_batch
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f".{self.path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._sink = pa.OSFile(str(self.tmp_path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)  # uncompressed: memory-mappable
        self._rows: list = []
        self._pending_bytes = 0
        self.rows = self.examples = self.tokens = 0
        self.info: ShardInfo | None = None
        self._closed = False

    # -- writing -----------------------------------------------------------------------------
    def _check(self, tok: Tokens) -> None:
        if tok.patches.dtype != np.uint8 or tok.patches.ndim != 2 or tok.patches.shape[1] != self.token_dim:
            raise ValueError(
                f"example {tok.key!r}: tokens must be uint8 [N, {self.token_dim}], "
                f"got {tok.patches.dtype} {tuple(tok.patches.shape)}"
            )
        if tok.positions.shape != (len(tok), 3):
            raise ValueError(f"example {tok.key!r}: positions must be [N, 3], got {tuple(tok.positions.shape)}")

    def write(self, tok: Tokens) -> None:
        """Append one example (``"examples"`` shards)."""
        if self.kind != "examples":
            raise TypeError("write() is for 'examples' shards; use write_sequence()")
        self._check(tok)
        meta = tok.meta or {}
        positions = None if _is_full_raster(tok) else np.asarray(tok.positions, np.int32)
        self._rows.append(
            (
                tok.key, int(tok.label), [int(g) for g in tok.grid], len(tok),
                tok.patches, positions, _source_size(meta),
                str(meta.get("source_shard", "")), _meta_json(meta),
            )
        )
        self.examples += 1
        self.tokens += len(tok)
        self._pending_bytes += tok.patches.nbytes
        self._maybe_flush()

    def write_sequence(self, seq: Sequence[Tokens], source_tokens: Sequence[int] | None = None) -> None:
        """Append one packed sequence (``"packed"`` shards): its examples in slot order.

        ``source_tokens`` are the examples' token counts before dropping (default: stored counts).
        """
        if self.kind != "packed":
            raise TypeError("write_sequence() is for 'packed' shards; use write()")
        for tok in seq:
            self._check(tok)
        metas = [tok.meta or {} for tok in seq]
        src = list(source_tokens) if source_tokens is not None else [len(t) for t in seq]
        if len(src) != len(seq):
            raise ValueError("source_tokens must have one entry per example")
        patches = np.concatenate([t.patches for t in seq]) if seq else np.zeros((0, self.token_dim), np.uint8)
        positions = np.concatenate([t.positions for t in seq]) if seq else np.zeros((0, 3), np.int32)
        self._rows.append(
            (
                [t.key for t in seq], [int(t.label) for t in seq], [[int(g) for g in t.grid] for t in seq],
                [len(t) for t in seq], [int(n) for n in src], patches,
                positions.astype(np.int32, copy=False), [_source_size(m) for m in metas],
                [str(m.get("source_shard", "")) for m in metas], [_meta_json(m) for m in metas],
            )
        )
        self.examples += len(seq)
        self.tokens += len(patches)
        self._pending_bytes += patches.nbytes
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._rows) >= self.rows_per_batch or self._pending_bytes >= self.bytes_per_batch:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        cols = list(zip(*self._rows))
        n = len(self._rows)
        if self.kind == "examples":
            key, label, grid, ntok, tokens, positions, src, shard, meta = cols
            const = lambda v: pa.array(np.full(n, v, np.int32))  # noqa: E731
            arrays = [
                pa.array(key, pa.string()), pa.array(label, pa.int64()), pa.array(grid, _GRID),
                const(self.patch_size), const(self.tubelet), const(self.channels),
                pa.array(ntok, pa.int32()), const(self.token_dim), _binary_array(tokens),
                _binary_array(positions), pa.array(src, _SIZE),
                pa.array(shard, pa.string()), pa.array(meta, pa.string()),
            ]
        else:
            keys, labels, grids, lengths, srctok, tokens, positions, srcs, shards, metas = cols
            arrays = [
                pa.array(keys, pa.list_(pa.string())), pa.array(labels, pa.list_(pa.int64())),
                pa.array(grids, pa.list_(_GRID)), pa.array(lengths, pa.list_(pa.int32())),
                pa.array(srctok, pa.list_(pa.int32())), pa.array(np.full(n, self.token_dim, np.int32)),
                _binary_array(tokens), _binary_array(positions),
                pa.array(srcs, pa.list_(_SIZE)), pa.array(shards, pa.list_(pa.string())),
                pa.array(metas, pa.list_(pa.string())),
            ]
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



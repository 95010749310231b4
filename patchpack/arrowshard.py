"""patchpack shards: uncompressed Arrow IPC files of tokenized examples, read zero-copy.

A shard is an Arrow IPC *file* (random-access format, no compression) so that it can be
memory-mapped and every example's tokens read as a numpy view onto the mapping: no
decode, no copy, no unpickling. Two layouts, named in the schema metadata
``patchpack.format``:

``"examples"`` (:func:`example_schema`): one row per example at its fitted resolution,
before any token dropping (so dropping and packing stay random per epoch):

=================  ===============================  =====================================================
column             type                             meaning
=================  ===============================  =====================================================
``key``            string                           sample key
``label``          int64                            target, -1 when unknown
``grid``           fixed_size_list<int32>[3]        token grid ``(T, H, W)``
``patch_size``     int32                            ``p`` in pixels
``tubelet``        int32                            ``pt`` in frames (1 for images)
``channels``       int32                            ``C``
``num_tokens``     int32                            ``N`` tokens stored
``token_dim``      int32                            ``D = pt*p*p*C``
``tokens``         large_binary                     uint8 ``[N, D]``, row-major (see :mod:`patchpack.tokenize`)
``positions``      large_binary, nullable           int32 little-endian ``[N, 3]`` ``(t, y, x)``; null
                                                    means the full grid in raster order
``source_size``    fixed_size_list<int32>[2]        original ``(height, width)`` in pixels
``source_shard``   string                           input shard the example came from
``meta``           string                           other per-example facts as JSON (may be ``{}``)
=================  ===============================  =====================================================

``"packed"`` (:func:`packed_schema`): one row per packed sequence (after dropping and
packing): ``tokens`` / ``positions`` hold the sequence's examples back to back and list
columns ``keys``, ``labels``, ``grids``, ``lengths``, ``source_tokens``, ``source_sizes``,
``source_shards``, ``metas`` describe its slots in order.

Geometry (``patch_size``, ``tubelet``, ``channels``) and the producing configuration are
also in the schema metadata (``patchpack.*`` keys, JSON values).

Writes are atomic: :class:`ShardWriter` writes ``.NAME.tmp-*`` in the destination folder,
fsyncs it and renames it over ``NAME`` on :meth:`~ShardWriter.close`; an interrupted writer
leaves only a temporary file, never a partial shard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from .errors import ErrorRecord
from .source import Sample
from .tokenize import Tokens, grid_positions

__all__ = [
    "FORMAT_VERSION",
    "SHARD_SUFFIX",
    "example_schema",
    "packed_schema",
    "ShardWriter",
    "ShardReader",
    "ShardInfo",
    "ShardFormatError",
    "iter_shard_examples",
    "iter_shard_sequences",
    "read_shard_metadata",
    "list_shards",
    "sha256_file",
    "ShardExample",
    "read_arrow_shard",
    "is_patchpack_folder",
    "shard_probe",
]

FORMAT_VERSION = 1
SHARD_SUFFIX = ".arrow"
_TMP_MARK = ".tmp-"

_GRID = pa.list_(pa.int32(), 3)
_SIZE = pa.list_(pa.int32(), 2)

if sys.byteorder != "little":  # pragma: no cover - the format is little-endian on disk
    raise ImportError("patchpack shards need a little-endian machine")


class ShardFormatError(ValueError):
    """A file is not a readable patchpack shard (wrong schema, version or layout)."""


def example_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """Schema of an ``"examples"`` shard (see module doc); ``metadata`` goes to ``patchpack.*`` keys."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("grid", _GRID, nullable=False),
            pa.field("patch_size", pa.int32(), nullable=False),
            pa.field("tubelet", pa.int32(), nullable=False),
            pa.field("channels", pa.int32(), nullable=False),
            pa.field("num_tokens", pa.int32(), nullable=False),
            pa.field("token_dim", pa.int32(), nullable=False),
            pa.field("tokens", pa.large_binary(), nullable=False),
            pa.field("positions", pa.large_binary(), nullable=True),
            pa.field("source_size", _SIZE, nullable=False),
            pa.field("source_shard", pa.string(), nullable=False),
            pa.field("meta", pa.string(), nullable=False),
        ],
        metadata=_schema_metadata("examples", metadata),
    )


def packed_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """Schema of a ``"packed"`` shard: one row per packed sequence (see module doc)."""
    return pa.schema(
        [
            pa.field("keys", pa.list_(pa.string()), nullable=False),
            pa.field("labels", pa.list_(pa.int64()), nullable=False),
            pa.field("grids", pa.list_(_GRID), nullable=False),
            pa.field("lengths", pa.list_(pa.int32()), nullable=False),
            pa.field("source_tokens", pa.list_(pa.int32()), nullable=False),
            pa.field("token_dim", pa.int32(), nullable=False),
            pa.field("tokens", pa.large_binary(), nullable=False),
            pa.field("positions", pa.large_binary(), nullable=False),
            pa.field("source_sizes", pa.list_(_SIZE), nullable=False),
            pa.field("source_shards", pa.list_(pa.string()), nullable=False),
            pa.field("metas", pa.list_(pa.string()), nullable=False),
        ],
        metadata=_schema_metadata("packed", metadata),
    )


def _schema_metadata(kind: str, extra: dict[str, Any] | None) -> dict[bytes, bytes]:
    md = {"format": kind, "version": FORMAT_VERSION, **(extra or {})}
    return {f"patchpack.{k}".encode(): json.dumps(v, sort_keys=True).encode() for k, v in md.items()}


def _decode_metadata(schema: pa.Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (schema.metadata or {}).items():
        k = k.decode()
        if k.startswith("patchpack."):
            out[k[len("patchpack.") :]] = json.loads(v.decode())
    return out


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """What a closed writer produced: ``rows`` (examples or sequences), ``examples``,
    ``tokens`` stored, file ``bytes`` and its ``sha256``."""

    path: str
    rows: int
    examples: int
    tokens: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return dict(
            path=self.path, rows=self.rows, examples=self.examples, tokens=self.tokens,
            bytes=self.bytes, sha256=self.sha256,
        )


def _meta_json(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k not in ("source_size", "source_shard")}
    return json.dumps(rest, sort_keys=True, default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o.tolist() if isinstance(o, np.ndarray) else o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _source_size(meta: dict[str, Any]) -> list[int]:
    s = meta.get("source_size")
    return [int(s[0]), int(s[1])] if s is not None else [0, 0]


def _is_full_raster(tok: Tokens) -> bool:
    t, h, w = tok.grid
    n = len(tok)
    if n != t * h * w:
        return False
    return np.array_equal(tok.positions, _full_positions((int(t), int(h), int(w))))


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


# -- reading -----------------------------------------------------------------------------------


def _binary_views(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """``(offsets int64 [n+1], data uint8)`` numpy views of a large_binary array, zero-copy."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


@functools.lru_cache(maxsize=8192)
def _full_positions(grid: tuple[int, int, int]) -> np.ndarray:
    """Read-only raster positions of a full grid (shared by every example of that grid)."""
    pos = grid_positions(*grid)
    pos.setflags(write=False)
    return pos


class ShardReader:
    """A memory-mapped patchpack shard.

    Iterating yields :class:`~patchpack.tokenize.Tokens` (``"examples"`` shards) or lists of
    them (``"packed"`` shards) whose ``patches`` and ``positions`` are read-only numpy views
    onto the mapping (copy them to modify). ``reader[i]`` gives row ``i``.
    ``meta`` holds ``source_size``, ``source_shard`` and the stored JSON extras.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._source = pa.memory_map(str(self.path), "r")
            self._file = pa.ipc.open_file(self._source)
        except (pa.ArrowInvalid, OSError) as e:
            raise ShardFormatError(f"{self.path}: not an Arrow IPC file ({e})") from e
        self.metadata = _decode_metadata(self._file.schema)
        self.kind = self.metadata.get("format")
        if self.kind not in ("examples", "packed"):
            raise ShardFormatError(f"{self.path}: no patchpack format in the schema metadata")
        if int(self.metadata.get("version", -1)) > FORMAT_VERSION:
            raise ShardFormatError(
                f"{self.path}: shard format version {self.metadata.get('version')} is newer than {FORMAT_VERSION}"
            )
        self.patch_size = int(self.metadata.get("patch_size", 0))
        self.tubelet = int(self.metadata.get("tubelet", 1))
        self.channels = int(self.metadata.get("channels", 3))
        counts = [self._file.get_record_batch(i).num_rows for i in range(self._file.num_record_batches)]
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    @property
    def num_rows(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self._file.schema

    def _full_positions(self, grid: tuple[int, int, int]) -> np.ndarray:
        return _full_positions(grid)

    def _batch_examples(self, rb: pa.RecordBatch, rows: range | None = None) -> Iterator[Tokens]:
        c = rb.schema.get_field_index
        keys = rb.column(c("key")).to_pylist()
        labels = rb.column(c("label")).to_numpy()
        grids = rb.column(c("grid")).flatten().to_numpy().reshape(-1, 3)
        ntok = rb.column(c("num_tokens")).to_numpy()
        dims = rb.column(c("token_dim")).to_numpy()
        t_off, t_data = _binary_views(rb.column(c("tokens")))
        pos_col = rb.column(c("positions"))
        p_valid = pos_col.is_valid().to_numpy(zero_copy_only=False)
        p_off, p_data = _binary_views(pos_col)
        src = rb.column(c("source_size")).flatten().to_numpy().reshape(-1, 2)
        shards = rb.column(c("source_shard")).to_pylist()
        metas = rb.column(c("meta")).to_pylist()
        for i in rows if rows is not None else range(rb.num_rows):
            n, d = int(ntok[i]), int(dims[i])
            grid = (int(grids[i, 0]), int(grids[i, 1]), int(grids[i, 2]))
            patches = t_data[t_off[i] : t_off[i + 1]].reshape(n, d)
            if p_valid[i]:
                positions = p_data[p_off[i] : p_off[i + 1]].view(np.int32).reshape(n, 3)
            else:
                positions = self._full_positions(grid)
            meta = json.loads(metas[i]) if metas[i] else {}
            meta["source_size"] = (int(src[i, 0]), int(src[i, 1]))
            meta["source_shard"] = shards[i]
            yield Tokens(keys[i], patches, positions, grid, int(labels[i]), meta)

    def _batch_sequences(self, rb: pa.RecordBatch, rows: range | None = None) -> Iterator[list[Tokens]]:
        c = rb.schema.get_field_index
        keys = rb.column(c("keys")).to_pylist()
        labels = rb.column(c("labels")).to_pylist()
        grids = rb.column(c("grids")).to_pylist()
        lengths = rb.column(c("lengths")).to_pylist()
        srctok = rb.column(c("source_tokens")).to_pylist()
        dims = rb.column(c("token_dim")).to_numpy()
        t_off, t_data = _binary_views(rb.column(c("tokens")))
        p_off, p_data = _binary_views(rb.column(c("positions")))
        srcs = rb.column(c("source_sizes")).to_pylist()
        shards = rb.column(c("source_shards")).to_pylist()
        metas = rb.column(c("metas")).to_pylist()
        for i in rows if rows is not None else range(rb.num_rows):
            d = int(dims[i])
            total = sum(lengths[i])
            patches = t_data[t_off[i] : t_off[i + 1]].reshape(total, d)
            positions = p_data[p_off[i] : p_off[i + 1]].view(np.int32).reshape(total, 3)
            seq, o = [], 0
            for j, n in enumerate(lengths[i]):
                meta = json.loads(metas[i][j]) if metas[i][j] else {}
                meta.update(source_size=tuple(srcs[i][j]), source_shard=shards[i][j], source_tokens=srctok[i][j])
                seq.append(Tokens(keys[i][j], patches[o : o + n], positions[o : o + n], tuple(grids[i][j]),
                                  int(labels[i][j]), meta))
                o += n
            yield seq

    def _iter_batch(self, rb: pa.RecordBatch, rows: range | None = None):
        return self._batch_examples(rb, rows) if self.kind == "examples" else self._batch_sequences(rb, rows)

    def __iter__(self) -> Iterator:
        for b in range(self._file.num_record_batches):
            yield from self._iter_batch(self._file.get_record_batch(b))

    def __getitem__(self, i: int):
        n = self.num_rows
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for a shard of {n} rows")
        b = int(np.searchsorted(self._starts, i, side="right") - 1)
        r = i - int(self._starts[b])
        return next(self._iter_batch(self._file.get_record_batch(b), range(r, r + 1)))

    def keys(self) -> list[str]:
        """Sample keys, row order (``"packed"``: all slots of all sequences)."""
        col = "key" if self.kind == "examples" else "keys"
        out: list[str] = []
        for b in range(self._file.num_record_batches):
            vals = self._file.get_record_batch(b).column(col).to_pylist()
            out.extend(vals if self.kind == "examples" else (k for ks in vals for k in ks))
        return out

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_shard_examples(path: str | Path) -> Iterator[Tokens]:
    """Yield the examples of a shard (zero-copy views); a ``"packed"`` shard yields its slots in order."""
    reader = ShardReader(path)
    if reader.kind == "examples":
        yield from reader
    else:
        for seq in reader:
            yield from seq


def iter_shard_sequences(path: str | Path) -> Iterator[list[Tokens]]:
    """Yield the packed sequences of a ``"packed"`` shard, each a list of examples in slot order."""
    reader = ShardReader(path)
    if reader.kind != "packed":
        raise ShardFormatError(f"{path}: an 'examples' shard holds no packed sequences")
    yield from reader


def read_shard_metadata(path: str | Path) -> dict[str, Any]:
    """The ``patchpack.*`` schema metadata of a shard (format, version, geometry, config)."""
    with ShardReader(path) as r:
        return dict(r.metadata, rows=r.num_rows)


def list_shards(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard files of a patchpack dataset: a folder (its ``manifest.json`` order when present,
    else ``*.arrow`` sorted by name), a single shard, or a list of either."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in list_shards(s)]
    path = Path(source)
    if path.is_file():
        return [path]
    manifest = path / "manifest.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())["shards"]
        return [path / e["output"] for e in entries if e.get("output")]
    return sorted(p for p in path.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))


# -- patchpack shards as a loader source -------------------------------------------------------


@dataclass
class ShardExample(Sample):
    """A :class:`~patchpack.source.Sample` read from a patchpack shard: already fitted and
    tokenized. ``members`` is empty; ``tokens`` holds zero-copy views; ``patch_size`` and
    ``tubelet`` are the shard's geometry."""

    tokens: Tokens | None = None
    patch_size: int = 0
    tubelet: int = 1


def is_patchpack_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``patchpack preprocess`` (has its manifest)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == "patchpack-shards"
    except (OSError, ValueError):
        return False


def read_arrow_shard(
    url: str, start: int = 0, owns: Callable[[int], bool] | None = None
) -> Iterator[ShardExample | ErrorRecord]:
    """Examples of one patchpack shard as :class:`ShardExample` records, from row ``start``.

    Only rows for which ``owns(row)`` is true are yielded (the row index is the sample
    index, so resume and sample-level splitting work as for tar shards). A shard that
    cannot be opened becomes one ``shard`` :class:`~patchpack.errors.ErrorRecord`. A
    ``"packed"`` shard yields its slots one by one (they are packed again by the loader).
    """
    owns = owns or (lambda i: True)
    try:
        reader = ShardReader(url)
    except (ShardFormatError, OSError) as exc:
        if owns(0):
            yield ErrorRecord(url, url, "source", "shard", f"cannot open patchpack shard: {exc}")
        return
    rows = iter(reader) if reader.kind == "examples" else (t for seq in reader for t in seq)
    for index, tok in enumerate(rows):
        if index < start or not owns(index):
            continue
        yield ShardExample(tok.key, url, {}, index, tok, reader.patch_size, reader.tubelet)


def shard_probe(sample: ShardExample, fit_cfg, tubelet: int, rng=None):
    """The :class:`~patchpack.decode.Probe` of a stored example, without decoding anything.

    ``rng`` (the loader's per-example generator) is advanced as the online fit would
    advance it for a sampled fit mode, so drop rates drawn after it match the online ones.

    Raises:
        SampleError: ``unsupported`` when the shard's patch size or tubelet differ from the loader's.
    """
    from .decode import Probe
    from .errors import SampleError
    from .fit import fit_grid

    tok = sample.tokens
    if sample.patch_size != fit_cfg.patch_size or sample.tubelet != tubelet:
        raise SampleError(
            "unsupported",
            f"shard stores patch size {sample.patch_size}, tubelet {sample.tubelet}; "
            f"the loader wants {fit_cfg.patch_size}, {tubelet}",
            key=sample.key, shard=sample.shard, stage="source",
        )
    src = tuple(int(v) for v in tok.meta.get("source_size", (0, 0)))
    kind = tok.meta.get("kind", "image")
    if rng is not None and fit_cfg.mode != "native" and kind == "image" and min(src) > 0:
        fit_grid(src[0], src[1], fit_cfg, rng)
    t, h, w = (int(g) for g in tok.grid)
    p = sample.patch_size
    return Probe(kind, src, (h * p, w * p), (t, h, w), [], {"stored": True})

"""Memory-mapped, zero-copy reading of patchpack shards (see :mod:`patchpack.storage.format`).

Every row is checked against itself before a view is made (token bytes = ``num_tokens x
token_dim``, ``token_dim`` = the shard's ``tubelet * p * p * channels``, grid sides >= 1,
positions inside the grid, a null ``positions`` only with a full grid), so a tampered row
never allocates by its claims: :meth:`ShardReader.iter_checked` yields a :class:`BadRow`
for it and goes on; plain iteration raises :class:`ShardFormatError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import pyarrow as pa

from ..tokenize import Tokens
from .format import FORMAT_VERSION, ShardFormatError, _decode_metadata, full_positions

__all__ = ["ShardReader", "BadRow", "iter_shard_examples", "iter_shard_sequences", "read_shard_metadata"]

#: largest grid (T * H * W tokens) a row may claim
MAX_GRID_TOKENS = 2**31 - 1


class BadRow(NamedTuple):
    """A row that contradicts itself: ``row`` (0-based in the shard, ``"packed"``: slot order is
    lost, so one per sequence), ``key`` (first key of the row) and what is wrong."""

    row: int
    key: str
    message: str


def _grid_problem(grid: tuple[int, int, int]) -> str | None:
    if min(grid) < 1 or grid[0] * grid[1] * grid[2] > MAX_GRID_TOKENS:
        return f"grid {grid} is not a valid token grid"
    return None


def _positions_problem(positions: np.ndarray, grid: tuple[int, int, int]) -> str | None:
    if len(positions) and (positions.min(initial=0) < 0 or (positions.max(axis=0) >= np.asarray(grid)).any()):
        return f"positions fall outside the grid {grid}"
    return None


def _binary_views(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """``(offsets int64 [n+1], data uint8)`` numpy views of a large_binary array, zero-copy."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data



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
        try:
            self.metadata = _decode_metadata(self._file.schema)
        except ShardFormatError as e:
            raise ShardFormatError(f"{self.path}: {e}") from None
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

    def full_positions(self, grid: tuple[int, int, int]) -> np.ndarray:
        return full_positions(grid)

    def _row_dim_problem(self, n: int, d: int, nbytes: int) -> str | None:
        want = self.tubelet * self.patch_size**2 * self.channels
        if n < 0 or d < 1 or (self.patch_size and d != want):
            return f"token_dim {d} (shard geometry gives {want}) or num_tokens {n} is invalid"
        if n * d != nbytes:
            return f"num_tokens x token_dim = {n} x {d} = {n * d} bytes, but the row holds {nbytes}"
        return None

    def _batch_examples(self, rb: pa.RecordBatch, rows: range | None = None, base: int = 0) -> Iterator[Tokens]:
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
            problem = self._row_dim_problem(n, d, int(t_off[i + 1] - t_off[i])) or _grid_problem(grid)
            if problem is None and p_valid[i] and p_off[i + 1] - p_off[i] != n * 12:
                problem = f"positions hold {int(p_off[i + 1] - p_off[i])} bytes for {n} tokens"
            if problem is None and not p_valid[i] and n != grid[0] * grid[1] * grid[2]:
                problem = f"{n} tokens without positions, but the full grid {grid} has {grid[0] * grid[1] * grid[2]}"
            if problem is None:
                patches = t_data[t_off[i] : t_off[i + 1]].reshape(n, d)
                if p_valid[i]:
                    positions = p_data[p_off[i] : p_off[i + 1]].view(np.int32).reshape(n, 3)
                    problem = _positions_problem(positions, grid)
                else:
                    positions = self.full_positions(grid)
            if problem is None:
                try:
                    meta = json.loads(metas[i]) if metas[i] else {}
                    if not isinstance(meta, dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError) as exc:
                    problem = f"meta is not a JSON object: {type(exc).__name__}"
            if problem is not None:
                yield BadRow(base + i, str(keys[i]), problem)
                continue
            meta["source_size"] = (int(src[i, 0]), int(src[i, 1]))
            meta["source_shard"] = shards[i]
            yield Tokens(keys[i], patches, positions, grid, int(labels[i]), meta)

    def _batch_sequences(self, rb: pa.RecordBatch, rows: range | None = None, base: int = 0
                         ) -> Iterator[list[Tokens]]:
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
            slots = {len(keys[i]), len(labels[i]), len(grids[i]), len(srctok[i]), len(srcs[i]), len(shards[i]),
                     len(metas[i])}
            problem = None if slots == {len(lengths[i])} and min(lengths[i], default=1) >= 0 else \
                "slot columns disagree in length"
            problem = problem or self._row_dim_problem(total, d, int(t_off[i + 1] - t_off[i]))
            if problem is None and p_off[i + 1] - p_off[i] != total * 12:
                problem = f"positions hold {int(p_off[i + 1] - p_off[i])} bytes for {total} tokens"
            if problem is None:
                problem = next((q for g in grids[i] if (q := _grid_problem(tuple(g))) is not None), None)
            if problem is not None:
                yield BadRow(base + i, str(keys[i][0]) if keys[i] else "", problem)
                continue
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

    def _iter_batch(self, rb: pa.RecordBatch, rows: range | None = None, base: int = 0):
        if self.kind == "examples":
            return self._batch_examples(rb, rows, base)
        return self._batch_sequences(rb, rows, base)

    def iter_checked(self) -> Iterator:
        """Rows in order: :class:`~patchpack.tokenize.Tokens` (``"packed"``: lists of them) or a
        :class:`BadRow` for a row that contradicts itself."""
        for b in range(self._file.num_record_batches):
            yield from self._iter_batch(self._file.get_record_batch(b), None, int(self._starts[b]))

    def __iter__(self) -> Iterator:
        for row in self.iter_checked():
            if isinstance(row, BadRow):
                raise ShardFormatError(f"{self.path}: row {row.row} ({row.key!r}): {row.message}")
            yield row

    def __getitem__(self, i: int):
        n = self.num_rows
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for a shard of {n} rows")
        b = int(np.searchsorted(self._starts, i, side="right") - 1)
        r = i - int(self._starts[b])
        row = next(self._iter_batch(self._file.get_record_batch(b), range(r, r + 1), int(self._starts[b])))
        if isinstance(row, BadRow):
            raise ShardFormatError(f"{self.path}: row {row.row} ({row.key!r}): {row.message}")
        return row

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



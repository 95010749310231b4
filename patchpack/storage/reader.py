"""Memory-mapped, zero-copy reading of patchpack shards (see :mod:`patchpack.storage.format`).

A shard is refused at open (:class:`ShardFormatError`, one line) when its metadata or a
column's type is not the format's, or its version is newer than this reader's. Then every
record batch passes Arrow's full validation (offsets in bounds, UTF-8), and every row and
every slot of it is checked against itself before a view is made (:mod:`patchpack.storage.rows`):
token bytes = tokens x ``token_dim``, the shard's geometry; each slot ``1 <= n <= T*H*W`` with
its positions distinct cells of its own grid (a null ``positions`` only for a full grid), its
labels in range without repeats, its text fields and token ids within their bounds, its
``meta`` a JSON object. So a tampered row never allocates by its claims and never yields a
slot that contradicts itself: :meth:`ShardReader.iter_checked` gives a :class:`BadRow` for it
and goes on; plain iteration raises :class:`ShardFormatError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import pyarrow as pa

from ..tokenize import Tokens
from .format import (
    ShardFormatError, TextIdsSpec, decode_metadata, expected_columns, field_problem, full_positions, schema_problem,
)
from .rows import (
    BatchSlots, batch_slots, grid_cells, label_set_problem, positions_problems,
    slot_scalar_problems, text_ids_problem,
)

__all__ = [
    "ShardReader", "BadRow", "iter_shard_examples", "iter_shard_sequences", "read_shard_metadata",
]


class BadRow(NamedTuple):
    """A row that contradicts itself: ``row`` (0-based in the shard; a ``"packed"`` row is one
    sequence, all its slots dropped), ``key`` (the example at fault, else the row's first; ``""``
    when the batch is unreadable), what is wrong (``"example j of k: ..."`` in a packed row) and,
    in a packed row, ``also``: the keys of the row's other examples, dropped with it."""

    row: int
    key: str
    message: str
    also: tuple[str, ...] = ()


@dataclass
class _Batch:
    """One record batch, checked: why Arrow's validation refused it (``invalid``), or its slot
    views, the slots with an impossible scalar (``problems``; ``bad``: their indices, sorted),
    Python lists of what the per-row loop reads (numpy scalar access is slow), one tuple per
    row of ``(aligned, geometry, token_dim, token bytes, has positions, position bytes)``, each
    distinct ``meta`` text parsed, and what is wrong with each row as a whole."""

    invalid: str | None = None
    slots: BatchSlots | None = None
    problems: dict[int, str] = field(default_factory=dict)
    bad: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    first: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    grids: list[tuple[int, int, int]] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    labels: list[tuple[int, ...]] = field(default_factory=list)
    metas: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    source_sizes: list[tuple[int, int]] = field(default_factory=list)
    source_tokens: list[int] | None = None
    rows: list[tuple] = field(default_factory=list)
    parsed: dict[str, dict | str | None] = field(default_factory=dict)
    row_problems: list[str | None] = field(default_factory=list)


def _checked(b: BatchSlots) -> _Batch:
    problems = slot_scalar_problems(b.grids, b.lengths, b.source_tokens, b.source_sizes)
    geometry = [tuple(g) for g in b.geometry.tolist()] if b.geometry is not None else [None] * len(b.token_dim)
    rows = list(zip(b.aligned.tolist(), geometry, b.token_dim.tolist(), (b.tokens.end - b.tokens.start).tolist(),
                    b.positions.valid.tolist(), (b.positions.end - b.positions.start).tolist()))
    metas = b.metas.texts()
    return _Batch(
        None, b, problems, np.array(sorted(problems), np.int64), b.first.tolist(), b.keys.texts(),
        b.lengths.tolist(), [tuple(g) for g in b.grids.tolist()], grid_cells(b.grids).tolist(), b.labels.tuples(),
        metas, b.shards.texts(), [tuple(v) for v in b.source_sizes.tolist()],
        b.source_tokens.tolist() if b.source_tokens is not None else None, rows, _parse_metas(metas),
    )


def _parse_metas(metas: list[str]) -> dict[str, dict | str | None]:
    """Each distinct ``meta`` text of a batch parsed once: a flat object (copied per slot), ``None``
    for a nested one (parsed again per slot, so no two slots share a mutable value), or what is wrong."""
    out: dict[str, dict | str | None] = {}
    for text in set(metas):
        try:
            obj = json.loads(text or "{}")
        except (ValueError, RecursionError) as exc:
            out[text] = f"meta is not a JSON object: {type(exc).__name__}"
            continue
        if not isinstance(obj, dict):
            out[text] = f"meta is not a JSON object but a {type(obj).__name__}"
        else:
            out[text] = None if any(isinstance(v, (dict, list)) for v in obj.values()) else obj
    return out


class ShardReader:
    """A memory-mapped patchpack shard.

    Iterating yields :class:`~patchpack.tokenize.Tokens` (``"examples"`` shards) or lists of
    them (``"packed"`` shards) whose ``patches``, ``positions`` and ``text_ids`` are read-only
    numpy views onto the mapping (copy them to modify). ``reader[i]`` gives row ``i``.
    ``label_set``, ``fields`` (the shard's :attr:`fields`, ``None`` where a sample has none)
    and ``text_ids`` (``{field: int32 ids or None}`` for the fields of :attr:`text`) are
    filled; ``meta`` holds ``source_size``, ``source_shard``, ``source_tokens`` (packed) and
    the stored JSON extras.

    Attributes:
        kind: ``"examples"`` or ``"packed"``; version: the shard's format version.
        patch_size, tubelet, channels, token_dim: token geometry.
        fields: text field names; field_max_bytes: the cap on one field value the shard was
            written with; text: the :class:`~patchpack.storage.format.TextIdsSpec`, or ``None``.
        metadata: the decoded ``patchpack.*`` schema metadata.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._source = pa.memory_map(str(self.path), "r")
            self._file = pa.ipc.open_file(self._source)
        except (pa.ArrowInvalid, OSError) as e:
            raise ShardFormatError(f"{self.path}: not an Arrow IPC file ({e})") from e
        try:
            self.metadata = decode_metadata(self._file.schema)
            self.kind = self.metadata.get("format")
            if self.kind not in ("examples", "packed"):
                raise ShardFormatError("no patchpack format in the schema metadata")
            self.version = int(self.metadata["version"])
            self.fields = tuple(self.metadata["fields"])
            self.field_max_bytes = int(self.metadata["field_max_bytes"])
            text = self.metadata.get("text")
            self.text = TextIdsSpec.from_dict(text) if text is not None else None
            problem = schema_problem(self._file.schema, expected_columns(self.kind, self.version, self.fields,
                                                                         self.text))
            if problem is not None:
                raise ShardFormatError(f"not a version {self.version} {self.kind!r} shard: {problem}")
        except ShardFormatError as e:
            self._source.close()
            raise ShardFormatError(f"{self.path}: {e}") from None
        self.patch_size = int(self.metadata["patch_size"])
        self.tubelet = int(self.metadata["tubelet"])
        self.channels = int(self.metadata["channels"])
        self.token_dim = self.tubelet * self.patch_size**2 * self.channels
        counts = [self._file.get_record_batch(i).num_rows for i in range(self._file.num_record_batches)]
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._last: tuple[int, _Batch] | None = None

    @property
    def num_rows(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self._file.schema

    # -- checking ------------------------------------------------------------------------------
    def _check_batch(self, rb: pa.RecordBatch) -> _Batch:
        """A record batch with every row and slot checked (positions a whole run of rows at once)."""
        try:
            rb.validate(full=True)
        except pa.ArrowInvalid as exc:
            return _Batch(invalid=f"record batch fails Arrow's validation: {exc}")
        c = _checked(batch_slots(rb, self.kind, self.version, self.fields, self.text))
        c.row_problems = [self._row_problem(c, i) for i in range(len(c.rows))]
        c.problems.update(self._position_problems(c))
        c.bad = np.array(sorted(c.problems), np.int64)
        return c

    def _position_problems(self, c: _Batch) -> dict[int, str]:
        """Slot problems of the positions of every sound row that has them: rows lying back to
        back in the positions buffer are checked together (one pass for a whole batch)."""
        b, out, runs = c.slots, {}, []
        start, end = b.positions.start.tolist(), b.positions.end.tolist()
        for i, row in enumerate(c.rows):
            sound = row[4] and c.row_problems[i] is None and not (
                c.problems and any(s in c.problems for s in range(c.first[i], c.first[i + 1])))
            if sound and runs and runs[-1][1] == i - 1 and end[i - 1] == start[i]:
                runs[-1][1] = i
            elif sound:
                runs.append([i, i])
        for r0, r1 in runs:
            s0, s1 = c.first[r0], c.first[r1 + 1]
            positions = b.positions.values[start[r0] : end[r1]].view(np.int32).reshape(-1, 3)
            found = positions_problems(positions, c.lengths[s0:s1], b.grids[s0:s1])
            out.update({s0 + s: message for s, message in found.items()})
        return out

    def _row_problem(self, c: _Batch, i: int) -> str | None:
        """What is wrong with row ``i`` as a whole (slot counts, geometry, byte counts)."""
        aligned, geometry, d, token_bytes, has_positions, position_bytes = c.rows[i]
        s0, s1 = c.first[i], c.first[i + 1]
        if not aligned or s1 == s0:
            return "slot columns disagree on the number of examples" if not aligned else "no examples"
        if geometry is not None and geometry != (self.patch_size, self.tubelet, self.channels):
            return (f"patch_size, tubelet, channels {geometry} differ from the shard's "
                    f"{(self.patch_size, self.tubelet, self.channels)}")
        if d != self.token_dim:
            return f"token_dim {d}, but the shard's geometry gives {self.token_dim}"
        total = sum(c.lengths[s0:s1])
        if total * d != token_bytes:
            return f"{total} tokens x token_dim {d} = {total * d} bytes, but the row holds {token_bytes}"
        if has_positions and position_bytes != total * 12:
            return f"positions hold {position_bytes} bytes for {total} tokens"
        if not has_positions and total != c.cells[s0]:
            return f"{total} tokens without positions, but the full grid {c.grids[s0]} has {c.cells[s0]}"
        return None

    def _text(self, b: BatchSlots, s: int) -> tuple[dict[str, str | None], dict[str, np.ndarray | None], str | None]:
        """Slot ``s``'s text fields, their token ids and what is wrong with them."""
        fields: dict[str, str | None] = {}
        problem = None
        for name, col in b.fields.items():
            raw = col.at(s).tobytes() if col.valid[s] else None
            wrong = field_problem(raw, self.field_max_bytes) if raw is not None else None
            problem = problem or (f"field {name!r} {wrong}" if wrong else None)
            fields[name] = raw.decode("utf-8") if raw is not None and wrong is None else None
        ids = {n: col.at(s) if col.valid[s] else None for n, col in b.text_ids.items()}
        if self.text is not None:
            problem = problem or next((f"field {n!r}: {q}" for n, v in ids.items()
                                       if (q := text_ids_problem(v, fields[n] is not None, self.text))), None)
        return fields, ids, problem

    def _slot(self, c: _Batch, s: int, patches: np.ndarray, positions: np.ndarray) -> Tokens | str:
        """Slot ``s`` as :class:`Tokens`, or what is wrong with its labels, fields, ids or meta."""
        label_set = c.labels[s]
        problem = label_set_problem(label_set)
        fields, ids, wrong = self._text(c.slots, s) if self.fields else ({}, {}, None)
        if problem or wrong:
            return problem or wrong
        parsed = c.parsed[c.metas[s]]
        if isinstance(parsed, str):
            return parsed
        stored = dict(parsed) if parsed is not None else json.loads(c.metas[s])
        stored.update(source_size=c.source_sizes[s], source_shard=c.shards[s])
        if c.source_tokens is not None:
            stored["source_tokens"] = c.source_tokens[s]
        return Tokens(c.keys[s], patches, positions, c.grids[s], meta=stored, label_set=label_set, fields=fields,
                      text_ids=ids)

    def _where(self, j: int, k: int) -> str:
        """Where in a row a problem is: ``"example j of k: "`` in a packed row."""
        return f"example {j + 1} of {k}: " if self.kind == "packed" else ""

    def _bad(self, c: _Batch, row: int, s: int | None, message: str, s0: int, s1: int) -> BadRow:
        """Row ``row`` refused for slot ``s`` (``None``: the row has no slots); a packed row
        names its other slots' keys too."""
        also = tuple(c.keys[t] for t in range(s0, s1) if t != s) if self.kind == "packed" else ()
        return BadRow(row, c.keys[s] if s is not None else "", message, also)

    def _row(self, c: _Batch, i: int, base: int):
        """Row ``i`` of a checked batch: :class:`Tokens` (packed: a list of them) or a :class:`BadRow`."""
        if c.invalid is not None:
            return BadRow(base + i, "", c.invalid)
        b = c.slots
        s0, s1 = c.first[i], c.first[i + 1]
        problem = c.row_problems[i]
        if problem is not None:
            return self._bad(c, base + i, s0 if s1 > s0 else None, problem, s0, s1)
        k = int(np.searchsorted(c.bad, s0)) if len(c.bad) else 0
        if k < len(c.bad) and c.bad[k] < s1:
            s = int(c.bad[k])
            return self._bad(c, base + i, s, self._where(s - s0, s1 - s0) + c.problems[s], s0, s1)
        lengths = c.lengths[s0:s1]
        total = sum(lengths)
        patches = b.tokens.at(i).reshape(total, self.token_dim)
        if c.rows[i][4]:
            positions = b.positions.at(i).view(np.int32).reshape(total, 3)
        else:
            positions = full_positions(c.grids[s0])
        out, o = [], 0
        for s, n in zip(range(s0, s1), lengths):
            tok = self._slot(c, s, patches[o : o + n], positions[o : o + n])
            if isinstance(tok, str):
                return self._bad(c, base + i, s, self._where(s - s0, s1 - s0) + tok, s0, s1)
            out.append(tok)
            o += n
        return out if self.kind == "packed" else out[0]

    def _batch(self, index: int) -> _Batch:
        if self._last is None or self._last[0] != index:
            self._last = (index, self._check_batch(self._file.get_record_batch(index)))
        return self._last[1]

    # -- reading -------------------------------------------------------------------------------
    def iter_checked(self) -> Iterator:
        """Rows in order: :class:`~patchpack.tokenize.Tokens` (``"packed"``: lists of them) or a
        :class:`BadRow` for a row that contradicts itself."""
        for b in range(self._file.num_record_batches):
            checked, base = self._batch(b), int(self._starts[b])
            for i in range(int(self._starts[b + 1]) - base):
                yield self._row(checked, i, base)

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
        row = self._row(self._batch(b), i - int(self._starts[b]), int(self._starts[b]))
        if isinstance(row, BadRow):
            raise ShardFormatError(f"{self.path}: row {row.row} ({row.key!r}): {row.message}")
        return row

    def keys(self) -> list[str]:
        """Sample keys, row order (``"packed"``: all slots of all sequences).

        Raises:
            ShardFormatError: a record batch Arrow cannot validate (its keys cannot be read).
        """
        out: list[str] = []
        for b in range(self._file.num_record_batches):
            checked = self._batch(b)
            if checked.invalid is not None:
                raise ShardFormatError(f"{self.path}: record batch {b}: {checked.invalid}")
            out.extend(checked.keys)
        return out

    def close(self) -> None:
        self._last = None
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
    """The ``patchpack.*`` schema metadata of a shard (format, version, geometry, fields, text, config)."""
    with ShardReader(path) as r:
        return dict(r.metadata, rows=r.num_rows)

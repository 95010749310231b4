"""Property: one numeric cell of a valid shard changed to any value never raises and never yields
a slot that contradicts itself. The tampered row is a BadRow, or it reads back with the same
examples and tokens as before and every slot sound (a value that is itself valid, a label 5
for a 3 or a larger grid around dropped tokens, is what is stored: only the manifest's sha256
tells); every other row reads back as it was written."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkit import P, example, read_table, write_table

from patchpack.storage.format import TextIdsSpec
from patchpack.storage.reader import BadRow, ShardReader
from patchpack.storage.writer import ShardWriter

TEXT = TextIdsSpec("tok", text_len=5, fields=("txt",), vocab_size=50)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def _examples() -> list:
    shapes = [(2, 3, None), (3, 3, [0, 2, 4, 8]), (1, 4, None), (2, 2, [3]), (3, 2, [1, 2, 5]), (2, 4, None)]
    out = []
    for i, (gh, gw, keep) in enumerate(shapes):
        text = None if i % 3 == 2 else f"caption {i}"
        ids = None if text is None else np.arange(i % 4 + 1) + i
        out.append(example(f"k{i}", gh, gw, i, labels=[(), (i,), (i, i + 7)][i % 3], fields={"txt": text},
                           keep=None if keep is None else np.array(keep), ids={"txt": ids}))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    exs = _examples()
    with ShardWriter(root / "e.arrow", patch_size=P, fields=["txt"], text=TEXT, rows_per_batch=4) as w:
        for e in exs:
            w.write(e)
    with ShardWriter(root / "p.arrow", "packed", patch_size=P, fields=["txt"], text=TEXT, rows_per_batch=2) as w:
        for seq in (exs[:2], exs[2:3], exs[3:6]):
            w.write_sequence(seq)
    return {kind: (read_table(root / f"{kind[0]}.arrow"), _rows(root / f"{kind[0]}.arrow"))
            for kind in ("examples", "packed")}, root


def _rows(path) -> list:
    with ShardReader(path) as r:
        return [t if isinstance(t, list) else [t] for t in r]


#: numeric cells: column -> value strategy
CELLS = {
    "examples": {"label_set": INT64, "grid": INT32, "patch_size": INT32, "tubelet": INT32, "channels": INT32,
                 "num_tokens": INT32, "token_dim": INT32, "source_size": INT32, "text_ids:txt": INT32,
                 "positions": INT32},
    "packed": {"label_sets": INT64, "grids": INT32, "lengths": INT32, "source_tokens": INT32, "token_dim": INT32,
               "source_sizes": INT32, "text_ids:txt": INT32, "positions": INT32},
}
CELLS_ANY = {**CELLS["examples"], **CELLS["packed"]}


def _paths(value, prefix=()) -> list[tuple]:
    """Index paths of the numbers inside a cell value (nested lists)."""
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))]
    return [prefix] if isinstance(value, int) else []


def _set(value, path, new):
    if not path:
        return new
    out = list(value)
    out[path[0]] = _set(value[path[0]], path[1:], new)
    return out


def _tampered(table: pa.Table, column: str, row: int, data) -> tuple[pa.Table, bool]:
    """``table`` with one number of ``column`` in ``row`` replaced; False when the cell holds none."""
    i = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    if column == "positions":
        pos = np.frombuffer(values[row] or b"", np.int32).copy()
        if not len(pos):
            return table, False
        pos[data.draw(st.integers(0, len(pos) - 1))] = data.draw(INT32)
        values[row] = pos.tobytes()
    else:
        paths = _paths(values[row])
        if not paths:
            return table, False
        values[row] = _set(values[row], data.draw(st.sampled_from(paths)), data.draw(CELLS_ANY[column]))
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type)), True


def _sound(t) -> None:
    """Every invariant of a slot, checked here without the reader's code."""
    cells = t.grid[0] * t.grid[1] * t.grid[2]
    assert min(t.grid) >= 1 and 1 <= len(t) <= cells
    pos = np.asarray(t.positions)
    assert pos.shape == (len(t), 3) and (pos >= 0).all() and (pos < np.array(t.grid)).all()
    assert len({tuple(p) for p in pos.tolist()}) == len(t)
    assert all(0 <= v < 2**31 for v in t.label_set) and len(set(t.label_set)) == len(t.label_set)
    assert "source_tokens" not in t.meta or len(t) <= t.meta["source_tokens"] <= cells
    assert min(t.meta["source_size"]) >= 0 and t.patches.shape == (len(t), 3 * P * P)
    ids = t.text_ids["txt"]
    assert (ids is None) == (t.fields["txt"] is None)
    assert ids is None or (len(ids) <= TEXT.text_len and all(0 <= v < TEXT.vocab_size for v in ids.tolist()))


def _equal(a, b) -> None:
    assert (a.key, a.label_set, a.fields, tuple(a.grid), a.meta["source_size"]) == \
        (b.key, b.label_set, b.fields, tuple(b.grid), b.meta["source_size"])
    np.testing.assert_array_equal(a.patches, b.patches)
    np.testing.assert_array_equal(a.positions, b.positions)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["examples", "packed"]), data=st.data())
def test_one_tampered_number_is_a_bad_row_or_a_sound_row(shards, kind, data):
    tables, root = shards
    table, original = tables[kind]
    column = data.draw(st.sampled_from(sorted(CELLS[kind])))
    row = data.draw(st.integers(0, table.num_rows - 1))
    tampered, changed = _tampered(table, column, row, data)
    if not changed:
        return
    path = write_table(tampered, root / f"t-{uuid.uuid4().hex}.arrow")
    with ShardReader(path) as reader:
        rows = list(reader.iter_checked())
    assert len(rows) == len(original)
    for i, (got, want) in enumerate(zip(rows, original)):
        if i == row and isinstance(got, BadRow):
            assert got.row == row and got.key in {t.key for t in want} and "\n" not in got.message
            continue
        assert not isinstance(got, BadRow), got
        got = [got] if not isinstance(got, list) else got
        assert [t.key for t in got] == [t.key for t in want]
        for a, b in zip(got, want):
            _sound(a)
            np.testing.assert_array_equal(a.patches, b.patches)
            if i != row:
                _equal(a, b)

"""Format version 2: label sets, text fields and token ids in both shard kinds; version 1 shards
still read; too-new versions and wrong column types refused in one line; the writer refuses
what the reader would."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from shardkit import P, example, read_table, tamper, write_table

from patchpack.sources.fields import DEFAULT_FIELD_MAX_BYTES
from patchpack.storage.format import (
    FORMAT_VERSION, ShardFormatError, TextIdsSpec, expected_columns, field_problem,
)
from patchpack.storage.reader import BadRow, ShardReader, iter_shard_examples, iter_shard_sequences
from patchpack.storage.writer import ShardWriter

FIELDS = ("txt", "json:caption")
TEXT = TextIdsSpec("bert-base-uncased", text_len=6, fields=("txt",), vocab_size=1000)


def _ids(*v):
    return {"txt": None if not v else np.array(v, np.int64)}


def _examples():
    return [
        example("a", 2, 3, 0, labels=(3,), fields={"txt": "a red square", "json:caption": None}, ids=_ids(5, 6, 7)),
        example("b", 3, 3, 1, labels=(1, 4, 2), fields={"txt": "ünïcode ✓ \t\n", "json:caption": "x"},
                ids=_ids(1, 2, 3, 4, 5, 6), keep=np.array([0, 4, 8])),
        example("c", 1, 2, 2, fields={"txt": None, "json:caption": ""}, ids=_ids()),
        example("d", 2, 2, 3, labels=(0,), fields={"txt": "", "json:caption": "y"}, ids={"txt": np.zeros(0, int)}),
    ]


def _same(a, b) -> None:
    assert (a.key, a.label, a.label_set, a.fields, tuple(a.grid)) == (b.key, b.label, b.label_set, b.fields,
                                                                      tuple(b.grid))
    np.testing.assert_array_equal(a.patches, b.patches)
    np.testing.assert_array_equal(a.positions, b.positions)
    want = a.text_ids
    got = b.text_ids
    assert set(got) == set(TEXT.fields)
    for name in TEXT.fields:
        if want.get(name) is None:
            assert got[name] is None
        else:
            assert got[name].dtype == np.int32 and got[name].tolist() == list(want[name])
            assert not got[name].flags.writeable  # a view onto the mapping


def _shard(path, kind: str = "examples", **options):
    """``_examples()`` written to ``path`` (packed: rows of the first three and of the last)."""
    exs = _examples()
    with ShardWriter(path, kind, patch_size=P, fields=FIELDS, text=TEXT, **options) as w:
        if kind == "examples":
            for e in exs:
                w.write(e)
        else:
            w.write_sequence(exs[:3], source_tokens=[6, 9, 2])
            w.write_sequence(exs[3:])
    return path


def test_examples_round_trip_label_sets_fields_and_token_ids(tmp_path):
    exs = _examples()
    path = _shard(tmp_path / "e.arrow", rows_per_batch=3)
    back = list(iter_shard_examples(path))
    for a, b in zip(exs, back, strict=True):
        _same(a, b)
    assert [t.label for t in back] == [3, -1, -1, 0] and back[1].label_set == (1, 4, 2)
    r = ShardReader(path)
    assert (r.version, r.fields, r.text) == (FORMAT_VERSION, FIELDS, TEXT)
    schema = read_table(path).schema
    assert schema.field("field:txt").type == pa.large_string()
    assert schema.field("label_set").type == pa.list_(pa.int64())
    assert json.loads(schema.metadata[b"patchpack.text"]) == TEXT.to_dict()


def test_packed_round_trip_label_sets_fields_and_token_ids(tmp_path):
    exs = _examples()
    seqs = list(iter_shard_sequences(_shard(tmp_path / "p.arrow", "packed")))
    assert [[t.key for t in s] for s in seqs] == [["a", "b", "c"], ["d"]]
    for a, b in zip(exs, [t for s in seqs for t in s], strict=True):
        _same(a, b)
    assert seqs[0][1].meta["source_tokens"] == 9


def test_a_shard_without_text_has_empty_fields(tmp_path):
    path = tmp_path / "e.arrow"
    with ShardWriter(path, patch_size=P) as w:
        w.write(example("a", 2, 2, 0, labels=(7,)))
    (tok,) = iter_shard_examples(path)
    assert tok.fields == {} and tok.text_ids == {} and tok.label_set == (7,)


def _as_version_1(src, dst) -> str:
    """``src`` (a version 2 shard without text) as the version 1 layout: one ``label`` per example."""
    table = read_table(src)
    kind = json.loads(table.schema.metadata[b"patchpack.format"])
    name, old = ("label_set", "label") if kind == "examples" else ("label_sets", "labels")
    sets = table.column(name).to_pylist()
    one = [s[0] if s else -1 for s in sets] if kind == "examples" else [[x[0] if x else -1 for x in s] for s in sets]
    cols = {f.name: f for f in expected_columns(kind, 1)}
    meta = {k: v for k, v in table.schema.metadata.items() if k not in (b"patchpack.fields", b"patchpack.text")}
    meta[b"patchpack.version"] = b"1"
    arrays = [pa.array(one, cols[old].type) if n == old else table.column(n) for n in cols]
    return write_table(pa.Table.from_arrays(arrays, schema=pa.schema(list(cols.values()), metadata=meta)), dst)


def test_version_1_shards_still_read(tmp_path):
    exs = [example("a", 2, 3, 0, labels=(3,)), example("b", 2, 2, 1)]
    for kind in ("examples", "packed"):
        path = tmp_path / f"{kind}.arrow"
        with ShardWriter(path, kind, patch_size=P) as w:
            for e in exs:
                w.write(e) if kind == "examples" else w.write_sequence([e])
        old = ShardReader(_as_version_1(path, tmp_path / f"{kind}-v1.arrow"))
        assert old.version == 1 and old.fields == () and old.text is None
        back = list(iter_shard_examples(old.path))
        assert [(t.key, t.label, t.label_set, t.fields) for t in back] == [("a", 3, (3,), {}), ("b", -1, (), {})]
        bad = tamper(old.path, tmp_path / f"{kind}-v1-bad.arrow", 1, **({"label": -2} if kind == "examples" else
                                                                          {"labels": [-2]}))
        row = list(ShardReader(bad).iter_checked())[1]
        assert isinstance(row, BadRow) and "label -2 is outside" in row.message


def _with_metadata(src, dst, **changes) -> str:
    table = read_table(src)
    meta = dict(table.schema.metadata)
    meta.update({f"patchpack.{k}".encode(): v for k, v in changes.items()})
    return write_table(table.replace_schema_metadata(meta), dst)


@pytest.mark.parametrize("changes,message", [
    (dict(version=b"3"), "shard format version 3 is newer than this patchpack reads (2): upgrade patchpack"),
    (dict(version=b"0"), "shard format version 0 is not one of [1, 2]"),
    (dict(version=b'"2"'), "shard format version '2' is not one of [1, 2]"),
    (dict(fields=b'["txt", "txt"]'), "patchpack metadata fields repeats a name"),
    (dict(fields=b'["txt", ""]'), "not a name of 1 to 256 characters"),
    (dict(fields=b'["txt", "json:caption", "more"]'), "no 'field:more' column"),  # a declared column missing
    (dict(text=b'{"tokenizer": "t", "text_len": 0, "fields": ["txt"]}'), "text_len 0 is not an integer"),
    (dict(text=b'{"tokenizer": "t", "text_len": 4, "fields": ["other"]}'), "not all among the shard's fields"),
    (dict(text=b'[1]'), "text is not an object"),
])
def test_bad_version_or_text_metadata_is_one_line(tmp_path, changes, message):
    path = _shard(tmp_path / "e.arrow")
    with pytest.raises(ShardFormatError) as err:
        ShardReader(_with_metadata(path, tmp_path / "bad.arrow", **changes))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_column_of_another_type_is_refused_at_open(tmp_path):
    path = tmp_path / "e.arrow"
    with ShardWriter(path, patch_size=P) as w:
        w.write(example("a", 2, 2, 0))
    table = read_table(path)
    i = table.schema.get_field_index("num_tokens")
    table = table.set_column(i, pa.field("num_tokens", pa.int64()), table.column(i).cast(pa.int64()))
    with pytest.raises(ShardFormatError, match="column 'num_tokens' is int64, not int32"):
        ShardReader(write_table(table, tmp_path / "bad.arrow"))


@pytest.mark.parametrize("cells,words", [
    (dict(label_set=[-1]), "label -1 is outside"),
    (dict(label_set=[2**31]), "label 2147483648 is outside"),
    (dict(label_set=[3, 3]), "repeats a label"),
    (dict(**{"field:txt": "a\x00b"}), "field 'txt' holds a NUL byte"),
    (dict(**{"field:txt": "x" * (DEFAULT_FIELD_MAX_BYTES + 1)}), f"over the cap of {DEFAULT_FIELD_MAX_BYTES}"),
    (dict(**{"text_ids:txt": [1, 2, 3, 4, 5, 6, 7]}), "7 token ids, more than text_len=6"),
    (dict(**{"text_ids:txt": [1, 1000]}), "a token id is outside [0, 1000)"),
    (dict(**{"text_ids:txt": [-5]}), "a token id is outside"),
    (dict(**{"text_ids:txt": None}), "text without its token ids"),
    (dict(**{"field:txt": None}), "token ids without their text"),
    (dict(patch_size=8), "differ from the shard's"),
    (dict(channels=1), "differ from the shard's"),
    (dict(source_size=[-1, 5]), "source size (-1, 5) is negative"),
    (dict(meta="[1]"), "meta is not a JSON object"),
])
def test_tampered_example_cells_are_a_bad_row(tmp_path, cells, words):
    path = _shard(tmp_path / "e.arrow")
    rows = list(ShardReader(tamper(path, tmp_path / "bad.arrow", 0, **cells)).iter_checked())
    assert [isinstance(r, BadRow) for r in rows] == [True, False, False, False]
    assert rows[0].key == "a" and words in rows[0].message, rows[0]


@pytest.mark.parametrize("cells,words", [
    (dict(label_sets=[[3], [1, 4, 4], []]), "example 2 of 3: label set (1, 4, 4) repeats a label"),
    (dict(source_tokens=[6, 2, 2]), "example 2 of 3: 2 source tokens for 3 tokens"),
    (dict(source_tokens=[7, 9, 2]), "example 1 of 3: 7 source tokens for 6 tokens in a grid of 6 cells"),
    (dict(**{"field:json:caption": [None, "a\x00", ""]}), "example 2 of 3: field 'json:caption' holds a NUL"),
    (dict(**{"text_ids:txt": [[1], [1, 2, 3, 4, 5, 6, 7], None]}), "example 2 of 3: field 'txt': 7 token ids"),
    (dict(keys=["a", "b"]), "slot columns disagree on the number of examples"),
    (dict(keys=[], lengths=[], grids=[], label_sets=[], source_tokens=[], source_sizes=[], source_shards=[],
          metas=[], tokens=b"", positions=b"", **{"field:txt": [], "field:json:caption": [], "text_ids:txt": []}),
     "no examples"),
])
def test_tampered_packed_cells_are_a_bad_row(tmp_path, cells, words):
    path = _shard(tmp_path / "p.arrow", "packed")
    rows = list(ShardReader(tamper(path, tmp_path / "bad.arrow", 0, **cells)).iter_checked())
    assert isinstance(rows[0], BadRow) and words in rows[0].message, rows[0]
    assert [t.key for t in rows[1]] == ["d"]


@pytest.mark.parametrize("make,words", [
    (lambda: example("a", 2, 2, 0, fields={"txt": "x"}), "text fields ['txt'] are not the shard's"),
    (lambda: example("a", 2, 2, 0, fields={"txt": "a\x00", "json:caption": None}, ids=_ids(1)), "NUL"),
    (lambda: example("a", 2, 2, 0, fields={"txt": "x", "json:caption": 3}, ids=_ids(1)), "is not a string"),
    (lambda: example("a", 2, 2, 0, fields={"txt": "x", "json:caption": None}), "text without its token ids"),
    (lambda: example("a", 2, 2, 0, fields={"txt": None, "json:caption": None}, ids=_ids(1)), "ids without"),
    (lambda: example("a", 2, 2, 0, fields={"txt": "x", "json:caption": None}, ids=_ids(*range(7))), "text_len=6"),
    (lambda: example("a", 2, 2, 0, fields={"txt": "x", "json:caption": None}, ids={"txt": np.ones((1, 2), int)}),
     "1-D integer"),
    (lambda: example("a", 2, 2, 0, labels=(2, 2), fields={"txt": None, "json:caption": None}), "repeats a label"),
    (lambda: example("a", 2, 2, 0, keep=np.array([], int), fields={"txt": None, "json:caption": None}),
     "0 tokens"),
    (lambda: example("a", 2, 2, 0, keep=np.array([0, 0]), fields={"txt": None, "json:caption": None}),
     "repeat a cell"),
])
def test_the_writer_refuses_what_the_reader_would(tmp_path, make, words):
    with pytest.raises(ValueError, match="example 'a'") as err:
        with ShardWriter(tmp_path / "e.arrow", patch_size=P, fields=FIELDS, text=TEXT) as w:
            w.write(make())
    assert words in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing left behind
    with pytest.raises(ValueError, match="at least one example"):
        ShardWriter(tmp_path / "p.arrow", "packed", patch_size=P).write_sequence([])
    with pytest.raises(ValueError, match="the format's own"):
        ShardWriter(tmp_path / "q.arrow", patch_size=P, metadata={"fields": ["x"]})


def test_field_problem_is_the_online_field_rule():
    """Every text the online field reader refuses, the format refuses too (and the other way round)."""
    from patchpack.errors import SampleError
    from patchpack.sources import Sample
    from patchpack.sources.fields import sample_field

    cap = DEFAULT_FIELD_MAX_BYTES
    for raw in [b"a red square", "\u00e9".encode() * (cap // 2), "\u00e9".encode() * (cap // 2) + b"x", b"a\x00b",
                b"\xff\xfe", b"\xed\xa0\x80", b"", "\u2713 \t\n".encode()]:
        try:
            sample_field(Sample("k", "s", {"txt": raw}), "txt")
            online = None
        except SampleError as exc:
            online = exc.record("k", "s").kind
        assert (online is None) == (field_problem(raw) is None), raw[:20]
        if online is None:
            assert field_problem(raw.decode()) is None
    assert field_problem("\ud800") == "holds a lone surrogate; not valid Unicode text"
    assert field_problem("x" * 10, max_bytes=9) == "is 10 bytes, over the cap of 9"


def test_the_shard_keeps_its_field_cap(tmp_path):
    exs = _examples()
    path = _shard(tmp_path / "e.arrow", field_max_bytes=16)
    assert ShardReader(path).field_max_bytes == 16
    with pytest.raises(ValueError, match="over the cap of 11"):
        with ShardWriter(tmp_path / "f.arrow", patch_size=P, fields=FIELDS, text=TEXT, field_max_bytes=11) as w:
            w.write(exs[1])  # "\u00fcn\u00efcode \u2713 \t\n" is 16 bytes
    lowered = _with_metadata(path, tmp_path / "low.arrow", field_max_bytes=b"11")
    rows = list(ShardReader(lowered).iter_checked())
    assert [isinstance(r, BadRow) for r in rows] == [True, True, False, False]
    assert "field 'txt' is 12 bytes, over the cap of 11" in rows[0].message
    with pytest.raises(ShardFormatError, match="field_max_bytes 99999999999 is not an integer"):
        ShardReader(_with_metadata(path, tmp_path / "huge.arrow", field_max_bytes=b"99999999999"))

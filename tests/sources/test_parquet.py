"""Parquet (the Hugging Face datasets layout) and datasets save_to_disk Arrow files as sources.

The same images, captions and labels written as HF-style parquet and as webdataset tar shards
read example by example to the same samples; rows are read a row group at a time, resumed and
shared by row number; every unusable row, column or file is a record with its key.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import image_bytes, make_samples, write_shards
from patchpack.errors import ErrorRecord
from patchpack.sources import Sample, ShardTask, expand_sources, fetch_samples, read_shard, read_task, reader_for
from patchpack.sources.columns import sniff_media, table_layout
from patchpack.sources.parquet import read_parquet

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_FEATURES = {"image": {"_type": "Image"}, "txt": {"dtype": "string", "_type": "Value"},
             "cls": {"names": [f"c{i}" for i in range(5)], "_type": "ClassLabel"}}


def _split(records):
    return [r for r in records if isinstance(r, Sample)], [r for r in records if isinstance(r, ErrorRecord)]


def _dataset(n: int = 10) -> list[dict]:
    """webdataset samples with an image, a caption (``txt``), a label (``cls``) and ``json`` metadata."""
    samples = make_samples(n)
    for i, s in enumerate(samples):
        s["txt"] = f"a photo number {i} ünïcode".encode()
        s["json"] = json.dumps({"width": 10 + i, "source": "synthetic"}).encode()
    return samples


def _image_of(sample: dict) -> bytes:
    return next(v for k, v in sample.items() if k in ("png", "jpg", "webp"))


def _hf_table(samples: list[dict], key: bool = True) -> pa.Table:
    """The samples as the datasets library writes them: an ``Image`` struct, a string, a
    ``ClassLabel`` integer, a struct, and the ``huggingface`` schema metadata."""
    columns = {"image": pa.array([{"bytes": _image_of(s), "path": f"{s['__key__']}.img"} for s in samples], _IMAGE),
               "txt": pa.array([s["txt"].decode() for s in samples]),
               "cls": pa.array([int(s["cls"]) for s in samples], pa.int64()),
               "json": pa.array([json.loads(s["json"]) for s in samples])}
    if key:
        columns = {"__key__": pa.array([s["__key__"] for s in samples]), **columns}
    meta = {b"huggingface": json.dumps({"info": {"features": _FEATURES}}).encode()}
    return pa.table(columns).replace_schema_metadata(meta)


def _write(table: pa.Table, path, row_group_size: int = 3, **kw) -> str:
    pq.write_table(table, path, row_group_size=row_group_size, **kw)
    return str(path)


def test_hf_parquet_reads_example_by_example_equal_to_the_same_tar_shards(tmp_path):
    samples = _dataset(10)
    tars = write_shards(tmp_path / "tar", samples, per_shard=4)
    url = _write(_hf_table(samples), tmp_path / "train-00000-of-00001.parquet")
    from_tar = [r for t in tars for r in read_shard(t)]
    from_parquet = list(read_shard(url))
    assert all(isinstance(r, Sample) for r in from_tar + from_parquet)
    assert [(s.key, s.members) for s in from_parquet] == [(s.key, s.members) for s in from_tar]
    assert [s.index for s in from_parquet] == list(range(10)) and {s.shard for s in from_parquet} == {url}
    assert set(from_parquet[0].members) == {"png", "txt", "cls", "json"}


def test_without_a_key_column_the_key_is_file_stem_and_row(tmp_path):
    url = _write(_hf_table(_dataset(5), key=False), tmp_path / "train-00003-of-00009.parquet")
    assert [s.key for s in read_shard(url)] == [f"train-00003-of-00009/{i}" for i in range(5)]


def test_resume_and_sharing_by_row_number(tmp_path):
    url = _write(_hf_table(_dataset(10)), tmp_path / "d.parquet")
    assert [s.index for s in read_shard(url, start=4)] == [4, 5, 6, 7, 8, 9]
    assert [s.index for s in read_task(ShardTask(url, 1, 3))] == [1, 4, 7]
    assert [s.index for s in read_task(ShardTask(url, 1, 3), start=5)] == [7]
    got = fetch_samples(url, [8, 2])
    assert sorted(got) == [2, 8] and got[8].key == "s00008"


def test_start_and_ownership_skip_whole_row_groups_unread(tmp_path, monkeypatch):
    url = _write(_hf_table(_dataset(10)), tmp_path / "d.parquet", row_group_size=3)  # groups 0-2, 3-5, 6-8, 9
    read_groups = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **kw: read_groups.append(i) or original(self, i, *a, **kw))
    assert [s.index for s in read_shard(url, start=7)] == [7, 8, 9]
    assert read_groups == [2, 3]
    read_groups.clear()
    assert [s.index for s in read_task(ShardTask(url, 4, 100))] == [4]
    assert read_groups == [1]


@pytest.fixture(scope="module")
def grouped_files(tmp_path_factory):
    """One 11-row file per row group size."""
    folder = tmp_path_factory.mktemp("groups")
    table = _hf_table(_dataset(11))
    return {g: _write(table, folder / f"g{g}.parquet", row_group_size=g) for g in (1, 2, 3, 5, 11)}


@settings(max_examples=40)
@given(group=st.sampled_from([1, 2, 3, 5, 11]), stride=st.integers(1, 4), start=st.integers(0, 12))
def test_consumers_sharing_a_file_read_every_row_once(grouped_files, group, stride, start):
    seen = []
    for offset in range(stride):
        got = list(read_task(ShardTask(grouped_files[group], offset, stride), start=start))
        assert all(isinstance(s, Sample) and s.index % stride == offset for s in got)
        seen += [s.index for s in got]
    assert sorted(seen) == list(range(start, 11))


def test_columns_become_members_by_name_and_type(tmp_path):
    png = image_bytes(8, 8)
    table = pa.table({
        "ID": pa.array([7, 8]),
        "Caption": pa.array(["un chat", None]),
        "cls": pa.array([[3, 7], [1]], pa.list_(pa.int32())),
        "meta": pa.array([{"w": 1, "tags": ["a"]}, {"w": 2, "tags": []}]),
        "score": pa.array([0.5, float("nan")]),
        "ok": pa.array([True, False]),
        "blob": pa.array([b"\x00\x01", b""], pa.binary()),
        "mask": pa.array([{"bytes": png, "path": None}, None], _IMAGE),
        "image": pa.array([{"bytes": png, "path": None}] * 2, _IMAGE),
        "__index_level_0__": pa.array([0, 1]),
    })
    url = _write(table, tmp_path / "t.parquet")
    first, second = list(read_shard(url))
    assert first.key == "7" and second.key == "8"  # an integer id column names the sample
    assert first.members == {"id": b"7", "caption": "un chat".encode(), "cls": b"3,7", "meta": b'{"w": 1, "tags": ["a"]}',
                             "score": b"0.5", "ok": b"true", "blob": b"\x00\x01", "mask": png, "png": png}
    assert "caption" not in second.members and "mask" not in second.members  # nulls are no members
    assert second.members["cls"] == b"1" and second.members["score"] == b"NaN" and second.members["blob"] == b""


def test_the_image_column_is_found_or_named(tmp_path):
    png, jpg = image_bytes(8, 8), image_bytes(8, 8, "JPEG")
    plain = pa.table({"json": pa.array([b"{}"]), "jpg": pa.array([jpg]), "txt": pa.array(["x"])})
    assert table_layout(plain.schema).image == "jpg"  # a binary column named like media before the first one
    struct = pa.table({"thumb": pa.array([png]), "picture": pa.array([{"bytes": jpg, "path": None}], _IMAGE)})
    assert table_layout(struct.schema).image == "picture"  # the Image struct first
    assert table_layout(struct.schema, "thumb").image == "thumb"
    url = _write(struct, tmp_path / "s.parquet")
    (s,) = read_shard(url)
    assert s.members == {"thumb": png, "jpg": jpg}
    (s,) = read_parquet(url, image_column="thumb")
    assert s.members == {"png": png, "picture": jpg}
    for name, message in (("nope", "no column 'nope'"), ("picture2", "no column")):
        (rec,) = read_parquet(url, image_column=name)
        assert rec.kind == "unreadable" and message in rec.message
    url = _write(pa.table({"txt": pa.array(["only text"])}), tmp_path / "text.parquet")
    (rec,) = read_shard(url)
    assert rec.kind == "unreadable" and rec.key == url and "no image column" in rec.message


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"),
                                      ("BMP", "bmp"), ("TIFF", "tiff")])
def test_the_media_extension_is_sniffed_from_the_bytes(fmt, ext):
    assert sniff_media(image_bytes(9, 7, fmt)) == ext


def test_video_magic_and_unknown_bytes():
    assert sniff_media(b"\x00\x00\x00\x20ftypisom\x00\x00") == "mp4"
    assert sniff_media(b"\x00\x00\x00\x14ftypqt  ") == "mov"
    assert sniff_media(b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\x82\x84webm") == "webm"
    assert sniff_media(b"P6\n4 4\n255\n") is None and sniff_media(b"") is None


def test_unusable_image_cells_are_records_with_their_keys(tmp_path):
    png = image_bytes(8, 8)
    cells = [{"bytes": png, "path": None}, None, {"bytes": None, "path": "/data/x.jpg"}, {"bytes": b"", "path": None},
             {"bytes": b"P6\n1 1\n255\n\x00\x00\x00", "path": "x.ppm"}, {"bytes": b"\x00garbage", "path": None}]
    table = pa.table({"__key__": [f"k{i}" for i in range(6)], "image": pa.array(cells, _IMAGE)})
    got, errors = _split(list(read_shard(_write(table, tmp_path / "c.parquet"))))
    assert [(s.key, list(s.members)) for s in got] == [("k0", ["png"]), ("k4", ["ppm"])]  # ppm: from the path
    assert [(e.key, e.kind) for e in errors] == [("k1", "no-media"), ("k2", "no-media"), ("k3", "empty"),
                                                 ("k5", "not-media")]
    assert "path '/data/x.jpg'" in errors[1].message


def test_members_over_the_cap_are_records(tmp_path):
    png = image_bytes(8, 8)
    table = pa.table({"image": pa.array([{"bytes": png, "path": None}] * 2, _IMAGE),
                      "txt": ["short", "x" * 5000]})
    url = _write(table, tmp_path / "big.parquet")
    got, errors = _split(list(read_shard(url, max_member_bytes=4000)))
    assert [s.key for s in got] == ["big/0"]
    assert [(e.key, e.kind) for e in errors] == [("big/1", "oversize-member")] and "'txt'" in errors[0].message


def test_a_row_group_over_the_limit_is_refused_unread_with_one_record(tmp_path, monkeypatch):
    samples = _dataset(6)
    samples[4]["txt"] = b"y" * 60_000  # row group 1 (rows 3-5) is large
    url = _write(_hf_table(samples), tmp_path / "rg.parquet")
    read_groups = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **kw: read_groups.append(i) or original(self, i, *a, **kw))
    got, errors = _split(list(read_shard(url, max_member_bytes=10_000)))  # row groups up to 40 kB
    assert [s.index for s in got] == [0, 1, 2] and read_groups == [0]
    assert [(e.key, e.kind) for e in errors] == [(url, "oversize-member")]
    assert "row group 1 (rows 3-5)" in errors[0].message


def test_a_column_that_cannot_be_read_is_a_record_per_row_with_its_key(tmp_path):
    url = _write(_hf_table(_dataset(9)), tmp_path / "bad.parquet", compression="none")
    meta = pq.ParquetFile(url).metadata
    txt = meta.schema.to_arrow_schema().get_field_index("txt")
    chunk = meta.row_group(1).column([meta.row_group(1).column(i).path_in_schema
                                      for i in range(meta.num_columns)].index("txt"))
    assert txt >= 0
    with open(url, "r+b") as fh:  # clobber the page header of row group 1's txt column
        fh.seek(chunk.data_page_offset)
        fh.write(b"\xff" * 16)
    got, errors = _split(list(read_shard(url)))
    assert [s.index for s in got] == [0, 1, 2, 6, 7, 8]
    assert [(e.key, e.kind) for e in errors] == [(f"s0000{i}", "corrupt") for i in (3, 4, 5)]
    assert "column 'txt' of row group 1 unreadable" in errors[0].message


def test_files_that_cannot_be_opened_are_one_shard_record(tmp_path):
    good = _write(_hf_table(_dataset(4)), tmp_path / "good.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(open(good, "rb").read()[:-100])  # the footer is gone
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    for url in (str(cut), str(not_parquet), str(tmp_path / "missing.parquet")):
        records = list(read_shard(url))
        assert [(r.key, r.kind) for r in records] == [(url, "unreadable")], url
        assert records[0].message.startswith("cannot open parquet file")
    assert list(read_task(ShardTask(str(cut), 1, 2))) == []  # one consumer of a shared file reports it


def _save_to_disk(folder, table: pa.Table, batch_rows: int = 4) -> str:
    """A ``datasets`` ``save_to_disk`` folder as the library writes it: an Arrow stream file,
    dataset_info.json and state.json."""
    folder.mkdir(parents=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    (folder / "dataset_info.json").write_text(json.dumps({"features": _FEATURES}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}], "_split": "train"}))
    return str(folder / name)


def test_datasets_save_to_disk_folders_read_like_parquet(tmp_path):
    table = _hf_table(_dataset(10))
    arrow = _save_to_disk(tmp_path / "ds" / "train", table)
    parquet = _write(table, tmp_path / "same.parquet")
    assert expand_sources(str(tmp_path / "ds" / "train")) == [arrow]
    assert reader_for(arrow) is not reader_for(str(tmp_path / "patchpack-shard.arrow"))
    from_arrow, from_parquet = list(read_shard(arrow)), list(read_shard(parquet))
    assert [(s.key, s.index, s.members) for s in from_arrow] == [(s.key, s.index, s.members) for s in from_parquet]
    assert [s.index for s in read_task(ShardTask(arrow, 2, 3), start=3)] == [5, 8]
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    with pytest.raises(ValueError, match="DatasetDict; name one split's folder"):
        expand_sources(str(tmp_path / "ds"))


def test_the_datasets_library_output_when_installed(tmp_path):
    datasets = pytest.importorskip("datasets")
    samples = _dataset(6)
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": _image_of(s), "path": None} for s in samples], "text": [s["txt"].decode() for s in samples],
         "label": [int(s["cls"]) for s in samples]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(num_classes=5)}))
    ds.to_parquet(str(tmp_path / "train.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    want = [{"text": s["txt"], "label": s["cls"], next(k for k in s if k in ("png", "jpg", "webp")): _image_of(s)}
            for s in samples]
    for url in [str(tmp_path / "train.parquet"), *expand_sources(str(tmp_path / "saved"))]:
        got = list(read_shard(url))
        assert [s.members for s in got] == want, url
        assert [s.index for s in got] == list(range(6))

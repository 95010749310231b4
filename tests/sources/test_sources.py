
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import image_bytes, make_samples, truncate_file, write_folder, write_raw_tar, write_shards
from patchpack.errors import ErrorRecord
from patchpack.sources import (
    Sample,
    ShardTask,
    expand_sources,
    fetch_samples,
    plan_shards,
    read_shard,
    read_task,
    resampled_task,
)


def split(records):
    samples = [r for r in records if isinstance(r, Sample)]
    errors = [r for r in records if isinstance(r, ErrorRecord)]
    return samples, errors


def test_expand_sources_braces_lists_and_folders(tmp_path):
    assert expand_sources("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_sources(["x-{0..1}.tar", "y.tar"]) == ["x-0.tar", "x-1.tar", "y.tar"]
    assert expand_sources("a.tar::b.tar") == ["a.tar", "b.tar"]
    assert expand_sources(str(tmp_path)) == [str(tmp_path)]
    with pytest.raises(ValueError):
        expand_sources([])


def test_read_shard_yields_members_in_order(tmp_path):
    samples = make_samples(9)
    (url,) = write_shards(tmp_path, samples, per_shard=100)
    got, errors = split(list(read_shard(url)))
    assert not errors
    assert [s.key for s in got] == [s["__key__"] for s in samples]
    assert [s.index for s in got] == list(range(9))
    for s, ref in zip(got, samples):
        assert s.shard == url
        assert s.members == {k: v for k, v in ref.items() if not k.startswith("__")}
    # resume inside a shard and ownership by index
    assert [s.index for s in read_shard(url, start=4)] == [4, 5, 6, 7, 8]
    assert [s.index for s in read_task(ShardTask(url, 1, 3))] == [1, 4, 7]
    assert [s.index for s in read_task(ShardTask(url, 1, 3), start=5)] == [7]


def test_unsafe_members_are_reported_and_never_passed_on(tmp_path):
    url = write_raw_tar(tmp_path / "u.tar", [
        ("a.jpg", image_bytes(8, 8, "JPEG")),
        ("b.jpg", image_bytes(8, 8, "JPEG")), ("b.pth", b"\x80\x04\x95 pickle"),
        ("c.pickle", b"\x80\x04cos\nsystem\n"),
        ("d.png", image_bytes(8, 8)), ("d.PYD", b"MZ"),
        ("e.png", image_bytes(8, 8)),
    ])
    got, errors = split(list(read_shard(url)))
    assert [s.key for s in got] == ["a", "e"]
    assert [(e.key, e.kind, e.stage) for e in errors] == [("b", "unsafe", "source"), ("c", "unsafe", "source"),
                                                          ("d", "unsafe", "source")]
    assert all(e.shard == url for e in errors)


@pytest.mark.parametrize("cut", [0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.85])
def test_truncated_tar_keeps_what_was_read_and_reports_the_rest(tmp_path, cut):
    samples = make_samples(6, sizes=((64, 64),), formats=("PNG",))
    (url,) = write_shards(tmp_path, samples, per_shard=100)
    truncate_file(url, cut)
    recs = list(read_shard(url))
    got, errors = split(recs)
    assert len(got) < 6
    assert [s.key for s in got] == [s["__key__"] for s in samples[: len(got)]]
    assert [e.key for e in errors if e.kind == "shard"] == [url]
    assert recs[-1].kind == "shard"  # nothing after the failure
    truncated = [e.key for e in errors if e.kind == "truncated"]
    assert truncated in ([], [samples[len(got)]["__key__"]])
    # every sample is read or named, except those wholly past the cut (the shard record covers them)
    seen = {s.key for s in got} | set(truncated)
    assert seen == {s["__key__"] for s in samples[: len(seen)]}


def test_cut_in_the_trailing_padding_loses_nothing(tmp_path):
    samples = make_samples(6, sizes=((64, 64),), formats=("PNG",))
    (url,) = write_shards(tmp_path, samples, per_shard=100)
    truncate_file(url, 0.95)  # past the end-of-archive blocks
    got, errors = split(list(read_shard(url)))
    assert len(got) == 6 and not errors


def test_missing_empty_and_garbage_shards_are_records(tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar file" * 100)
    for url in [str(tmp_path / "missing.tar"), str(empty), str(garbage)]:
        recs = list(read_shard(url))
        assert len(recs) == 1 and isinstance(recs[0], ErrorRecord), url
        assert recs[0].kind == "unreadable" and recs[0].key == url
    # a shared shard is reported by one consumer only
    assert list(read_task(ShardTask(str(tmp_path / "missing.tar"), 1, 2))) == []


def test_failing_pipe_command_is_one_shard_record(tmp_path):
    """A ``pipe:`` url whose command fails reports its exit status (raised on close) as a record."""
    recs = list(read_shard("pipe:false"))
    assert len(recs) == 1 and isinstance(recs[0], ErrorRecord)
    assert (recs[0].key, recs[0].kind) == ("pipe:false", "unreadable")
    assert recs[0].message.startswith("cannot open shard:") and "exit 1" in recs[0].message
    # a pipe that sends a whole tar, then fails: the samples, then the shard record
    url = write_shards(tmp_path, make_samples(3), per_shard=10)[0]
    got, errors = split(list(read_shard(f"pipe:cat {url}; exit 3")))
    assert len(got) == 3 and len(errors) == 1 and "exit 3" in errors[0].message
    assert errors[0].message.startswith("tar unreadable: PipeError")
    # a pipe that goes on writing zeros after the tar's end: the samples, then one record, no hang
    got, errors = split(list(read_shard(f"pipe:cat {url} /dev/zero")))
    assert len(got) == 3 and [e.kind for e in errors] == ["shard"]
    assert "zero blocks in a row" in errors[0].message and "the rest of the stream is not read" in errors[0].message
    # a consumer that stops early does not see the pipe's status
    it = read_shard(f"pipe:cat {url}; exit 3")
    assert isinstance(next(it), Sample)
    it.close()


def test_folder_source_labels_from_subfolders(tmp_path):
    keys = [k + ".png" for k in write_folder(tmp_path, {"cat": 2, "dog": 3})]  # key: the media file's path
    (tmp_path / "dog" / "img000.pkl").write_bytes(b"\x80")
    got, errors = split(list(read_shard(str(tmp_path))))
    assert [(e.key, e.kind) for e in errors] == [("dog/img000.png", "unsafe")]
    assert [s.key for s in got] == [k for k in keys if k != "dog/img000.png"]
    labels = {s.key: int(s.members["cls"]) for s in got}
    assert labels["cat/img001.png"] == 0 and labels["dog/img002.png"] == 1
    assert all("png" in s.members for s in got)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes(image_bytes(8, 8))
    (s,) = list(read_shard(str(flat)))
    assert s.key == "x.png" and "cls" not in s.members


def test_fetch_samples_rereads_by_index(tmp_path):
    samples = make_samples(12)
    urls = write_shards(tmp_path, samples, per_shard=5)
    got = fetch_samples(urls[1], [0, 3])
    assert {i: s.key for i, s in got.items()} == {0: "s00005", 3: "s00008"}
    assert got[3].members["cls"] == samples[8]["cls"]
    with pytest.raises(KeyError):
        fetch_samples(urls[2], [7])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 13), c=st.integers(1, 9), per=st.integers(1, 7), epoch=st.integers(0, 3))
def test_plan_covers_every_sample_exactly_once(n, c, per, epoch):
    urls = [f"shard-{i}.tar" for i in range(n)]
    owned: list[tuple[str, int]] = []
    loads = []
    for consumer in range(c):
        tasks = plan_shards(urls, consumer, c, seed=7, epoch=epoch)
        mine = [(t.url, i) for t in tasks for i in range(per) if t.owns(i)]
        owned += mine
        loads.append(len(mine))
    assert sorted(owned) == sorted((u, i) for u in urls for i in range(per))
    assert max(loads) - min(loads) <= per  # balanced to within one shard


def test_plan_shuffles_per_epoch_deterministically():
    urls = [f"s{i}" for i in range(20)]
    a = plan_shards(urls, 0, 1, seed=1, epoch=0)
    assert a == plan_shards(urls, 0, 1, seed=1, epoch=0)
    assert a != plan_shards(urls, 0, 1, seed=1, epoch=1)
    assert [t.url for t in plan_shards(urls, 0, 1, seed=1, epoch=0, shuffle=False)] == urls


def test_resampled_tasks_are_deterministic_and_vary():
    urls = [f"s{i}" for i in range(10)]
    draws = [resampled_task(urls, 1, d, seed=3).url for d in range(50)]
    assert draws == [resampled_task(urls, 1, d, seed=3).url for d in range(50)]
    assert len(set(draws)) > 5
    assert draws != [resampled_task(urls, 2, d, seed=3).url for d in range(50)]

"""The hostile corpus end to end: one test per class of bad input.

Each test asserts that every input sample is either packed or reported (never both, never
neither), the record's kind and key, and that the loader, ``preprocess`` and a resumed
loader carry on past it.
"""

from __future__ import annotations

import json
import signal
import tarfile
from contextlib import contextmanager
from pathlib import Path

import hostile as H
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchpack.fit import FitConfig
from patchpack.loader import LoaderConfig, make_loader
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.storage.manifest import list_shards
from patchpack.storage.reader import iter_shard_examples

SMALL = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=2, buffer_size=4)


@contextmanager
def deadline(seconds: int = 120):
    """Fail instead of hanging (a FIFO read would block forever)."""
    def boom(*_):
        raise TimeoutError(f"no result within {seconds}s: something blocks")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def split(records: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``({key: kind} of sample records, [shard-level records])``; shard-level ones are keyed by the shard."""
    samples = {r["key"]: r["kind"] for r in records if r["key"] != r["shard"]}
    return samples, [r for r in records if r["key"] == r["shard"]]


def accounted(inputs: set[str], packed: list[str], reported: dict[str, str]) -> None:
    assert len(packed) == len(set(packed)), "an example was packed twice"
    assert not set(packed) & set(reported), "an example was both packed and reported"
    assert set(packed) | set(reported) == inputs


def loader_run(urls, tmp: Path, **kw) -> tuple[list[str], dict[str, str], list[dict]]:
    path = tmp / f"errors-{len(list(tmp.glob('errors-*')))}.jsonl"
    with deadline():
        batches = list(make_loader(urls, errors_path=str(path), **{**SMALL, **kw}))
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [k for b in batches for row in b.sample_keys for k in row], *split(records)


def preprocess_run(urls, out: Path, **kw) -> tuple[list[str], dict[str, str], dict]:
    with deadline():
        m = preprocess(urls, out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48), **kw), progress=False)
    assert m["complete"]
    keys = [t.key for p in list_shards(out) for t in iter_shard_examples(p)]
    records = [json.loads(x) for f in sorted((out / "errors").glob("*.jsonl")) for x in f.read_text().splitlines()]
    samples, _ = split(records)
    assert sum(e["samples"] for e in m["shards"]) == len(keys) + len(samples)
    return keys, samples, m


def resume_run(urls, cut: int = 2, **kw) -> None:
    """Stop after ``cut`` batches, resume from the saved state: the same batches as one run."""
    cfg = LoaderConfig().with_overrides(**{**SMALL, "batch_size": 1, "max_per_seq": 1, **kw})  # a row per example
    with deadline():
        full = make_loader(urls, cfg)
        want = [row for b in full for row in b.sample_keys]
        cut = max(0, min(cut, len(want) - 1))
        loader = make_loader(urls, cfg)
        it = iter(loader)
        head = [row for _ in range(cut) for row in next(it).sample_keys]
        state = json.loads(json.dumps(loader.state_dict()))
        del it
        resumed = make_loader(urls, cfg)
        resumed.load_state_dict(state)
        tail = [row for b in resumed for row in b.sample_keys]
    assert head + tail == want
    assert resumed.stats.errors == full.stats.errors and resumed.stats.error_kinds == full.stats.error_kinds


def check_class(urls, inputs: set[str], expect: dict[str, str], tmp: Path, preprocess_too: bool = True, **kw):
    """Loader, preprocess and resume on ``urls``: all accounted for, ``expect`` (key -> kind) reported."""
    packed, reported, shard = loader_run(urls, tmp, **kw)
    accounted(inputs, packed, reported)
    assert {k: reported.get(k) for k in expect} == expect
    if preprocess_too:
        keys, precs, _ = preprocess_run(urls, tmp / "pp", **{k: v for k, v in kw.items()
                                                             if k in ("label_field", "image", "video")})
        accounted(inputs, keys, precs)
        assert {k: precs.get(k) for k in expect} == expect
    resume_run(urls, **kw)
    return packed, reported, shard


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


GOOD5 = [m for i in range(5) for m in H.ok_sample(i)]
KEYS5 = {f"s{i:04d}" for i in range(5)}


def test_flipped_header_byte_mid_shard_is_reported_and_the_rest_read(tmp_path):
    tar = H.flip_header_byte(H.tar_bytes(GOOD5), "s0002.png")
    urls = [write(tmp_path, "flip.tar", tar), write(tmp_path, "good.tar", H.tar_bytes(H.ok_sample(9)))]
    _, reported, _ = check_class(urls, KEYS5 | {"s0009"}, {"s0002": "bad-header"}, tmp_path)


def test_tar_cut_inside_a_member_blames_that_members_sample(tmp_path):
    tar = H.cut_inside_member(H.tar_bytes(GOOD5), "s0002.png")
    urls = [write(tmp_path, "cut.tar", tar)]
    _, _, shard = check_class(urls, {"s0000", "s0001", "s0002"}, {"s0002": "truncated"}, tmp_path)
    assert [r["kind"] for r in shard] == ["shard"]


def test_links_fifos_devices_and_dirs_in_a_tar_are_typed_records(tmp_path):
    urls = [write(tmp_path, "special.tar", H.special_members_tar(n_good=3))]
    expect = {"link-sym": "link", "link-hard": "link", "fifo": "special-file", "chr": "special-file",
              "blk": "special-file", "adir/": "special-file"}
    check_class(urls, {"s0000", "s0001", "s0002"} | set(expect), expect, tmp_path)


def test_gnu_sparse_member_claiming_2gib_is_reported_unread(tmp_path):
    urls = [write(tmp_path, "sparse.tar", H.sparse_tar(realsize=2 * 2**30, stored=6 * 1024))]
    check_class(urls, {"s0000", "s0001", "s0002", "sparse"}, {"sparse": "sparse"}, tmp_path)


def test_member_over_the_default_cap_is_reported_before_reading(tmp_path):
    url = H.holey_member_tar(tmp_path / "big.tar", 300 * 2**20)  # over the 256 MiB default
    check_class([url], {"a", "b", "big"}, {"big": "oversize-member"}, tmp_path)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_non_utf8_member_names_load_and_preprocess(tmp_path, fmt):
    tar, key = H.non_utf8_tar(fmt)
    packed, _, _ = check_class([write(tmp_path, "latin1.tar", tar)], {"s0000", "s0001", key}, {}, tmp_path)
    assert key in packed


@pytest.mark.parametrize("member", ["cls", "json"])
def test_poison_labels_are_bad_label_records_not_crashes(tmp_path, member):
    members, poison = H.poison_label_samples(member)
    url = write(tmp_path, f"labels-{member}.tar", H.tar_bytes(members))
    inputs = {n.split(".")[0] for n, _ in members}
    label_field = "cls" if member == "cls" else "json:label"
    check_class([url], inputs, {k: "bad-label" for k in poison}, tmp_path, label_field=label_field)


def _stored(tmp_path: Path) -> tuple[Path, list[str]]:
    src = write(tmp_path, "src.tar", H.tar_bytes([m for i in range(6) for m in H.ok_sample(i)]))
    out = tmp_path / "stored"
    keys, _, _ = preprocess_run([src], out)
    return list_shards(out)[0], keys


def test_tampered_arrow_rows_are_bad_row_records(tmp_path):
    shard, keys = _stored(tmp_path)
    d = tmp_path / "tampered"
    d.mkdir()
    H.tamper_arrow_rows(shard, d / "a.arrow", 1, num_tokens=999)
    H.tamper_arrow_rows(d / "a.arrow", d / "b.arrow", 3, grid=[1, 100000, 100000])
    (d / "a.arrow").unlink()
    url = str(d / "b.arrow")
    expect = {keys[1]: "bad-row", keys[3]: "bad-row"}
    check_class([url], set(keys), expect, tmp_path, preprocess_too=False)


def test_flipped_bytes_in_a_stored_shard_fail_its_checksum(tmp_path):
    shard, keys = _stored(tmp_path)
    H.flip_file_byte(shard, 2000)
    folder = str(shard.parent)
    packed, reported, shard_recs = loader_run([folder], tmp_path)
    assert packed == [] and reported == {}
    assert [r["kind"] for r in shard_recs] == ["checksum"]
    # verify="size" skips the hash: the rows are checked one by one instead
    packed, reported, _ = loader_run([folder], tmp_path, verify="size")
    accounted(set(keys), packed, reported)


def test_fifo_and_symlink_to_dev_zero_in_a_folder_never_hang(tmp_path):
    keys = H.fifo_folder(tmp_path / "f")
    check_class([str(tmp_path / "f")], set(keys), {"a/x.jpg": "special-file"}, tmp_path)
    keys = H.devzero_folder(tmp_path / "z")
    (tmp_path / "z2").mkdir()
    check_class([str(tmp_path / "z")], set(keys), {"a/z.jpg": "special-file"}, tmp_path / "z2")


def _with_good(bad: list[tuple[str, bytes]], n_good: int = 3) -> bytes:
    return H.tar_bytes([m for i in range(n_good) for m in H.ok_sample(i)] + bad)


GOOD3 = {"s0000", "s0001", "s0002"}


def test_progressive_jpegs_of_thousands_of_scans_are_too_slow_records(tmp_path):
    bad = [("scans-a.jpg", H.many_scans_jpeg(2048, 1000)), ("scans-a.cls", b"1"),
           ("scans-b.jpg", H.many_scans_jpeg(512, 3000)), ("scans-b.cls", b"2")]
    url = write(tmp_path, "scans.tar", _with_good(bad))
    check_class([url], GOOD3 | {"scans-a", "scans-b"}, {"scans-a": "too-slow", "scans-b": "too-slow"}, tmp_path)


def test_images_that_decode_larger_than_they_declare_are_too_large_records(tmp_path):
    import struct

    bad = [("ico-png.ico", H.ico_embedding(H.solid_png(20000, 20000, value=7))), ("ico-png.cls", b"1"),
           ("ico-bmp.ico", H.ico_embedding(struct.pack("<IiiHHIIiiII", 40, 20000, 40000, 1, 32, 0, 0, 0, 0, 0, 0))),
           ("ico-bmp.cls", b"1"),
           ("webp.webp", H.solid_webp(13000, 13000)), ("webp.cls", b"1")]
    url = write(tmp_path, "bombs.tar", _with_good(bad))
    expect = {"ico-png": "too-large", "ico-bmp": "too-large", "webp": "too-large"}
    check_class([url], GOOD3 | set(expect), expect, tmp_path)


def test_video_frames_larger_than_their_stream_declares_are_too_large_records(tmp_path):
    from patchpack.decode.video.config import VideoConfig

    bad = [("lie-a.mkv", H.lying_video(16, 2000)), ("lie-a.cls", b"1"),
           ("lie-b.mkv", H.lying_video(16, 1200, frames=3)), ("lie-b.cls", b"1")]
    url = write(tmp_path, "videos.tar", _with_good(bad))
    video = VideoConfig(frames=2, tubelet=1, max_source_pixels=1_000_000)
    check_class([url], GOOD3 | {"lie-a", "lie-b"}, {"lie-a": "too-large", "lie-b": "too-large"}, tmp_path,
                video=video, max_patches=24)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["flip", "cut", "zero"]), st.integers(0, 10**6), st.integers(1, 255)),
                min_size=1, max_size=3))
def test_fuzzed_shards_never_stop_the_loader(tmp_path_factory, mutations):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = H.mutate(H.tar_bytes(GOOD5), mutations, zero_run=8)
    packed, reported, shard = loader_run([write(tmp, "fuzz.tar", data)], tmp)
    assert len(packed) == len(set(packed)) and not set(packed) & set(reported)
    assert KEYS5 <= set(packed) | set(reported) or shard

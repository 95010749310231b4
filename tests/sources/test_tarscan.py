"""The tar scanner: no silent loss on damaged, cut, hostile or odd tars; bounded work and memory."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile

import hostile as H
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webdataset.tariterators import group_by_keys, tar_file_iterator

from patchpack.errors import ERROR_KINDS
from patchpack.sources.tarscan import TarIssue, TarSample, TarScanConfig, decompressed, scan_tar


class Counting(io.RawIOBase):
    """A non-seekable stream that counts what is read and the largest single read."""

    def __init__(self, data: bytes):
        self.src, self.read_bytes, self.calls, self.largest = io.BytesIO(data), 0, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        b = self.src.read(n)
        self.read_bytes += len(b)
        self.calls += 1
        self.largest = max(self.largest, len(b))
        return b


def scan(data: bytes, seekable: bool = True, **cfg):
    return scan_items(io.BytesIO(data) if seekable else Counting(data), **cfg)


def scan_items(f, **cfg):
    items = list(scan_tar(f, "shard.tar", TarScanConfig(**cfg) if cfg else None))
    samples = {i.key: i for i in items if isinstance(i, TarSample)}
    issues = [i for i in items if isinstance(i, TarIssue)]
    return samples, issues


def by_key(issues):
    return {i.record.key: i.record for i in issues if i.index is not None}


def shard_level(issues):
    return [i.record for i in issues if i.index is None]


GOOD = [m for i in range(5) for m in H.ok_sample(i)]
GOOD_TAR = H.tar_bytes(GOOD)
GOOD_KEYS = {f"s{i:04d}" for i in range(5)}


@pytest.mark.parametrize("seekable", [True, False])
def test_good_tar_matches_members_exactly(seekable):
    samples, issues = scan(GOOD_TAR, seekable)
    assert issues == []
    assert set(samples) == GOOD_KEYS
    for name, data in GOOD:
        key, ext = name.split(".")
        assert samples[key].members[ext] == data
    assert [s.index for s in samples.values()] == list(range(5))


def test_flipped_header_byte_mid_shard_resynchronises():
    data = H.flip_header_byte(GOOD_TAR, "s0002.png")
    samples, issues = scan(data)
    assert set(samples) == GOOD_KEYS - {"s0002"}  # the samples after the damage are still read
    rec = by_key(issues)["s0002"]
    assert rec.kind == "bad-header" and rec.shard == "shard.tar"
    off = next(o for n, o, _ in H.member_offsets(GOOD_TAR) if n == "s0002.png")
    assert f"at byte {off}" in rec.message and "resynchronised" in rec.message
    assert shard_level(issues) == []


@pytest.mark.parametrize("field_offset", [0, 3, 100, 110, 125, 130, 140, 150, 156, 257, 300, 345, 500])
def test_any_damaged_header_field_is_reported_and_later_samples_survive(field_offset):
    data = H.flip_header_byte(GOOD_TAR, "s0001.png", field_offset)
    samples, issues = scan(data)
    assert {"s0003", "s0004"} <= set(samples)
    missing = GOOD_KEYS - set(samples)
    named = set(by_key(issues))
    assert missing <= named or shard_level(issues), (missing, issues)
    assert all(i.record.kind == "bad-header" for i in issues)


def test_tar_cut_inside_member_names_that_members_sample():
    samples, issues = scan(H.cut_inside_member(GOOD_TAR, "s0002.png"))
    assert set(samples) == {"s0000", "s0001"}
    assert samples["s0001"].members["cls"] == b"1"  # the previous sample is complete and not blamed
    assert [(i.record.key, i.record.kind, i.index) for i in issues] == [("s0002", "truncated", 2),
                                                                        ("shard.tar", "shard", None)]


def test_tar_cut_at_member_boundary_reports_missing_end_marker():
    cut = next(o for n, o, _ in H.member_offsets(GOOD_TAR) if n == "s0003.png")
    samples, issues = scan(GOOD_TAR[:cut])
    # s0002 may have had more members: reported, not passed on half
    assert set(samples) == {"s0000", "s0001"} and by_key(issues)["s0002"].kind == "truncated"
    (rec,) = shard_level(issues)
    assert rec.kind == "shard" and "end-of-archive" in rec.message and rec.key == "shard.tar"
    assert issues[-1].position == 3  # comes before sample 3: a reader resuming at 3 reports it again


def test_special_members_are_typed_records_with_their_keys():
    samples, issues = scan(H.special_members_tar(n_good=3))
    assert set(samples) == {"s0000", "s0001", "s0002"}
    kinds = {k: r.kind for k, r in by_key(issues).items()}
    assert kinds == {"link-sym": "link", "link-hard": "link", "fifo": "special-file", "chr": "special-file",
                     "blk": "special-file", "adir/": "special-file"}
    assert "/dev/zero" in by_key(issues)["link-sym"].message


def test_gnu_sparse_member_claiming_2gib_is_reported_not_materialised():
    data = H.sparse_tar(realsize=2 * 2**30, stored=6 * 1024)
    f = Counting(data)
    items = list(scan_tar(f, "shard.tar"))
    samples = {i.key for i in items if isinstance(i, TarSample)}
    assert samples == {"s0000", "s0001", "s0002"}
    (rec,) = [i.record for i in items if isinstance(i, TarIssue)]
    assert (rec.kind, rec.key) == ("sparse", "sparse") and "2147483648" in rec.message
    assert f.read_bytes <= len(data) and f.largest <= 2**20


@pytest.mark.parametrize("seekable", [True, False])
def test_oversize_member_is_skipped_before_reading(seekable):
    data = H.oversize_tar(200_000, n_good=2)
    f = io.BytesIO(data) if seekable else Counting(data)
    items = list(scan_tar(f, "shard.tar", TarScanConfig(max_member_bytes=20_000, chunk_bytes=4096)))
    samples = {i.key for i in items if isinstance(i, TarSample)}
    assert samples == {"s0000", "s0001"}
    (rec,) = [i.record for i in items if isinstance(i, TarIssue)]
    assert (rec.kind, rec.key) == ("oversize-member", "big") and "200000 bytes" in rec.message
    if not seekable:
        assert f.largest <= 20_000  # never read whole: only headers, small members and skip chunks


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_tars_are_read_and_a_cut_stream_is_reported(compress):
    packed = compress(GOOD_TAR)
    samples, issues = scan_items(decompressed(io.BytesIO(packed)))
    assert set(samples) == GOOD_KEYS and issues == []
    samples, issues = scan_items(decompressed(io.BytesIO(packed[: len(packed) // 2])))
    assert set(samples) < GOOD_KEYS
    last = shard_level(issues)[-1]  # cut before any member (bz2's first block): nothing of it was read
    assert last.kind == ("shard" if samples else "unreadable") and "truncated" in last.message


def test_bytes_that_are_no_tar_are_one_shard_record():
    for blob in (b"", b"not a tar file" * 100, bytes(300)):
        samples, issues = scan(blob)
        assert samples == {} and [(i.record.kind, i.record.key) for i in issues] == [("unreadable", "shard.tar")]


def test_default_member_cap_is_documented_and_large():
    assert TarScanConfig().max_member_bytes == 256 * 2**20


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_non_utf8_names_give_a_valid_deterministic_key(fmt):
    data, key = H.non_utf8_tar(fmt)
    samples, issues = scan(data)
    assert issues == []
    assert set(samples) == {"s0000", key, "s0001"}
    assert key.encode("utf-8") and json.loads(json.dumps(key)) == key
    assert pa.array([key], pa.string())[0].as_py() == key  # an Arrow string column takes it
    assert set(samples[key].members) == {"png", "cls"}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_pax_paths(fmt):
    long = "d" * 120 + "/" + "k" * 150
    data = H.tar_bytes([(f"{long}.png", b"x"), (f"{long}.cls", b"2"), ("ünï.png", b"y")], fmt=fmt)
    samples, issues = scan(data)
    assert issues == [] and set(samples) == {long, "ünï"}
    assert samples[long].members == {"png": b"x", "cls": b"2"}


def test_concatenated_archives_are_read_on_and_trailing_garbage_is_reported():
    second = H.tar_bytes(H.ok_sample(7))
    samples, issues = scan(GOOD_TAR + second)
    assert issues == [] and set(samples) == GOOD_KEYS | {"s0007"}
    samples, issues = scan(GOOD_TAR + b"\x01" * 512)
    assert set(samples) == GOOD_KEYS and [r.kind for r in shard_level(issues)] == ["bad-header"]


def test_want_reads_only_owned_samples_with_stable_indices():
    data = H.special_members_tar(n_good=3)
    full = list(scan_tar(io.BytesIO(data), "s"))
    odd = list(scan_tar(io.BytesIO(data), "s", want=lambda i: i % 2 == 1))
    idx = lambda items: [(i.index, getattr(i, "key", None) or i.record.key) for i in items]
    assert idx(odd) == [x for x in idx(full) if x[0] % 2 == 1]


def test_refused_extensions_and_duplicates_report_the_sample_once():
    data = H.tar_bytes([("a.png", b"x"), ("a.pkl", b"evil"), ("b.png", b"1"), ("b.PNG", b"2"), ("c.png", b"3")])
    samples, issues = scan(data, refuse_exts=frozenset({"pkl"}))
    assert set(samples) == {"c"}
    assert {k: r.kind for k, r in by_key(issues).items()} == {"a": "unsafe", "b": "corrupt"}


def test_meta_members_are_reported_not_dropped():
    data = H.tar_bytes([("__index__", b"meta")] + H.ok_sample(0))
    samples, issues = scan(data)
    assert set(samples) == {"s0000"} and [r.kind for r in shard_level(issues)] == ["meta-member"]


def test_new_kinds_are_documented():
    for kind in ("bad-header", "link", "special-file", "sparse", "oversize-member", "bad-name", "meta-member"):
        assert kind in ERROR_KINDS


# ---- fuzz -------------------------------------------------------------------------------------------

NAMES = st.lists(
    st.builds(lambda d, b, e: f"{d}{b}.{e}", st.sampled_from(["", "x/", "x/y/"]),
              st.text("abc", min_size=1, max_size=3), st.sampled_from(["png", "cls", "a.b", "json"])),
    min_size=1, max_size=12, unique=True,
)


@settings(max_examples=60, deadline=None)
@given(NAMES, st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
def test_grouping_matches_webdataset(names, fmt):
    data = H.tar_bytes([(n, n.encode()) for n in names], fmt=fmt)
    ours = [(s.key, s.members) for s in scan_tar(io.BytesIO(data), "s") if isinstance(s, TarSample)]
    theirs = [(g["__key__"], {k: v for k, v in g.items() if not k.startswith("__")})
              for g in group_by_keys({**e, "__url__": "s"} for e in tar_file_iterator(io.BytesIO(data)))]
    assert ours == theirs


def _check_accounting(data: bytes, original: set[str]) -> tuple[dict, list]:
    f = Counting(data)
    items = list(scan_tar(f, "s.tar", TarScanConfig(chunk_bytes=1024)))
    assert f.read_bytes <= len(data)  # bounded work: nothing read twice
    assert f.calls <= 3 * (len(data) // 512) + 8
    samples = [i for i in items if isinstance(i, TarSample)]
    issues = [i for i in items if isinstance(i, TarIssue)]
    assert all(i.record.kind in ERROR_KINDS for i in issues)
    indices = [i.index for i in items if i.index is not None]
    assert indices == sorted(set(indices))  # each sample index once, in stream order
    seen = {s.key for s in samples} | {i.record.key for i in issues}
    # a sample may be missing only when the stream was damaged (shard-level record) or ended early
    assert original <= seen or any(i.index is None or i.record.kind == "truncated" for i in issues)
    return {s.key: s for s in samples}, issues


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_one_flipped_byte_is_harmless_or_reported(data):
    pos = data.draw(st.integers(0, len(GOOD_TAR) - 1))
    delta = data.draw(st.integers(1, 255))
    b = bytearray(GOOD_TAR)
    b[pos] ^= delta
    samples, issues = _check_accounting(bytes(b), GOOD_KEYS)
    if not issues:  # undetected means the change was in member data or padding: all samples there
        assert set(samples) == GOOD_KEYS


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(1, 700)),
    st.tuples(st.just("zero"), st.integers(0, 10**6), st.integers(1, 2000)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_mutated_tar_accounts_for_every_sample(mutations):
    _check_accounting(H.mutate(GOOD_TAR, mutations), GOOD_KEYS)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes_never_raise(blob):
    _check_accounting(blob, set())


def test_a_sample_of_many_members_under_the_cap_is_bounded_as_a_whole():
    """Each member is under max_member_bytes, but together they pass 4x: the sample is refused
    once the sum goes over (its members dropped, the rest skipped)."""
    cap = 4000
    many = [(f"big.m{j}", bytes([j]) * 3900) for j in range(8)]  # 8 x 3900 > 4 x 4000
    members = H.ok_sample(0) + many + H.ok_sample(1)
    items = list(scan_tar(Counting(H.tar_bytes(members)), "shard.tar", TarScanConfig(max_member_bytes=cap)))
    assert {i.key for i in items if isinstance(i, TarSample)} == {"s0000", "s0001"}
    (rec,) = [i.record for i in items if isinstance(i, TarIssue)]
    assert (rec.kind, rec.key) == ("oversize-member", "big") and "more than 4 x max_member_bytes=4000" in rec.message
    four = [(f"ok.m{j}", bytes([j]) * 4000) for j in range(4)]  # exactly 4 x the cap: read
    items = list(scan_tar(io.BytesIO(H.tar_bytes(four)), "shard.tar", TarScanConfig(max_member_bytes=cap)))
    assert [len(i.members) for i in items if isinstance(i, TarSample)] == [4]


def test_a_folder_sample_of_many_files_is_bounded_as_a_whole(tmp_path):
    from patchpack.sources import read_shard

    (tmp_path / "x.png").write_bytes(b"a" * 3900)
    for j in range(6):  # sidecars of x.png
        (tmp_path / f"x.m{j}").write_bytes(b"a" * 3900)
    (tmp_path / "y.png").write_bytes(H.ok_image(0))
    recs = list(read_shard(str(tmp_path), max_member_bytes=4000))
    bad = [r for r in recs if not hasattr(r, "members")]
    assert [(r.key, r.kind) for r in bad] == [("x.png", "oversize-member")]
    assert [r.key for r in recs if hasattr(r, "members")] == ["y.png"]

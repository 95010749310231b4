"""pax and GNU long-name headers that lie: the member is named in a record, the next sample survives."""

from __future__ import annotations

import io
import tarfile

import hostile as H
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from patchpack.sources.tarscan import MAX_META_BYTES, MAX_NAME_BYTES, TarIssue, TarSample, TarScanConfig, scan_tar
from test_tarscan import MUTATION, Counting, _check_accounting


def pax_member(name: str, data: bytes, pax: dict[str, str], ustar_size: int | None = None) -> bytes:
    """One member with its own pax header (records ``pax``); the ustar size field holds
    ``ustar_size`` (default: the real size), the data is ``data`` padded to a block."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if ustar_size is None else ustar_size
    info.mtime, info.mode, info.pax_headers = 0, 0o644, dict(pax)
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512)


def members_bytes(members) -> bytes:
    """Regular members without the end-of-archive marker (to splice hand-made ones between)."""
    data = H.tar_bytes(members, fmt=tarfile.PAX_FORMAT)
    while data.endswith(bytes(512)):
        data = data[:-512]
    return data


def spliced(bad: bytes) -> bytes:
    """s0000, then ``bad`` (members of sample ``bad``), then s0001 and s0002, then the end marker."""
    return (members_bytes(H.ok_sample(0)) + bad + members_bytes(H.ok_sample(1) + H.ok_sample(2)) + bytes(1024))


def scan(data: bytes, seekable: bool):
    items = list(scan_tar(io.BytesIO(data) if seekable else Counting(data), "shard.tar",
                          TarScanConfig(chunk_bytes=4096)))
    samples = {i.key: i for i in items if isinstance(i, TarSample)}
    issues = [i.record for i in items if isinstance(i, TarIssue)]
    return samples, issues


PNG = H.ok_image(5)
REAL = len(PNG)

SIZE_VARIANTS = {
    "absurd": "9" * 30,
    "huge": str(2**40),
    "negative": "-5",
    "non-numeric": "12abc",
    "empty": "",
    "underscored": "1_0",
    "past-the-end": str(REAL + 10**6),
    "one-block-more": str(REAL + 512),
}


@pytest.mark.parametrize("seekable", [True, False])
@pytest.mark.parametrize("variant", sorted(SIZE_VARIANTS))
def test_a_lying_pax_size_is_reported_under_its_key_and_the_next_sample_survives(variant, seekable):
    bad = pax_member("bad.png", PNG, {"size": SIZE_VARIANTS[variant]}) + pax_member("bad.cls", b"4", {})
    samples, issues = scan(spliced(bad), seekable)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    assert [(r.key, r.kind) for r in issues] == [("bad", "bad-header")]
    assert "pax size" in issues[0].message and "resynchronised" in issues[0].message
    assert samples["s0001"].members["cls"] == b"1"


def test_a_pax_size_past_the_end_with_an_empty_header_size_is_checked_against_the_file():
    """Some writers leave the header's size field 0 and give the size in pax only: a seekable
    file knows what remains, so a size past the end is a lying header, not a cut tar."""
    bad = pax_member("bad.png", PNG, {"size": str(10**9)}, ustar_size=0) + pax_member("bad.cls", b"4", {})
    samples, issues = scan(spliced(bad), seekable=True)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    assert [(r.key, r.kind) for r in issues] == [("bad", "bad-header")]
    assert "bytes left" in issues[0].message


def test_a_pax_size_given_only_in_pax_is_honoured():
    good = pax_member("big.png", PNG, {"size": str(REAL)}, ustar_size=0) + pax_member("big.cls", b"4", {})
    for seekable in (True, False):
        samples, issues = scan(spliced(good), seekable)
        assert issues == [] and samples["big"].members == {"png": PNG, "cls": b"4"}


@pytest.mark.parametrize("seekable", [True, False])
def test_a_huge_pax_path_is_a_bad_name_record_not_a_huge_key(seekable):
    long = "x" * 200_000
    bad = pax_member(f"{long}.png", PNG, {}) + pax_member(f"{long}.cls", b"4", {})
    samples, issues = scan(spliced(bad), seekable)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    ((key, kind),) = [(r.key, r.kind) for r in issues]
    assert kind == "bad-name" and len(key) <= 100 and key == "x" * 100  # the header's own name field
    assert f"longer than {MAX_NAME_BYTES}" in issues[0].message


@pytest.mark.parametrize("seekable", [True, False])
def test_a_pax_header_over_the_cap_is_skipped_whole_and_names_its_member(seekable):
    long = "y" * (MAX_META_BYTES + 10)
    bad = pax_member(f"{long}.png", PNG, {}) + pax_member(f"{long}.cls", b"4", {})
    samples, issues = scan(spliced(bad), seekable)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    # the member is named by its header's own (full, so perhaps cut) name field; a shard-level
    # record says the real name may have been longer
    # (one shard-level record for each of its two members)
    assert [(r.key, r.kind) for r in issues] == [("shard.tar", "bad-header")] * 2 + [("y" * 100, "bad-header")]
    assert "may have held a longer one" in issues[0].message
    assert f"exceeds {MAX_META_BYTES}" in issues[2].message


def test_a_gnu_long_name_over_the_name_cap_is_bad_name():
    long = "z" * 5000
    data = H.tar_bytes(H.ok_sample(0) + [(f"{long}.png", PNG), (f"{long}.cls", b"1")] + H.ok_sample(1))
    samples, issues = scan(data, seekable=False)
    assert set(samples) == {"s0000", "s0001"}
    assert [(r.key, r.kind) for r in issues] == [("z" * 100, "bad-name")]  # the header's own name field


@pytest.mark.parametrize("record", [b"12 path=a\n", b"x9 path=a.png\n", b"+9 path=ab\n", b"5 a\n"])
def test_a_malformed_pax_header_names_its_member(record):
    """The pax payload is not ``"len key=value\\n"`` records: the member after it is reported (its
    size may have been in the pax header), the reader resynchronises."""
    info = tarfile.TarInfo("bad.png")
    info.size, info.mtime = REAL, 0
    payload = record
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size, pax.mtime = tarfile.XHDTYPE, len(payload), 0
    bad = (pax.tobuf(tarfile.USTAR_FORMAT) + payload + bytes(-len(payload) % 512)
           + info.tobuf(tarfile.USTAR_FORMAT) + PNG + bytes(-REAL % 512))
    samples, issues = scan(spliced(bad), seekable=False)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    assert [(r.key, r.kind) for r in issues] == [("bad", "bad-header")]


def test_a_pax_header_whose_member_header_is_gone_does_not_rename_the_next_member():
    """A pax header, then zero blocks where its member header was: the pax records (here a path)
    must not be applied to the next member, and the lost member is a shard-level record."""
    lost = pax_member("ü-lost.png", PNG, {"path": "ü-lost.png"})
    header_end = 1024  # pax header block + one payload block
    erased = lost[:header_end] + bytes(len(lost) - header_end)  # member header and data zeroed
    samples, issues = scan(spliced(erased), seekable=False)
    assert set(samples) == {"s0000", "s0001", "s0002"}
    assert [(r.key, r.kind) for r in issues] == [("shard.tar", "bad-header")]
    assert "not by its member" in issues[0].message


def test_pax_records_still_apply_to_good_members():
    long = "d" * 120 + "/" + "k" * 150
    data = H.tar_bytes([(f"{long}.png", b"x"), (f"{long}.cls", b"2"), ("ünï.png", b"y")], fmt=tarfile.PAX_FORMAT)
    samples, issues = scan(data, seekable=False)
    assert issues == [] and set(samples) == {long, "ünï"}


PAX_MEMBERS = [(f"{'d' * 120}/ü{i}.png", H.ok_image(i)) for i in range(3)] + [("ü1.cls", b"1"), ("s.png", PNG)]
PAX_TAR = H.tar_bytes(PAX_MEMBERS, fmt=tarfile.PAX_FORMAT)
PAX_KEYS = {n.rsplit(".", 1)[0] for n, _ in PAX_MEMBERS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3), st.booleans())
@example([("flip", 1124, 1), ("zero", 2609, 2000)], False)  # a damaged header, then a member's headers zeroed
@example([("flip", 1148, 1), ("zero", 2609, 2000)], False)  # the same with the damaged header's size field
def test_fuzz_mutated_pax_tar_accounts_for_every_sample(mutations, seekable):
    """Every sample is read, named in a record, or covered by a shard-level record. A pax header
    zeroed whole reads as an archive boundary (zero blocks, then a valid header): its member is
    then read under the name its own header gives (the first 100 bytes), and a changed byte inside
    a pax path changes the name undetected (pax payloads carry no checksum, like member data): a
    sample may come under another name, so the accounting here is by count."""
    data = H.mutate(PAX_TAR, mutations)
    items = list(scan_tar(io.BytesIO(data) if seekable else Counting(data), "s.tar", TarScanConfig(chunk_bytes=1024)))
    assert all(isinstance(i, (TarSample, TarIssue)) for i in items)
    _check_accounting(data, set())  # bounded work, indices once and in order, documented kinds
    seen = {i.key if isinstance(i, TarSample) else i.record.key for i in items if i.index is not None}
    lost, renamed = PAX_KEYS - seen, seen - PAX_KEYS
    assert len(renamed) >= len(lost) or any(isinstance(i, TarIssue) and (i.index is None or i.record.kind in
                                                                         ("truncated", "corrupt")) for i in items)

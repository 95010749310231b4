"""Tar members one header at a time: the first stage of :func:`patchpack.sources.tarscan.scan_tar`.

:func:`iter_members` walks a tar stream block by block and yields, in stream order:

* :class:`TarMember` — one member header (extended headers applied). Its data is read only
  when the consumer calls :meth:`TarMember.read` before asking for the next event; otherwise
  it is skipped (by seeking, or in ``chunk_bytes`` pieces). ``problem`` says why a member is
  never read (links, FIFOs, devices, directories, sparse, oversize, bad names, lying pax
  headers);
* :class:`HeaderDamage` — a header whose checksum or numeric fields are wrong: the walk has
  resynchronised on the next valid header (or reached the end);
* :class:`ShardNote` — a shard-level record (webdataset metadata members, an oversize or
  malformed global pax header, data lost after damage);
* :class:`TarEnd` — always last: a clean end, a cut stream, or an endless run of zero blocks.

Extended headers are checked before they are believed (:mod:`patchpack.sources.tarheaders`):
a member whose pax size cannot be trusted is ``bad-header`` under its own key and the walk
resynchronises on the next valid header instead of skipping a size it cannot trust. A pipe
whose pax size is 0 in the header and runs past the end is reported as cut (nothing tells a
lying size from a cut stream there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Generator, Iterator, Union

from .tarblocks import (BLOCK, NO_DATA, OCTAL_SIZE_MAX, REGULAR, SPECIAL, ZERO, HeaderError, Stream, checksum_ok,
                        cstr, decode_name, header_name, is_header, number, padding, split_name)
from .tarheaders import EXTENDED_TYPES, Extended, MemberHeader, member_header, read_extended

__all__ = ["TarScanConfig", "TarMember", "HeaderDamage", "ShardNote", "TarEnd", "TarEvent", "iter_members", "resync",
           "DEFAULT_MAX_MEMBER_BYTES", "MAX_ZERO_BLOCKS"]

#: Default per-member byte cap (256 MiB): a larger member is reported, never read.
DEFAULT_MAX_MEMBER_BYTES = 256 * 2**20
#: zero blocks in a row after which a stream is no longer read (4 MiB: far beyond the record
#: padding of any tar writer, which pads to its block size of at most 1 MiB)
MAX_ZERO_BLOCKS = 8192


@dataclass(frozen=True)
class TarScanConfig:
    """How :func:`~patchpack.sources.tarscan.scan_tar` reads.

    Attributes:
        max_member_bytes: members larger than this (bytes, from the header) are reported
            ``oversize-member`` and skipped unread. Default 256 MiB. A sample whose members
            together exceed ``SAMPLE_BYTES_FACTOR`` (4) times this is ``oversize-member`` too
            (its members are dropped as soon as the sum goes over), so one sample never holds
            more than that in memory.
        skip_meta: regex (``re.match`` on the member name) of webdataset metadata members,
            reported ``meta-member`` and skipped; ``None`` reads them as members.
        refuse_exts: member extensions (last dotted part, lower case) never read; their
            sample is reported ``unsafe``.
        chunk_bytes: piece size when skipping data of a non-seekable stream (bytes).
    """

    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    skip_meta: str | None = r"__[^/]*__($|/)"
    refuse_exts: frozenset[str] = frozenset()
    chunk_bytes: int = 2**20

    def __post_init__(self) -> None:
        if self.max_member_bytes < 0:
            raise ValueError("max_member_bytes must be >= 0")
        if self.chunk_bytes < BLOCK:
            raise ValueError(f"chunk_bytes must be >= {BLOCK}")


@dataclass(slots=True)
class TarMember:
    """One member header. ``size`` is its declared data size; ``problem`` ``(kind, message)``
    when it is never read. Call :meth:`read` (at most once, before the next event) for its data."""

    name: str
    offset: int
    size: int
    problem: tuple[str, str] | None = None
    stream: Stream | None = field(default=None, repr=False)  # set while its data can still be read
    data: bytes | None = field(default=None, repr=False)

    def read(self) -> bytes:
        """The member's data; shorter than ``size`` when the stream ends inside it."""
        if self.stream is None or self.data is not None:
            raise RuntimeError(f"the data of {self.name!r} is not readable here")
        self.data = self.stream.read(self.size)
        return self.data


@dataclass(frozen=True)
class HeaderDamage:
    """A damaged header at ``offset``; the walk resynchronised (``next_key`` is the key of the
    header it found, ``None`` at the end). ``guess`` is the key the damaged name field reads.
    ``shard_message`` is the shard-level record to give (kind ``shard_kind``) when the damage
    cannot be put on one sample, or always when ``tail_lost`` (later samples may be gone)."""

    offset: int
    message: str
    guess: str | None
    next_key: str | None
    tail_lost: bool
    shard_kind: str
    shard_message: str


@dataclass(frozen=True)
class ShardNote:
    """A shard-level record of ``kind`` found at ``offset``."""

    kind: str
    message: str
    offset: int


@dataclass(frozen=True)
class TarEnd:
    """The end of the walk. ``message`` empty: a clean end; else the shard-level ``shard`` record.
    ``open_message``: the sample open at the end may miss members (``truncated``); ``member``:
    the name of a member cut short, whose sample ``member_message`` blames."""

    offset: int
    message: str = ""
    open_message: str = ""
    member: str = ""
    member_message: str = ""


TarEvent = Union[TarMember, HeaderDamage, ShardNote, TarEnd]


def _cut(s: Stream, message: str) -> str:
    why = f" ({s.error})" if s.error else ""
    return f"tar has no end-of-archive marker: {message}{why}; truncated"


def _open_cut(s: Stream) -> str:
    return (f"the tar ends without an end-of-archive marker while this sample was read (at byte {s.pos}): "
            "it may be incomplete")


def _next_block(s: Stream) -> tuple[int, bytes] | TarEnd:
    """The next block that is not all zeros with its offset, or how the stream ended."""
    zeros = 0
    while True:
        off = s.pos
        block = s.read(BLOCK)
        if len(block) < BLOCK:
            if zeros >= 2 and not block:
                return TarEnd(off)
            where = "inside a header" if block else ("after one zero block" if zeros else "after the last member")
            return TarEnd(off, _cut(s, f"stream ends {where} at byte {off + len(block)}"),
                          "" if zeros else _open_cut(s))
        if block != ZERO:  # a valid header after zero blocks: a concatenated archive; else damage
            return off, block
        zeros += 1
        if zeros > MAX_ZERO_BLOCKS:  # an endless run of zeros (a device, a pipe): stop here
            return TarEnd(off, f"more than {MAX_ZERO_BLOCKS} zero blocks in a row from byte "
                               f"{off - (zeros - 1) * BLOCK}: the rest of the stream is not read")


def resync(s: Stream) -> tuple[bytes | None, int, int, bool]:
    """Read on to the next valid header block and leave it unread: ``(block, its offset, non-zero
    blocks skipped, whether data followed a zero block)``; block ``None`` at the end of the stream
    (offset: the end)."""
    data_blocks, zeros, data_after_zeros = 0, False, False
    while True:
        at = s.pos
        block = s.read(BLOCK)
        if len(block) < BLOCK:
            return None, at, data_blocks + bool(block), data_after_zeros
        if is_header(block):
            s.unread(block)
            return block, at, data_blocks, data_after_zeros
        if block == ZERO:
            zeros = True
        else:
            data_blocks += 1
            data_after_zeros = data_after_zeros or zeros


def _key_of(block: bytes | None) -> str | None:
    if block is None or block[156:157] in EXTENDED_TYPES:
        return None
    return split_name(decode_name(header_name(block)))[0]


def _own_blocks(block: bytes) -> int:
    try:
        return -(-number(block[124:136]) // BLOCK)
    except HeaderError:
        return -1


def _resynced(off: int, found: bytes | None, at: int) -> str:
    if found is not None:
        return f"resynchronised at byte {at}, {at - off} bytes skipped"
    return f"no valid header until the end at byte {at}, {at - off} bytes skipped"


def _damage(s: Stream, off: int, block: bytes, exc: Exception) -> tuple[HeaderDamage, bool]:
    """Resynchronise after the damaged header ``block`` at ``off``; whether a header was found."""
    name = decode_name(header_name(block)) if cstr(block[:100]) else ""
    found, at, data_blocks, zeroed_member = resync(s)
    msg = f"damaged tar header at byte {off} ({exc}; name field reads {name!r}); " + _resynced(off, found, at)
    # Every aligned block up to the found one failed as a header, so a found header means only the
    # damaged member's bytes were skipped. At the end of the stream, more data than its size field
    # allows means later members were lost too (a shifted stream).
    # A zero block followed by data in the skipped bytes is a member header that was zeroed: its
    # member went with the damaged one, so the shard-level record says so.
    tail_lost = (found is None and data_blocks > _own_blocks(block)) or zeroed_member
    if off == 0 and found is None:
        return HeaderDamage(off, msg, None, None, True, "unreadable", f"not a tar: no valid header in {at - off} bytes "
                                                                 f"({exc})"), False
    return HeaderDamage(off, msg, split_name(name)[0] if name else None, _key_of(found), tail_lost, "bad-header",
                        f"{msg}; {data_blocks} data blocks skipped may have held other samples"), found is not None


def _headers(s: Stream) -> Iterator[MemberHeader | HeaderDamage | ShardNote | TarEnd]:
    """Member headers in stream order with their extended headers applied; damage resynchronised.
    The last item is a :class:`TarEnd`."""
    ext = Extended()
    while True:
        before = s.pos
        got = _next_block(s)
        if ext.offset >= 0 and (isinstance(got, TarEnd) or got[0] != before):  # its member header is gone
            yield ShardNote("bad-header", f"the extended header at byte {ext.offset} is followed by zero blocks or "
                                          "the end, not by its member: a member may be lost", ext.offset)
            ext = ext.next()
        if isinstance(got, TarEnd):
            yield got
            return
        off, block = got
        try:
            if not checksum_ok(block):
                raise HeaderError("header checksum does not match")
            size = number(block[124:136])
            tflag = block[156:157]
            if tflag in EXTENDED_TYPES:
                start = off if ext.offset < 0 else ext.offset
                ext = read_extended(s, off, block, size, ext)
                if ext is None:
                    yield TarEnd(off, _cut(s, f"stream ends inside a {tflag.decode()} header at byte {s.pos}"),
                                 _open_cut(s))
                    return
                if ext.note:
                    yield ShardNote("bad-header", ext.note, off)
                ext = replace(ext, note="", offset=start if tflag != b"g" else ext.offset)
                continue
            header = member_header(off, block, size, ext, s.remaining())
            if header.size < 0 or (header.sparse_size or 0) < 0:
                raise HeaderError("negative size")
        except (HeaderError, ValueError) as exc:
            damage, found = _damage(s, off, block, exc)
            ext = ext.next()
            yield damage
            if not found:  # no valid header until the end: the damage record says so
                yield TarEnd(s.pos)
                return
            continue
        if ext.offset >= 0:  # extended headers were applied to this member: start afresh
            ext = ext.next()
        yield header


def _problem(h: MemberHeader, max_member_bytes: int) -> tuple[str, str] | None:
    """Why a member is never read, from its header alone."""
    if h.problem is not None:
        return h.problem
    if not h.raw_name or "\x00" in h.name:
        return "bad-name", f"member name {h.raw_name[:64]!r} is unusable"
    if h.tflag in (b"1", b"2"):
        what = "hard link" if h.tflag == b"1" else "symlink"
        return "link", f"{what} {h.name!r} -> {decode_name(h.link)!r}; links are never followed"
    if h.sparse_size is not None:
        return "sparse", f"GNU sparse member {h.name!r} claims {h.sparse_size} bytes in {h.size} stored; not read"
    if h.tflag not in REGULAR:
        kind = SPECIAL.get(h.tflag, f"type {h.tflag!r}")
        return "special-file", f"{kind} member {h.name!r} holds no regular file data; not read"
    if h.size > max_member_bytes:
        return "oversize-member", f"member {h.name!r} is {h.size} bytes, over max_member_bytes={max_member_bytes}"
    return None


def _sparse_map_end(s: Stream, h: MemberHeader) -> TarEnd | None:
    """Read past an old GNU sparse map's extension blocks (not counted in the size)."""
    while True:
        ext_block = s.read(BLOCK)
        if len(ext_block) < BLOCK:
            return TarEnd(h.offset, _cut(s, f"stream ends inside the sparse map of {h.name!r} at byte {s.pos}"),
                          "", h.name, f"tar ends inside the sparse map of {h.name!r} at byte {s.pos}")
        if ext_block[504] == 0:
            return None


def _untrusted(s: Stream, h: MemberHeader, problem: tuple[str, str]) -> Generator[TarEvent, None, bool]:
    """A member whose size is not believed: resynchronise, then report it under its own key.
    Returns whether the stream ended (a :class:`TarEnd` was yielded)."""
    found, at, data_blocks, zeroed_member = resync(s)
    kind, why = problem
    yield TarMember(h.name, h.offset, h.size, (kind, f"member {h.name!r} at byte {h.offset}: {why}; "
                                                     + _resynced(h.offset, found, at)))
    if found is not None and zeroed_member:
        yield ShardNote("bad-header", f"after {h.name!r}: a zeroed block followed by data up to byte {at} may have "
                                      "been another sample's header", h.offset)
    if found is None:
        block_size = h.size if h.size < OCTAL_SIZE_MAX else 0
        if data_blocks > -(-block_size // BLOCK):
            yield ShardNote("bad-header", f"after {h.name!r}: {data_blocks} data blocks up to the end at byte {at} "
                                          "may have held other samples", h.offset)
        yield TarEnd(at)
    return found is None


def _data_end(s: Stream, m: TarMember) -> TarEnd | None:
    """Skip what the consumer did not read of ``m`` and its padding; how the stream ended, if it did."""
    got = len(m.data) if m.data is not None else s.skip(m.size)
    m.stream = None
    if got < m.size:
        return TarEnd(m.offset, _cut(s, f"stream ends inside member {m.name!r} at byte {s.pos}"), _open_cut(s),
                      m.name, f"tar ends inside member {m.name!r} ({m.size} bytes declared) at byte {s.pos}")
    if s.skip(padding(m.size)) < padding(m.size):
        return TarEnd(s.pos, _cut(s, f"stream ends in the padding of {m.name!r} at byte {s.pos}"), _open_cut(s))
    return None


def iter_members(s: Stream, cfg: TarScanConfig) -> Iterator[TarEvent]:
    """The events of the tar stream ``s`` in order (see the module doc); the last is a :class:`TarEnd`."""
    meta = re.compile(cfg.skip_meta) if cfg.skip_meta else None
    for h in _headers(s):
        if not isinstance(h, MemberHeader):
            yield h
            continue
        end = _sparse_map_end(s, h) if h.sparse_map_blocks else None
        if end is not None:
            yield end
            return
        has_data = h.tflag not in NO_DATA
        if meta is not None and meta.match(h.name) and h.problem is None:
            if has_data:
                s.skip(h.size + padding(h.size))
            yield ShardNote("meta-member", f"member {h.name!r} matches the metadata pattern {cfg.skip_meta!r}; "
                                           "not read", h.offset)
            continue
        problem = _problem(h, cfg.max_member_bytes)
        if h.name_uncertain:
            yield ShardNote("bad-header", f"member at byte {h.offset} is reported as {h.name!r}, the name its header "
                                          "gives; its lost pax header may have held a longer one", h.offset)
        if h.untrusted_size:
            if (yield from _untrusted(s, h, problem)):
                return
            continue
        member = TarMember(h.name, h.offset, h.size, problem, s if has_data and problem is None else None)
        yield member
        end = _data_end(s, member) if has_data else None
        if end is not None:
            yield end
            return

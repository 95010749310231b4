"""A tar reader that never loses bytes silently.

:func:`scan_tar` reads a tar stream (seekable or not) block by block, parsing the 512-byte
headers itself (POSIX ustar, GNU long names ``L``/``K``, pax ``x``/``g`` headers, base-256
sizes), and yields :class:`TarSample`\\ s grouped the webdataset way (key = path up to the
first dot of the basename, ``webdataset.tariterators.base_plus_ext``; extensions lower case)
and :class:`TarIssue`\\ s in stream order. Every byte of the stream ends up in a sample, a
record, or the end-of-archive marker:

* **damaged header** (checksum or numeric field wrong) -> ``bad-header``; the reader
  *resynchronises* on the next 512-byte-aligned block that is a valid header, so later
  samples are still read. The record names the sample when the damaged header's name field
  agrees with the sample open before it or the member found after it; otherwise it is a
  shard-level record (key = shard) naming what the name field reads.
* **member cut short** -> ``truncated`` for that member's own sample (not the one before).
* members never read: symlinks and hard links (``link``), FIFOs, character and block
  devices, directories and unknown types (``special-file``), GNU sparse members, old
  (``S``) or pax (``GNU.sparse.*``) (``sparse``; their claimed size is never materialised),
  members over ``max_member_bytes`` (``oversize-member``, checked from the header before
  any data is read; the data is skipped in ``chunk_bytes`` pieces or by seeking), members
  whose extension is in ``refuse_exts`` (``unsafe``), repeated extensions (``corrupt``),
  webdataset metadata names matching ``skip_meta`` (``meta-member``, shard level, like
  webdataset they are not samples).
* **stream ends early** (no end-of-archive marker of two zero blocks) -> ``truncated`` for
  the sample being read (cut inside a member, or possibly missing members after it), then
  one shard-level ``shard`` record. Bytes that hold no tar header at all: one ``shard`` record.

Resynchronisation trusts the header checksum: after damage, a member whose data is itself a
tar could be read as members (its own checksums are valid); without damage, member data is
always skipped by its declared size and never parsed.

A sample with any unread or damaged member is reported once, with its key and the first
problem; its other members are dropped. Zero blocks followed by a valid header (concatenated
archives) are read on; zero blocks followed by anything else are a damaged header. More than
:data:`MAX_ZERO_BLOCKS` zero blocks in a row end the reading with one ``shard`` record (an
endless stream of zeros, e.g. ``/dev/zero`` behind a pipe, is never read to its end).

Member names are bytes in a tar. They are decoded as UTF-8; a name that is not UTF-8 is
decoded with ``backslashreplace`` (byte ``0xff`` -> the four characters ``\\xff``), so the key
is a valid ``str`` for Arrow and JSON, deterministic (grouping and resume agree) and shows
the raw bytes. A name that is empty or holds a NUL is unusable: ``bad-name``.

Work is linear in the stream length and memory is bounded by ``max_member_bytes`` per held
member plus the pax / long-name cap (:data:`MAX_META_BYTES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from ..errors import ErrorRecord
from .tarblocks import (BLOCK, NO_DATA, REGULAR, SPECIAL, ZERO, HeaderError, Stream, checksum_ok, cstr, decode_name,
                        decompressed, header_name, is_header, number, padding, parse_pax, split_name)

__all__ = ["TarScanConfig", "TarSample", "TarIssue", "scan_tar", "decompressed", "DEFAULT_MAX_MEMBER_BYTES",
           "MAX_META_BYTES", "MAX_ZERO_BLOCKS", "SAMPLE_BYTES_FACTOR"]

#: Default per-member byte cap (256 MiB): a larger member is reported, never read.
DEFAULT_MAX_MEMBER_BYTES = 256 * 2**20
#: Cap on a pax header or GNU long-name payload (1 MiB).
MAX_META_BYTES = 2**20


#: a sample's members together may hold at most this many times ``max_member_bytes``
SAMPLE_BYTES_FACTOR = 4

#: zero blocks in a row after which a stream is no longer read (4 MiB: far beyond the record
#: padding of any tar writer, which pads to its block size of at most 1 MiB)
MAX_ZERO_BLOCKS = 8192


@dataclass(frozen=True)
class TarScanConfig:
    """How :func:`scan_tar` reads.

    Attributes:
        max_member_bytes: members larger than this (bytes, from the header) are reported
            ``oversize-member`` and skipped unread. Default 256 MiB. A sample whose members
            together exceed :data:`SAMPLE_BYTES_FACTOR` times this is ``oversize-member`` too
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


@dataclass
class TarSample:
    """One complete sample: ``members`` maps extension (lower case) -> bytes.

    ``index`` is the sample's 0-based position in the shard (every key group counts,
    reported ones too); ``offset`` the byte offset of its first header.
    """

    key: str
    index: int
    members: dict[str, bytes] = field(default_factory=dict)
    offset: int = 0


@dataclass(frozen=True)
class TarIssue:
    """A problem: ``index`` is the sample's index, ``None`` for shard-level records
    (whose ``record.key`` is the shard); ``offset`` is the byte offset where it was found;
    ``position`` the index of the next sample (a reader resuming at sample ``start``
    has already reported the shard-level issues with ``position < start``)."""

    record: ErrorRecord
    index: int | None
    offset: int
    position: int = 0


class _Group:
    __slots__ = ("key", "index", "offset", "wanted", "members", "problem", "nbytes")

    def __init__(self, key: str, index: int, offset: int, wanted: bool):
        self.key, self.index, self.offset, self.wanted = key, index, offset, wanted
        self.members: dict[str, bytes] = {}
        self.nbytes = 0
        self.problem: tuple[str, str] | None = None

    def fail(self, kind: str, message: str) -> None:
        if self.problem is None:
            self.problem = (kind, message)
        self.members.clear()


def scan_tar(
    fileobj: BinaryIO,
    shard: str,
    config: TarScanConfig | None = None,
    want: Callable[[int], bool] | None = None,
) -> Iterator[TarSample | TarIssue]:
    """Samples and issues of the tar stream ``fileobj`` (named ``shard`` in records), in order.

    Only samples with ``want(index)`` true are read into memory and reported (default:
    all); shard-level issues are always yielded (callers sharing a shard decide who
    reports them). See the module docstring for what is reported and how.
    """
    cfg = config or TarScanConfig()
    want = want or (lambda i: True)
    meta = re.compile(cfg.skip_meta) if cfg.skip_meta else None
    s = Stream(fileobj, cfg.chunk_bytes)
    state = {"group": None, "index": -1}

    def shard_issue(kind: str, message: str, offset: int) -> TarIssue:
        return TarIssue(ErrorRecord(shard, shard, "source", kind, message), None, offset, state["index"] + 1)

    def cut(message: str, offset: int, complete: bool = False) -> Iterator[TarSample | TarIssue]:
        """The stream ended early: the open sample (``truncated`` unless known ``complete``: more of
        its members may have followed), then one shard-level ``shard`` record."""
        g = state["group"]
        if g is not None and g.wanted and not complete:
            g.fail("truncated", f"the tar ends without an end-of-archive marker while this sample was read "
                                f"(at byte {s.pos}): it may be incomplete")
        yield from finish()
        why = f" ({s.error})" if s.error else ""
        yield shard_issue("shard", f"tar has no end-of-archive marker: {message}{why}; truncated", offset)

    def finish() -> Iterator[TarSample | TarIssue]:
        g: _Group | None = state["group"]
        state["group"] = None
        if g is None or not g.wanted:
            return
        if g.problem is not None:
            yield TarIssue(ErrorRecord(g.key, shard, "source", *g.problem), g.index, g.offset, g.index)
        else:
            yield TarSample(g.key, g.index, g.members, g.offset)

    def enter(key: str, offset: int) -> Iterator[TarSample | TarIssue]:
        g = state["group"]
        if g is None or g.key != key:
            yield from finish()
            state["index"] += 1
            state["group"] = _Group(key, state["index"], offset, bool(want(state["index"])))

    def resync() -> tuple[bytes | None, int, int]:
        """Next valid header block after a damaged one: ``(block, its offset, non-zero blocks
        skipped)``, block ``None`` at the end of the stream."""
        data_blocks = 0
        while True:
            at = s.pos
            block = s.read(BLOCK)
            if len(block) < BLOCK:
                return None, at, data_blocks + bool(block)
            if is_header(block):
                return block, at, data_blocks
            data_blocks += block != ZERO

    pending: bytes | None = None
    pending_off = 0
    pax: dict[str, bytes] = {}
    gpax: dict[str, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    zeros = 0
    while True:
        if pending is not None:
            block, off, pending = pending, pending_off, None
        else:
            off = s.pos
            block = s.read(BLOCK)
        if len(block) < BLOCK:
            if zeros >= 2 and not block:
                yield from finish()
            else:
                where = "inside a header" if block else ("after one zero block" if zeros else "after the last member")
                yield from cut(f"stream ends {where} at byte {off + len(block)}", off, complete=zeros > 0)
            return
        if block == ZERO:
            zeros += 1
            if zeros > MAX_ZERO_BLOCKS:  # an endless run of zeros (a device, a pipe): stop here
                yield from finish()
                yield shard_issue("shard", f"more than {MAX_ZERO_BLOCKS} zero blocks in a row from byte "
                                  f"{off - (zeros - 1) * BLOCK}: the rest of the stream is not read", off)
                return
            continue
        zeros = 0  # a valid header after zero blocks: a concatenated archive; anything else is damage
        try:
            if not checksum_ok(block):
                raise HeaderError("header checksum does not match")
            size = number(block[124:136])
            tflag = block[156:157]
            if tflag in b"xgLK" and tflag:
                if size > MAX_META_BYTES:
                    raise HeaderError(f"{tflag.decode()} header of {size} bytes exceeds {MAX_META_BYTES}")
                data = s.read(size)
                if len(data) < size or len(s.read(padding(size))) < padding(size):
                    yield from cut(f"stream ends inside a {tflag.decode()} header at byte {s.pos}", off)
                    return
                if tflag == b"x":
                    pax.update(parse_pax(data))
                elif tflag == b"g":
                    gpax.update(parse_pax(data))
                elif tflag == b"L":
                    long_name = cstr(data)
                else:
                    long_link = cstr(data)
                continue
            fields = {**gpax, **pax}
            raw_name = fields.get("path") or long_name or header_name(block)
            if "size" in fields:
                try:
                    size = int(fields["size"])
                except ValueError:
                    raise HeaderError("pax size is not a number") from None
            if size < 0:
                raise HeaderError("negative size")
            sparse = tflag == b"S" or any(k.startswith("GNU.sparse.") for k in fields)
            if tflag == b"S":
                realsize = number(block[483:495])
            else:
                realsize = int(fields.get("GNU.sparse.realsize", fields.get("GNU.sparse.size", b"0")) or 0)
            extended = tflag == b"S" and block[482] != 0
        except (HeaderError, ValueError) as exc:
            name = decode_name(header_name(block)) if cstr(block[:100]) else ""
            guess = split_name(name)[0] if name else None
            g = state["group"]
            nxt, nxt_off, data_blocks = resync()
            skipped = nxt_off - off
            nxt_key = None
            if nxt is not None and nxt[156:157] not in b"xgLK":
                nxt_key = split_name(decode_name(header_name(nxt)))[0]
            msg = (f"damaged tar header at byte {off} ({exc}; name field reads {name!r}); "
                   + (f"resynchronised at byte {nxt_off}, {skipped} bytes skipped" if nxt is not None
                      else f"no valid header until the end at byte {nxt_off}, {skipped} bytes skipped"))
            # Every aligned block up to nxt failed as a header, so a found header means only the damaged
            # member's bytes were skipped. At the end of the stream, more data than its size field allows
            # means later members were lost too (a shifted stream): that stretch is a shard-level record.
            try:
                own_blocks = -(-number(block[124:136]) // BLOCK)
            except HeaderError:
                own_blocks = -1
            lost_tail = nxt is None and data_blocks > own_blocks
            if guess is not None and g is not None and guess == g.key:
                if g.wanted:
                    g.fail("bad-header", msg)
            elif guess is not None and guess == nxt_key:
                yield from enter(guess, off)
                if state["group"].wanted:
                    state["group"].fail("bad-header", msg)
            else:
                lost_tail = True
            if lost_tail and off == 0 and nxt is None:
                yield shard_issue("shard", f"not a tar: no valid header in {skipped} bytes ({exc})", off)
            elif lost_tail:
                yield shard_issue("bad-header", f"{msg}; {data_blocks} data blocks skipped may have held other samples",
                                  off)
            pax, long_name, long_link = {}, None, None
            if nxt is None:
                yield from finish()
                return
            pending, pending_off = nxt, nxt_off
            continue
        link_raw = fields.get("linkpath") or long_link or cstr(block[157:257])
        pax, long_name, long_link = {}, None, None

        # a member header
        name = decode_name(raw_name) if raw_name else f"<empty name at byte {off}>"
        if extended:
            while True:  # GNU sparse extension blocks (not counted in size)
                ext_block = s.read(BLOCK)
                if len(ext_block) < BLOCK:
                    yield from enter(split_name(name)[0], off)
                    g = state["group"]
                    if g.wanted:
                        g.fail("truncated", f"tar ends inside the sparse map of {name!r} at byte {s.pos}")
                    yield from cut(f"stream ends inside the sparse map of {name!r} at byte {s.pos}", off)
                    return
                if ext_block[504] == 0:
                    break
        if meta is not None and meta.match(name):
            if tflag not in NO_DATA:
                s.skip(size + padding(size))
            yield shard_issue("meta-member", f"member {name!r} matches the metadata pattern {cfg.skip_meta!r}; "
                                             "not read", off)
            continue
        key, ext = split_name(name)
        yield from enter(key, off)
        g = state["group"]
        has_data = tflag not in NO_DATA
        problem: tuple[str, str] | None = None
        if not raw_name or "\x00" in name:
            problem = ("bad-name", f"member name {raw_name[:64]!r} is unusable")
        elif tflag in (b"1", b"2"):
            target = decode_name(link_raw)
            what = "hard link" if tflag == b"1" else "symlink"
            problem = ("link", f"{what} {name!r} -> {target!r}; links are never followed")
        elif sparse:
            problem = ("sparse", f"GNU sparse member {name!r} claims {realsize} bytes in {size} stored; not read")
        elif tflag not in REGULAR:
            kind = SPECIAL.get(tflag, f"type {tflag!r}")
            problem = ("special-file", f"{kind} member {name!r} holds no regular file data; not read")
        elif size > cfg.max_member_bytes:
            problem = ("oversize-member",
                       f"member {name!r} is {size} bytes, over max_member_bytes={cfg.max_member_bytes}")
        elif ext.rsplit(".", 1)[-1] in cfg.refuse_exts:
            problem = ("unsafe", f"member {name!r} would need unpickling or code execution; never loaded")
        elif ext in g.members:
            problem = ("corrupt", f"duplicate member {ext!r} in sample {key!r}")
        elif g.nbytes + size > SAMPLE_BYTES_FACTOR * cfg.max_member_bytes:
            problem = ("oversize-member", f"sample {key!r} holds more than {SAMPLE_BYTES_FACTOR} x "
                                          f"max_member_bytes={cfg.max_member_bytes} bytes of members")
        if problem is not None and g.wanted:
            g.fail(*problem)
        if not has_data:
            continue
        if g.wanted and g.problem is None:
            data = s.read(size)
            short = len(data) < size
            if not short:
                g.members[ext] = data
                g.nbytes += size
        else:
            short = s.skip(size) < size
        if short:
            if g.wanted:
                g.fail("truncated", f"tar ends inside member {name!r} ({size} bytes declared) at byte {s.pos}")
            yield from cut(f"stream ends inside member {name!r} at byte {s.pos}", off)
            return
        if s.skip(padding(size)) < padding(size):
            yield from cut(f"stream ends in the padding of {name!r} at byte {s.pos}", s.pos)
            return

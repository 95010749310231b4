"""A tar reader that never loses bytes silently.

:func:`scan_tar` reads a tar stream (seekable or not) block by block, parsing the 512-byte
headers itself (POSIX ustar, GNU long names ``L``/``K``, pax ``x``/``g`` headers, base-256
sizes), and yields :class:`TarSample`\\ s grouped the webdataset way (key = path up to the
first dot of the basename, ``webdataset.tariterators.base_plus_ext``; extensions lower case)
and :class:`TarIssue`\\ s in stream order. It is two generators composed, as webdataset's
``tar_file_expander`` -> ``group_by_keys``: :func:`~patchpack.sources.tarmembers.iter_members`
(headers, resynchronisation, special members, skipping) -> :func:`group_members` (samples and
records). Every byte of the stream ends up in a sample, a record, or the end-of-archive marker:

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
* **extended headers that lie** (a pax ``size`` that is not a size, disagrees with the header
  or runs past the end of a file; a malformed pax payload; one over :data:`MAX_META_BYTES`)
  -> ``bad-header`` for that member's own sample, then resynchronisation, so the samples after
  it are read; a name over :data:`MAX_NAME_BYTES` -> ``bad-name`` (see
  :mod:`patchpack.sources.tarmembers`).
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

from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator

from ..errors import ErrorRecord
from .tarblocks import Stream, decompressed, split_name
from .tarheaders import MAX_META_BYTES, MAX_NAME_BYTES
from .tarmembers import (DEFAULT_MAX_MEMBER_BYTES, MAX_ZERO_BLOCKS, HeaderDamage, ShardNote, TarEnd, TarEvent,
                         TarMember, TarScanConfig, iter_members)

__all__ = ["TarScanConfig", "TarSample", "TarIssue", "scan_tar", "group_members", "iter_members", "decompressed",
           "DEFAULT_MAX_MEMBER_BYTES", "MAX_META_BYTES", "MAX_NAME_BYTES", "MAX_ZERO_BLOCKS", "SAMPLE_BYTES_FACTOR"]

#: a sample's members together may hold at most this many times ``max_member_bytes``
SAMPLE_BYTES_FACTOR = 4


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
    """The sample being gathered: its members, or the first problem that dropped them."""

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

    def add(self, m: TarMember, ext: str, cfg: TarScanConfig) -> None:
        """Take member ``m`` (extension ``ext``): read it, or fail the sample with why not."""
        problem = m.problem or self._refusal(m, ext, cfg)
        if problem is not None:
            self.fail(*problem)
        elif self.wanted and self.problem is None and m.stream is not None:
            data = m.read()
            if len(data) == m.size:  # short: the stream ended, iter_members reports it
                self.members[ext] = data
                self.nbytes += m.size

    def _refusal(self, m: TarMember, ext: str, cfg: TarScanConfig) -> tuple[str, str] | None:
        if ext.rsplit(".", 1)[-1] in cfg.refuse_exts:
            return "unsafe", f"member {m.name!r} would need unpickling or code execution; never loaded"
        if ext in self.members:
            return "corrupt", f"duplicate member {ext!r} in sample {self.key!r}"
        if self.nbytes + m.size > SAMPLE_BYTES_FACTOR * cfg.max_member_bytes:
            return "oversize-member", (f"sample {self.key!r} holds more than {SAMPLE_BYTES_FACTOR} x "
                                       f"max_member_bytes={cfg.max_member_bytes} bytes of members")
        return None

    def outcome(self, shard: str) -> list[TarSample | TarIssue]:
        """The finished sample or its record (nothing when not wanted)."""
        if not self.wanted:
            return []
        if self.problem is not None:
            return [TarIssue(ErrorRecord(self.key, shard, "source", *self.problem), self.index, self.offset,
                             self.index)]
        return [TarSample(self.key, self.index, self.members, self.offset)]


def _entered(group: _Group | None, key: str, offset: int, want: Callable[[int], bool], shard: str
             ) -> tuple[_Group, list[TarSample | TarIssue]]:
    """The group for ``key``: ``group`` itself, or a new one after it (then its outcome too)."""
    if group is not None and group.key == key:
        return group, []
    index = group.index + 1 if group is not None else 0
    return _Group(key, index, offset, bool(want(index))), group.outcome(shard) if group is not None else []


def _shard_issue(shard: str, kind: str, message: str, offset: int, group: _Group | None) -> TarIssue:
    position = group.index + 1 if group is not None else 0
    return TarIssue(ErrorRecord(shard, shard, "source", kind, message), None, offset, position)


def _damaged_key(d: HeaderDamage, group: _Group | None) -> str | None:
    """The sample a damaged header belongs to: its name field agrees with the sample open before
    it or with the member found after it; ``None`` when neither."""
    if d.guess is not None and group is not None and d.guess == group.key:
        return d.guess
    if d.guess is not None and d.guess == d.next_key:
        return d.guess
    return None


def group_members(events: Iterable[TarEvent], shard: str, cfg: TarScanConfig | None = None,
                  want: Callable[[int], bool] | None = None) -> Iterator[TarSample | TarIssue]:
    """Samples and issues of the member events of one tar (named ``shard`` in records).

    Consecutive members with the same key form a sample; only samples with ``want(index)``
    true are read and reported; shard-level issues always come.
    """
    cfg = cfg or TarScanConfig()
    want = want or (lambda i: True)
    group: _Group | None = None
    for ev in events:
        if isinstance(ev, TarMember):
            key, ext = split_name(ev.name)
            if group is None or group.key != key:
                group, done = _entered(group, key, ev.offset, want, shard)
                yield from done
            group.add(ev, ext, cfg)
        elif isinstance(ev, HeaderDamage):
            key = _damaged_key(ev, group)
            if key is not None:
                group, done = _entered(group, key, ev.offset, want, shard)
                yield from done
                group.fail("bad-header", ev.message)
            if key is None or ev.tail_lost:
                yield _shard_issue(shard, ev.shard_kind, ev.shard_message, ev.offset, group)
        elif isinstance(ev, ShardNote):
            yield _shard_issue(shard, ev.kind, ev.message, ev.offset, group)
        else:
            yield from _ended(ev, group, shard, want)
            return


def _ended(end: TarEnd, group: _Group | None, shard: str, want: Callable[[int], bool]
           ) -> Iterator[TarSample | TarIssue]:
    """The last sample and, when the stream did not end cleanly, the shard-level record."""
    if end.member:
        group, done = _entered(group, split_name(end.member)[0], end.offset, want, shard)
        yield from done
        group.fail("truncated", end.member_message)
    if group is not None and end.open_message:
        group.fail("truncated", end.open_message)
    if group is not None:
        yield from group.outcome(shard)
    if end.message:  # a stream that ended before any member gave nothing: unreadable, not cut short
        kind = "unreadable" if end.offset == 0 and group is None else "shard"
        yield _shard_issue(shard, kind, end.message, end.offset, group)


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
    return group_members(iter_members(Stream(fileobj, cfg.chunk_bytes), cfg), shard, cfg, want)

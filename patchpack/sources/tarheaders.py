"""One tar member header with its extended headers applied, each checked before it is believed.

A pax or GNU long-name payload over :data:`MAX_META_BYTES` is skipped whole (its header's
checksum vouches for its size) and the member it belongs to is reported. A name over
:data:`MAX_NAME_BYTES` is ``bad-name`` (keyed by the header's own name field). A pax ``size``
is used only when it is plain decimal digits (at most 19), agrees with the header's own size
field unless that is 0 or at its octal maximum (writers leave it so for sizes pax carries),
and, where the stream's length is known, fits in what remains; otherwise its member is
``bad-header`` under its own key (the headers' checksums are valid, so the name is known) and
its size is not trusted (:attr:`MemberHeader.untrusted_size`: the walk resynchronises on the
next valid header instead). A malformed pax payload makes its member ``bad-header`` the same
way (when the header's own 100-byte name field is full, the name it gives may be cut short
and the real one was in the lost pax header: :attr:`MemberHeader.name_uncertain`); a malformed
or oversize global (``g``) header is a shard-level note.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .tarblocks import (NO_DATA, OCTAL_SIZE_MAX, HeaderError, Stream, cstr, decode_name, header_name, number, padding,
                        parse_pax, pax_size)

__all__ = ["Extended", "MemberHeader", "read_extended", "member_header", "EXTENDED_TYPES", "MAX_META_BYTES",
           "MAX_NAME_BYTES"]

#: Cap on a pax header or GNU long-name payload (1 MiB).
MAX_META_BYTES = 2**20
#: Longest member name (bytes) used as a key (4096, Linux's PATH_MAX); a longer one is ``bad-name``.
MAX_NAME_BYTES = 4096
_NO_FIELDS: dict = {}

#: Type flags of extended headers: pax (``x``), global pax (``g``), GNU long name and link.
EXTENDED_TYPES = (b"x", b"g", b"L", b"K")


@dataclass(frozen=True)
class Extended:
    """What the extended headers before a member said: pax records (``gpax``: global ones,
    which persist), GNU long name and link, and a problem that makes the member unreadable."""

    gpax: dict = field(default_factory=dict)
    pax: dict = field(default_factory=dict)
    long_name: bytes | None = None
    long_link: bytes | None = None
    problem: str = ""  # the member is ``bad-header`` for this reason
    size_lost: bool = False  # a pax header that may have held its size was not read
    note: str = ""  # a global header that was not applied (a shard-level record)
    offset: int = -1  # where the extended headers for the next member began; -1: none pending

    def next(self) -> "Extended":
        return Extended(self.gpax)


@dataclass(slots=True)
class MemberHeader:
    """A member header with its extended headers applied."""

    offset: int
    tflag: bytes
    name: str
    raw_name: bytes
    size: int
    link: bytes
    sparse_size: int | None  # the size a sparse member claims; None when not sparse
    sparse_map_blocks: bool  # old GNU sparse map continues in extension blocks
    problem: tuple[str, str] | None  # from its extended headers
    untrusted_size: bool  # skip nothing by size: resynchronise on the next valid header
    name_uncertain: bool  # a lost pax header may have held the name; the 100-byte name field is full


def read_extended(s: Stream, off: int, block: bytes, size: int, ext: Extended) -> Extended | None:
    """``ext`` with the payload of the extended header ``block`` (at ``off``, ``size`` bytes)
    applied; ``None`` when the stream ends inside it."""
    tflag = block[156:157]
    kind = {b"x": "pax", b"g": "global pax", b"L": "GNU long name", b"K": "GNU long link"}[tflag]
    if size > MAX_META_BYTES:
        if s.skip(size + padding(size)) < size + padding(size):
            return None
        why = f"its {kind} header at byte {off} of {size} bytes exceeds {MAX_META_BYTES}; not read"
        return replace(ext, note=f"{why}: its records are not applied") if tflag == b"g" \
            else replace(ext, problem=why, size_lost=tflag == b"x")
    data = s.read(size)
    if len(data) < size or s.skip(padding(size)) < padding(size):
        return None
    if tflag == b"L":
        return replace(ext, long_name=cstr(data))
    if tflag == b"K":
        return replace(ext, long_link=cstr(data))
    try:
        records = parse_pax(data)
    except HeaderError as exc:
        why = f"its {kind} header at byte {off} is malformed ({exc})"
        return replace(ext, note=f"{why}: its records are not applied") if tflag == b"g" \
            else replace(ext, problem=why, size_lost=True)
    return replace(ext, gpax={**ext.gpax, **records}) if tflag == b"g" else replace(ext, pax={**ext.pax, **records})


def checked_size(size: int, fields: dict, tflag: bytes, remaining: int | None) -> tuple[int, str]:
    """The member's data size and, when a pax size cannot be trusted, why."""
    if "size" not in fields or tflag in NO_DATA:
        return size, ""
    try:
        claimed = pax_size(fields["size"])
    except HeaderError as exc:
        return size, str(exc)
    if 0 < size < OCTAL_SIZE_MAX and claimed != size:
        return size, f"pax size {claimed} disagrees with the header's size field {size}"
    if remaining is not None and claimed > remaining:
        return size, f"pax size {claimed} is more than the {remaining} bytes left in the stream"
    return claimed, ""


def member_header(off: int, block: bytes, size: int, ext: Extended, remaining: int | None) -> MemberHeader:
    """The member header ``block`` (its size field says ``size``) with ``ext`` applied. Raises
    HeaderError on a damaged field."""
    tflag = block[156:157]
    fields = {**ext.gpax, **ext.pax} if ext.gpax or ext.pax else _NO_FIELDS
    raw_name = fields.get("path") or ext.long_name or header_name(block)
    size, untrusted = checked_size(size, fields, tflag, remaining)
    sparse = tflag == b"S" or (fields is not _NO_FIELDS and any(k.startswith("GNU.sparse.") for k in fields))
    if tflag == b"S":
        realsize: int | None = number(block[483:495])
    elif sparse:
        realsize = int(fields.get("GNU.sparse.realsize", fields.get("GNU.sparse.size", b"0")) or 0)
    else:
        realsize = None
    problem = None
    if ext.problem or untrusted:
        problem = ("bad-header", ext.problem or untrusted)
    elif len(raw_name) > MAX_NAME_BYTES:
        problem = ("bad-name", f"member name of {len(raw_name)} bytes is longer than {MAX_NAME_BYTES}")
    if ext.problem or len(raw_name) > MAX_NAME_BYTES:  # keyed by the header's own name field
        raw_name = header_name(block)
    name = decode_name(raw_name) if raw_name else f"<empty name at byte {off}>"
    return MemberHeader(off, tflag, name, raw_name, size, fields.get("linkpath") or ext.long_link or cstr(block[157:257]),
                   realsize, tflag == b"S" and block[482] != 0, problem, bool(untrusted) or ext.size_lost,
                        ext.size_lost and block[99] != 0)

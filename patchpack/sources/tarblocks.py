"""Tar blocks, read by hand: 512-byte header fields, checksums, pax records, stream wrappers.

The low level of :mod:`patchpack.sources.tarscan` (POSIX ustar / GNU / pax, as in
``tarfile``): numeric fields in octal or GNU base-256, the header checksum (unsigned or the
signed variant old writers used), pax ``"len key=value\\n"`` records (read strictly: the length
and numeric values are plain decimal digits), and :class:`Stream`, exact reads and bounded skips
over any binary file object with the byte offset kept and one block of push-back.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import struct
import zlib
from typing import BinaryIO

from .wds import base_plus_ext

__all__ = ["BLOCK", "ZERO", "REGULAR", "SPECIAL", "NO_DATA", "HeaderError", "Stream", "decompressed", "cstr", "number",
           "checksum_ok", "is_header", "header_name", "parse_pax", "pax_size", "decode_name", "split_name", "padding",
           "OCTAL_SIZE_MAX", "MAX_SIZE_DIGITS"]

BLOCK = 512
ZERO = bytes(BLOCK)
REGULAR = {b"0", b"\x00", b"7"}
SPECIAL = {b"3": "character device", b"4": "block device", b"5": "directory", b"6": "FIFO"}
_CHKSUM_FIELD = re.compile(rb" *[0-7]{1,8}[\x00 ]*")
_UNSIGNED = struct.Struct("148B8x356B")
_SIGNED = struct.Struct("148b8x356b")
NO_DATA = {b"1", b"2", b"3", b"4", b"5", b"6"}  # types whose size field carries no data blocks
#: largest size an 11-digit octal header field holds; writers put larger sizes in pax (or base-256)
OCTAL_SIZE_MAX = 8**11 - 1
#: a pax size has at most this many digits (2**63 - 1, the largest file offset, has 19)
MAX_SIZE_DIGITS = 19

class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read) followed by the rest of ``f``; read-only, not seekable."""

    def __init__(self, head: bytes, f: BinaryIO):
        self.head, self.f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.f.read(len(b))
        b[:len(data)] = data
        return len(data)


def decompressed(fileobj: BinaryIO) -> BinaryIO:
    """``fileobj`` itself, or a streaming decompressor over it when it starts like gzip, bzip2
    or xz (as ``tarfile`` mode ``"r|*"`` accepts)."""
    head = fileobj.read(6)
    rest = io.BufferedReader(_Prefixed(head, fileobj))
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(rest, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(rest, "rb")
    if len(head) < 6 or not _seekable(fileobj):
        return rest
    fileobj.seek(-len(head), 1)  # a plain seekable file stays seekable (skips seek)
    return fileobj


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class HeaderError(ValueError):
    pass


class Stream:
    """Exact reads and bounded skips over a file object, tracking the byte offset."""

    def __init__(self, fileobj: BinaryIO, chunk: int):
        self.f, self.chunk, self.pos = fileobj, chunk, 0
        self.end: int | None = None
        self.error = ""
        self.back = b""  # bytes given back by unread(), read again first
        try:
            if _seekable(fileobj) and not isinstance(fileobj, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)):
                here = fileobj.tell()
                self.end = fileobj.seek(0, 2)
                fileobj.seek(here)
                self.end -= here
        except (AttributeError, OSError, ValueError):
            self.end = None

    def _chunk(self, n: int) -> bytes:
        """Up to ``n`` bytes; a stream error (cut compressed data, I/O) ends the stream, kept in ``error``."""
        if self.error:
            return b""
        try:
            return self.f.read(n)
        except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return b""

    def unread(self, data: bytes) -> None:
        """Give ``data`` (the bytes just read) back: the next read starts with them."""
        self.back = data + self.back
        self.pos -= len(data)

    def remaining(self) -> int | None:
        """Bytes left in the stream when its length is known (a seekable file), else ``None``."""
        return None if self.end is None else self.end - self.pos

    def _take_back(self, n: int) -> bytes:
        head, self.back = self.back[:n], self.back[n:]
        self.pos += len(head)
        return head

    def read(self, n: int) -> bytes:
        if self.back:
            head = self._take_back(n)
            return head + self.read(n - len(head)) if len(head) < n else head
        parts, got = [], 0
        while got < n:
            b = self._chunk(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        self.pos += got
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Skip up to ``n`` bytes; returns how many were there."""
        if self.back:
            head = len(self._take_back(n))
            return head + self.skip(n - head) if head < n else head
        if self.end is not None:
            step = max(0, min(n, self.end - self.pos))
            self.f.seek(step, 1)
            self.pos += step
            return step
        done = 0
        while done < n:
            b = self._chunk(min(self.chunk, n - done))
            if not b:
                break
            done += len(b)
        self.pos += done
        return done


def cstr(field_: bytes) -> bytes:
    return field_.split(b"\x00", 1)[0]


def number(field_: bytes) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256
        if field_[0] != 0x80:
            raise HeaderError("negative base-256 number")
        return int.from_bytes(field_[1:], "big")
    text = cstr(field_).strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise HeaderError(f"numeric field {field_!r} is not octal") from None


def checksum_ok(block: bytes) -> bool:
    """POSIX header checksum, unsigned or (old writers) signed byte sum with the field as spaces."""
    if not _CHKSUM_FIELD.fullmatch(block[148:156]):
        return False
    stored = int(block[148:156].strip(b" \x00") or b"0", 8)
    unsigned = 256 + sum(_UNSIGNED.unpack_from(block))
    return stored == unsigned or stored == 256 + sum(_SIGNED.unpack_from(block))


def is_header(block: bytes) -> bool:
    return (len(block) == BLOCK and block != ZERO and checksum_ok(block)
            and bool(cstr(block[:100]) or block[156:157] in b"xgLK"))


def header_name(block: bytes) -> bytes:
    name = cstr(block[:100])
    if block[257:263] == b"ustar\x00":  # POSIX: prefix field; GNU "ustar  " has none
        prefix = cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return name


def parse_pax(buf: bytes) -> dict[str, bytes]:
    """The ``"len key=value\\n"`` records of a pax payload (a later record wins).

    Raises:
        HeaderError: a record whose length is not plain decimal digits, does not fit, or
            does not end in a newline; a record without ``=`` or with an empty key; records
            after NUL padding; a payload without any record.
    """
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(buf):
        if buf[pos:pos + 1] == b"\x00":  # NUL padding may end the payload, nothing may follow it
            if buf[pos:].strip(b"\x00"):
                raise HeaderError("pax records after a NUL byte")
            break
        sp = buf.find(b" ", pos, pos + 24)
        if sp < 0 or not buf[pos:sp].isdigit():
            raise HeaderError("pax record without a decimal length")
        length = int(buf[pos:sp])
        rec = buf[pos:pos + length]
        if length <= sp - pos + 1 or len(rec) != length or not rec.endswith(b"\n") or b"=" not in rec:
            raise HeaderError("malformed pax record")
        k, v = rec[sp - pos + 1:-1].split(b"=", 1)
        if not k:
            raise HeaderError("pax record with an empty keyword")
        out[k.decode("utf-8", "backslashreplace")] = v
        pos += length
    if buf and not out:
        raise HeaderError("pax header holds no records")
    return out


def pax_size(value: bytes) -> int:
    """A pax ``size`` value: plain decimal digits, at most :data:`MAX_SIZE_DIGITS` of them.

    Raises:
        HeaderError: anything else (a sign, spaces, ``_``, letters, empty, 20 digits or more).
    """
    if not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
        raise HeaderError(f"pax size {value[:24]!r} is not a size (decimal digits, at most {MAX_SIZE_DIGITS})")
    return int(value)


def decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def split_name(name: str) -> tuple[str, str]:
    key, ext = base_plus_ext(name)
    if key is None:
        return name, ""
    return key, ext.lower()


def padding(size: int) -> int:
    return -size % BLOCK

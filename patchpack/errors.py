"""Typed, counted error records: every input is either packed or reported.

A stage that cannot handle a sample raises :class:`SampleError`; the loader turns
it into an :class:`ErrorRecord` (stats + optional JSONL file) under the default
``"record"`` policy and goes on, or re-raises under ``"raise"``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import IO

__all__ = ["ErrorRecord", "SampleError", "ResumeError", "ErrorKind", "Scope", "ERROR_KINDS", "ERROR_POLICIES"]

class Scope(str, Enum):
    """What an error record is about: one sample, a whole shard, or the configuration."""

    SAMPLE = "sample"
    SHARD = "shard"
    CONFIG = "config"


class ErrorKind(str, Enum):
    """The documented kinds of :class:`ErrorRecord` (a record may carry another kind, e.g. from a
    user's reader: it then counts as a sample error). Each kind has a :attr:`scope` and a
    :attr:`description`; the members compare equal to their strings (``ErrorKind.SHARD == "shard"``)."""

    EMPTY = ("empty", "zero-byte sample payload")
    TRUNCATED = ("truncated", "file ends early (image, video or tar member)")
    CORRUPT = ("corrupt", "bytes do not decode, a file or folder that cannot be read, or two sidecars giving "
               "one member")
    NOT_MEDIA = ("not-media", "payload is not an image or video although its extension says so")
    TOO_LARGE = ("too-large", "dimensions (declared or decoded) exceed the decompression-bomb limit")
    TOO_SLOW = ("too-slow", "decoding would take more work than the per-sample bound allows (e.g. a JPEG of "
                "thousands of progressive scans)")
    UNSAFE = ("unsafe", "member would need unpickling or code execution; never loaded")
    NO_MEDIA = ("no-media", "sample has no image or video member")
    NO_FRAMES = ("no-frames", "video has no decodable frames")
    NO_VIDEO_STREAM = ("no-video-stream", "container has no video stream (e.g. audio only)")
    UNSUPPORTED = ("unsupported", "codec or format FFmpeg/Pillow cannot open")
    BAD_LABEL = ("bad-label", "label member present but not integers in [0, 2**31-1] (-1 alone = unlabelled), or "
                 "a hostile label list (nested, -1 among labels, over 4096 labels)")
    BAD_FIELD = ("bad-field", "a text field missing (when required), not UTF-8, holding NUL bytes or a lone "
                 "surrogate, over its byte cap, not a string, or in invalid JSON")
    OVERSIZE = ("oversize", "more tokens than the sequence length (oversize='skip')")
    SHARD = ("shard", "the shard could not be read to its end (damaged stream, truncated tar, unreadable parquet, a "
             "failing command, a remote read that failed after its retries)", Scope.SHARD)
    UNREADABLE = ("unreadable", "the shard could not be opened or read at all (missing, no access, not a "
                  "shard); nothing of it was used", Scope.SHARD)
    CHECKSUM = ("checksum", "shard bytes differ from the manifest's sha256", Scope.SHARD)
    BAD_HEADER = ("bad-header", "damaged tar header (checksum or field), or a pax header that lies (a size that is "
                  "not a size, disagrees with the header or runs past the end; a malformed or oversize payload); "
                  "the reader resynchronised on the next valid header")
    LINK = ("link", "symlink or hard-link tar member (never followed); in a folder: a dangling link, a loop, a "
            "folder link inside the root (its files are read at their own path), a link leaving the root without "
            "follow_outside_links, or a second way into one folder")
    HIDDEN = ("hidden", "folder source: a hidden file or folder (name starts with '.'); not read")
    UNREAD_FILES = ("unread-files", "folder source: files that are neither media nor the sidecar of a media file "
                    "(same stem), e.g. README.md, an orphan x.txt, .DS_Store; one record per folder with their "
                    "count and first names; not read", Scope.SHARD)
    SPECIAL_FILE = ("special-file", "FIFO, device, directory or other non-regular member or file; never read")
    SPARSE = ("sparse", "GNU sparse tar member; its claimed size is never materialised")
    OVERSIZE_MEMBER = ("oversize-member", "tar member or folder file larger than max_member_bytes, a sample whose "
                       "members together exceed 4 x max_member_bytes, or a parquet row group or Arrow record batch "
                       "over 4 x max_member_bytes (uncompressed); never read")
    BAD_NAME = ("bad-name", "member name or key that cannot be used as a key (empty, NUL, over 4096 bytes)")
    META_MEMBER = ("meta-member", "tar member named like webdataset metadata (__name__); not a sample, not read")
    BAD_ROW = ("bad-row", "patchpack shard row inconsistent with itself (token count, grid, positions, labels, "
               "text fields or token ids, Arrow layout) or with the budget; a packed row's other examples, dropped "
               "with it, get one record each")
    FAILED = ("failed", "an exception no stage typed, caught so the stream goes on (type and message in the "
              "record)")

    def __new__(cls, value: str, description: str, scope: Scope = Scope.SAMPLE) -> "ErrorKind":
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        member.scope = scope
        return member

    def __str__(self) -> str:
        return self.value

    @classmethod
    def scope_of(cls, kind: str) -> Scope:
        """The scope of ``kind``; a kind that is not documented is about one sample."""
        try:
            return cls(kind).scope
        except ValueError:
            return Scope.SAMPLE


#: kind -> description, for documentation and ``--help``.
ERROR_KINDS = {k.value: k.description for k in ErrorKind}

ERROR_POLICIES = ("record", "raise")

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class ErrorRecord:
    """One failed sample.

    Attributes:
        key: the sample key (``__key__``), or the shard url for shard-level errors.
        shard: shard url or folder the sample came from.
        stage: pipeline stage that failed: ``source``, ``decode``, ``fit``, ``pack``.
        kind: short machine-readable kind, see :class:`ErrorKind`.
        message: human-readable detail.
    """

    key: str
    shard: str
    stage: str
    kind: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", _ADDRESS.sub("", self.message))
        object.__setattr__(self, "kind", str(self.kind))

    @property
    def scope(self) -> Scope:
        """Whether the record is about one sample, a whole shard or the configuration."""
        return ErrorKind.scope_of(self.kind)

    def to_dict(self) -> dict:
        return asdict(self)

    def write_jsonl(self, fh: IO[str]) -> None:
        fh.write(json.dumps(self.to_dict()) + "\n")


class SampleError(Exception):
    """Raised by a stage for a bad sample; carries what an :class:`ErrorRecord` needs."""

    def __init__(self, kind: str, message: str, *, key: str = "", shard: str = "", stage: str = "decode"):
        message = _ADDRESS.sub("", message)  # object addresses would make error files differ run to run
        super().__init__(f"[{kind}] {key or '?'}: {message}")
        self.kind, self.message, self.key, self.shard, self.stage = kind, message, key, shard, stage

    def record(self, key: str | None = None, shard: str | None = None) -> ErrorRecord:
        return ErrorRecord(key or self.key, shard or self.shard, self.stage, self.kind, self.message)


class ResumeError(ValueError):
    """A saved loader state cannot be resumed: damaged, impossible, or for other shards or
    options. Its message is one line naming the field or the shard."""

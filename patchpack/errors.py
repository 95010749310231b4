"""Typed, counted error records: every input is either packed or reported.

A stage that cannot handle a sample raises :class:`SampleError`; the loader turns
it into an :class:`ErrorRecord` (stats + optional JSONL file) under the default
``"record"`` policy and goes on, or re-raises under ``"raise"``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import IO

__all__ = ["ErrorRecord", "SampleError", "ERROR_KINDS", "ERROR_POLICIES"]

#: Known error kinds (a record may carry another kind; these are the documented ones).
ERROR_KINDS = {
    "empty": "zero-byte sample payload",
    "truncated": "file ends early (image, video or tar member)",
    "corrupt": "bytes do not decode",
    "not-media": "payload is not an image or video although its extension says so",
    "too-large": "dimensions exceed the decompression-bomb limit",
    "unsafe": "member would need unpickling or code execution; never loaded",
    "no-media": "sample has no image or video member",
    "no-frames": "video has no decodable frames",
    "no-video-stream": "container has no video stream (e.g. audio only)",
    "unsupported": "codec or format FFmpeg/Pillow cannot open",
    "bad-label": "label member present but not parseable",
    "oversize": "more tokens than the sequence length (oversize='skip')",
    "shard": "the shard itself could not be read (missing, truncated tar)",
    "bad-header": "damaged tar header (checksum or field); the reader resynchronised on the next valid header",
    "link": "symlink or hard-link member or file; links are never followed",
    "special-file": "FIFO, device, directory or other non-regular member or file; never read",
    "sparse": "GNU sparse tar member; its claimed size is never materialised",
    "oversize-member": "tar member or folder file larger than max_member_bytes, or a sample whose members "
                       "together exceed 4 x max_member_bytes; never read",
    "bad-name": "member name that cannot be used as a key (empty, NUL)",
    "meta-member": "tar member named like webdataset metadata (__name__); not a sample, not read",
    "bad-row": "patchpack shard row inconsistent with itself or the budget (token count, grid, dtype)",
    "checksum": "shard bytes differ from the manifest's sha256",
    "failed": "an exception no stage typed, caught so the stream goes on (type and message in the record)",
}

ERROR_POLICIES = ("record", "raise")

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class ErrorRecord:
    """One failed sample.

    Attributes:
        key: the sample key (``__key__``), or the shard url for shard-level errors.
        shard: shard url or folder the sample came from.
        stage: pipeline stage that failed: ``source``, ``decode``, ``fit``, ``pack``.
        kind: short machine-readable kind, see :data:`ERROR_KINDS`.
        message: human-readable detail.
    """

    key: str
    shard: str
    stage: str
    kind: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", _ADDRESS.sub("", self.message))

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

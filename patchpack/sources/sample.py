"""What a source yields: raw samples, stored (already tokenized) examples and shard tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from ..errors import ErrorRecord

__all__ = ["Sample", "StoredSample", "ShardTask", "UNSAFE_EXTS", "unsafe_record"]

#: Member extensions that are never decoded (pickles, torch checkpoints, native code).
UNSAFE_EXTS = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "ckpt", "joblib", "so", "dll", "pyc", "pyo"})


@dataclass
class Sample:
    """One sample's raw members.

    Attributes:
        key: the sample key (tar: path up to the first dot of the basename, as webdataset;
            folder: the media file's path relative to the root, extension included, e.g.
            ``cat/2021.05.01.jpg``).
        shard: tar url or folder path it came from.
        members: extension (lower case, e.g. ``"jpg"``, ``"cls"``) -> raw bytes (a folder
            example: its media file and its sidecars).
        index: 0-based position of the sample in its shard.
    """

    key: str
    shard: str
    members: dict[str, bytes] = field(default_factory=dict)
    index: int = 0


@dataclass
class StoredSample(Sample):
    """An example read from a patchpack shard: already fitted and tokenized.

    ``members`` is empty; ``tokens`` (a :class:`patchpack.tokenize.Tokens`) holds zero-copy
    views; ``patch_size`` and ``tubelet`` are the shard's geometry.
    """

    tokens: Any = None
    patch_size: int = 0
    tubelet: int = 1


class ShardTask(NamedTuple):
    """Read ``url`` and keep the samples whose ``index % stride == offset``."""

    url: str
    offset: int = 0
    stride: int = 1

    def owns(self, index: int) -> bool:
        return index % self.stride == self.offset


def unsafe_record(key: str, shard: str, members: Iterable[str]) -> ErrorRecord | None:
    """An ``unsafe`` record when a member would need unpickling or code execution, else ``None``."""
    bad = sorted(m for m in members if m.rsplit(".", 1)[-1].lower() in UNSAFE_EXTS)
    if bad:
        return ErrorRecord(key, shard, "source", "unsafe", f"member(s) {', '.join(bad)} are never loaded")
    return None

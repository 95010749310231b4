"""patchpack shards: uncompressed Arrow IPC files of tokenized examples, read zero-copy.

A shard is an Arrow IPC *file* (random-access format, no compression) so that it can be
memory-mapped and every example's tokens read as a numpy view onto the mapping: no
decode, no copy, no unpickling. Two layouts, named in the schema metadata
``patchpack.format``:

``"examples"`` (:func:`example_schema`): one row per example at its fitted resolution,
before any token dropping (so dropping and packing stay random per epoch):

=================  ===============================  =====================================================
column             type                             meaning
=================  ===============================  =====================================================
``key``            string                           sample key
``label``          int64                            target, -1 when unknown
``grid``           fixed_size_list<int32>[3]        token grid ``(T, H, W)``
``patch_size``     int32                            ``p`` in pixels
``tubelet``        int32                            ``pt`` in frames (1 for images)
``channels``       int32                            ``C``
``num_tokens``     int32                            ``N`` tokens stored
``token_dim``      int32                            ``D = pt*p*p*C``
``tokens``         large_binary                     uint8 ``[N, D]``, row-major (see :mod:`patchpack.tokenize`)
``positions``      large_binary, nullable           int32 little-endian ``[N, 3]`` ``(t, y, x)``; null
                                                    means the full grid in raster order
``source_size``    fixed_size_list<int32>[2]        original ``(height, width)`` in pixels
``source_shard``   string                           input shard the example came from
``meta``           string                           other per-example facts as JSON (may be ``{}``)
=================  ===============================  =====================================================

``"packed"`` (:func:`packed_schema`): one row per packed sequence (after dropping and
packing): ``tokens`` / ``positions`` hold the sequence's examples back to back and list
columns ``keys``, ``labels``, ``grids``, ``lengths``, ``source_tokens``, ``source_sizes``,
``source_shards``, ``metas`` describe its slots in order.

Geometry (``patch_size``, ``tubelet``, ``channels``) and the producing configuration are
also in the schema metadata (``patchpack.*`` keys, JSON values).

Writes are atomic: :class:`ShardWriter` writes ``.NAME.tmp-*`` in the destination folder,
fsyncs it and renames it over ``NAME`` on :meth:`~ShardWriter.close`; an interrupted writer
leaves only a temporary file, never a partial shard.
"""


from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..tokenize import grid_positions
from .manifest import SHARD_SUFFIX, sha256_file

__all__ = [
    "FORMAT_VERSION", "SHARD_SUFFIX", "example_schema", "packed_schema", "ShardFormatError", "ShardInfo",
    "sha256_file", "full_positions",
]

FORMAT_VERSION = 1
_TMP_MARK = ".tmp-"

_GRID = pa.list_(pa.int32(), 3)
_SIZE = pa.list_(pa.int32(), 2)

if sys.byteorder != "little":  # pragma: no cover - the format is little-endian on disk
    raise ImportError("patchpack shards need a little-endian machine")


class ShardFormatError(ValueError):
    """A file is not a readable patchpack shard (wrong schema, version or layout)."""


def example_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """Schema of an ``"examples"`` shard (see module doc); ``metadata`` goes to ``patchpack.*`` keys."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("grid", _GRID, nullable=False),
            pa.field("patch_size", pa.int32(), nullable=False),
            pa.field("tubelet", pa.int32(), nullable=False),
            pa.field("channels", pa.int32(), nullable=False),
            pa.field("num_tokens", pa.int32(), nullable=False),
            pa.field("token_dim", pa.int32(), nullable=False),
            pa.field("tokens", pa.large_binary(), nullable=False),
            pa.field("positions", pa.large_binary(), nullable=True),
            pa.field("source_size", _SIZE, nullable=False),
            pa.field("source_shard", pa.string(), nullable=False),
            pa.field("meta", pa.string(), nullable=False),
        ],
        metadata=_schema_metadata("examples", metadata),
    )


def packed_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """Schema of a ``"packed"`` shard: one row per packed sequence (see module doc)."""
    return pa.schema(
        [
            pa.field("keys", pa.list_(pa.string()), nullable=False),
            pa.field("labels", pa.list_(pa.int64()), nullable=False),
            pa.field("grids", pa.list_(_GRID), nullable=False),
            pa.field("lengths", pa.list_(pa.int32()), nullable=False),
            pa.field("source_tokens", pa.list_(pa.int32()), nullable=False),
            pa.field("token_dim", pa.int32(), nullable=False),
            pa.field("tokens", pa.large_binary(), nullable=False),
            pa.field("positions", pa.large_binary(), nullable=False),
            pa.field("source_sizes", pa.list_(_SIZE), nullable=False),
            pa.field("source_shards", pa.list_(pa.string()), nullable=False),
            pa.field("metas", pa.list_(pa.string()), nullable=False),
        ],
        metadata=_schema_metadata("packed", metadata),
    )


def _schema_metadata(kind: str, extra: dict[str, Any] | None) -> dict[bytes, bytes]:
    md = {"format": kind, "version": FORMAT_VERSION, **(extra or {})}
    return {f"patchpack.{k}".encode(): json.dumps(v, sort_keys=True).encode() for k, v in md.items()}


def _decode_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The ``patchpack.*`` schema metadata, decoded and type-checked.

    Raises:
        ShardFormatError: a value that is not JSON (or nested too deep), or a known key of the
            wrong type (``config`` not an object; ``patch_size``, ``tubelet``, ``channels``,
            ``version`` not integers in range).
    """
    out: dict[str, Any] = {}
    try:
        for k, v in (schema.metadata or {}).items():
            k = k.decode()
            if k.startswith("patchpack."):
                out[k[len("patchpack.") :]] = json.loads(v.decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ShardFormatError(f"undecodable patchpack metadata ({type(exc).__name__})") from None
    for key, low, high in (("version", 0, 2**31), ("patch_size", 1, 2**16), ("tubelet", 1, 2**16), ("channels", 1, 4)):
        v = out.get(key)
        if v is not None and (type(v) is not int or not low <= v <= high):
            raise ShardFormatError(f"patchpack metadata {key}={str(v)[:40]!r} is not an integer in [{low}, {high}]")
    if not isinstance(out.get("config", {}), dict):
        raise ShardFormatError("patchpack metadata config is not an object")
    return out




@dataclass(frozen=True)
class ShardInfo:
    """What a closed writer produced: ``rows`` (examples or sequences), ``examples``,
    ``tokens`` stored, file ``bytes`` and its ``sha256``."""

    path: str
    rows: int
    examples: int
    tokens: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return dict(
            path=self.path, rows=self.rows, examples=self.examples, tokens=self.tokens,
            bytes=self.bytes, sha256=self.sha256,
        )


def _meta_json(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k not in ("source_size", "source_shard")}
    return json.dumps(rest, sort_keys=True, default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o.tolist() if isinstance(o, np.ndarray) else o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _source_size(meta: dict[str, Any]) -> list[int]:
    s = meta.get("source_size")
    return [int(s[0]), int(s[1])] if s is not None else [0, 0]



@functools.lru_cache(maxsize=8192)
def full_positions(grid: tuple[int, int, int]) -> np.ndarray:
    """Read-only raster positions of a full grid (shared by every example of that grid)."""
    pos = grid_positions(*grid)
    pos.setflags(write=False)
    return pos



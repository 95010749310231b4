"""patchpack shards: uncompressed Arrow IPC files of tokenized examples, read zero-copy.

A shard is an Arrow IPC *file* (random-access format, no compression) so that it can be
memory-mapped and every example's tokens read as a numpy view onto the mapping: no
decode, no copy, no unpickling. Two layouts, named in the schema metadata
``patchpack.format``; this is format version :data:`FORMAT_VERSION` (2).

``"examples"`` (:func:`example_schema`): one row per example at its fitted resolution,
before any token dropping (so dropping and packing stay random per epoch):

==================  ===============================  ====================================================
column              type                             meaning
==================  ===============================  ====================================================
``key``             string                           sample key
``label_set``       list<int64>                      every label of the example, in order, no repeats,
                                                     each in ``[0, 2**31 - 1]``; empty when unknown. The
                                                     single-class ``label`` follows from it (see
                                                     :class:`~patchpack.tokenize.Tokens`)
``grid``            fixed_size_list<int32>[3]        token grid ``(T, H, W)``
``patch_size``      int32                            ``p`` in pixels (the metadata's)
``tubelet``         int32                            ``pt`` in frames, 1 for images (the metadata's)
``channels``        int32                            ``C`` (the metadata's)
``num_tokens``      int32                            ``N`` tokens stored, ``1 <= N <= T*H*W``
``token_dim``       int32                            ``D = pt*p*p*C``
``tokens``          large_binary                     uint8 ``[N, D]``, row-major (see :mod:`patchpack.tokenize`)
``positions``       large_binary, nullable           int32 little-endian ``[N, 3]`` ``(t, y, x)``, distinct
                                                     cells of the grid; null means the full grid in raster order
``source_size``     fixed_size_list<int32>[2]        original ``(height, width)`` in pixels
``source_shard``    string                           input shard the example came from
``meta``            string                           other per-example facts as a JSON object (may be ``{}``)
``field:NAME``      large_string, nullable           text field ``NAME`` (one column per name in
                                                     ``patchpack.fields``); null: the sample has none
``text_ids:NAME``   list<int32>, nullable            token ids of field ``NAME`` (one column per name in
                                                     ``patchpack.text``), unpadded: at most ``text_len``
                                                     ids in ``[0, vocab_size)``; null exactly when the
                                                     field is null
==================  ===============================  ====================================================

``"packed"`` (:func:`packed_schema`): one row per packed sequence (after dropping and
packing): ``tokens`` / ``positions`` hold the sequence's slots back to back and list
columns describe its slots in order: ``keys``, ``label_sets`` (list<list<int64>>),
``grids``, ``lengths`` (``1 <= n <= T*H*W`` each, their sum the row's tokens),
``source_tokens`` (tokens before dropping, ``n <= s <= T*H*W``), ``source_sizes``,
``source_shards``, ``metas``, ``field:NAME`` (list<large_string>) and ``text_ids:NAME``
(list<list<int32>>). Every slot's positions are distinct cells of its own grid.

Text fields are one nullable column per name (not a map or a JSON blob): each is a plain
Arrow string column any Arrow tool reads by name, and a slot's value is one slice of one
buffer. A field value is what the online field reader
(:mod:`patchpack.sources.fields`) accepts (:func:`field_problem`): valid UTF-8, no NUL byte,
at most the shard's ``field_max_bytes`` bytes (the cap it was written with, the loader's
``field_max_bytes``, default 64 KiB; at most :data:`FIELD_MAX_BYTES_LIMIT`, 16 MiB).

Schema metadata (``patchpack.*`` keys, JSON values): ``format`` (``"examples"`` /
``"packed"``), ``version`` (2), ``patch_size``, ``tubelet``, ``channels``, ``fields``
(the text field names, in column order, ``[]`` for none), ``field_max_bytes`` (the cap on
one field value), ``text`` (``null``, or ``{"tokenizer", "text_len", "vocab_size",
"fields"}``: :class:`TextIdsSpec`) and the producing run's ``config`` and ``input``.

Version 1 shards (before label sets and text) still read: their ``label`` (examples) /
``labels`` (packed) int64 columns give a label set of that one label (none for -1), and
they have no text fields. A version newer than :data:`FORMAT_VERSION` is refused in one line.

Writes are atomic: :class:`~patchpack.storage.writer.ShardWriter` writes ``.NAME.tmp-*`` in
the destination folder, fsyncs it and renames it over ``NAME`` on close; an interrupted writer
leaves only a temporary file, never a partial shard.
"""


from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..sources.fields import DEFAULT_FIELD_MAX_BYTES
from ..sources.labels import LABEL_MAX
from ..tokenize import grid_positions
from .manifest import SHARD_SUFFIX, sha256_file

__all__ = [
    "FORMAT_VERSION", "READ_VERSIONS", "SHARD_SUFFIX", "FIELD_MAX_BYTES_LIMIT", "MAX_FIELDS", "MAX_TEXT_LEN",
    "GRID_TYPE", "SIZE_TYPE", "TMP_MARK", "TextIdsSpec", "example_schema", "packed_schema",
    "expected_columns", "schema_problem", "decode_metadata", "field_column", "text_ids_column", "field_problem",
    "ShardFormatError", "ShardInfo", "sha256_file", "full_positions", "meta_json", "source_size",
]

#: the version :class:`~patchpack.storage.writer.ShardWriter` writes
FORMAT_VERSION = 2
#: the versions :class:`~patchpack.storage.reader.ShardReader` reads
READ_VERSIONS = (1, 2)
#: largest ``field_max_bytes`` a shard may declare (16 MiB): a tampered cap cannot lift the bound
FIELD_MAX_BYTES_LIMIT = 2**24
#: most text fields a shard carries
MAX_FIELDS = 64
#: largest ``text_len`` (ids per field) a shard carries
MAX_TEXT_LEN = 2**16
_MAX_NAME = 256
TMP_MARK = ".tmp-"

GRID_TYPE = pa.list_(pa.int32(), 3)
SIZE_TYPE = pa.list_(pa.int32(), 2)

if sys.byteorder != "little":  # pragma: no cover - the format is little-endian on disk
    raise ImportError("patchpack shards need a little-endian machine")


class ShardFormatError(ValueError):
    """A file is not a readable patchpack shard (wrong schema, version or layout)."""


def field_column(name: str) -> str:
    """The column of text field ``name`` (``"field:txt"``)."""
    return f"field:{name}"


def text_ids_column(name: str) -> str:
    """The column of the token ids of text field ``name`` (``"text_ids:txt"``)."""
    return f"text_ids:{name}"


def field_problem(value: str | bytes, max_bytes: int = DEFAULT_FIELD_MAX_BYTES) -> str | None:
    """What is wrong with a text field value (``None``: fine), by the online field reader's rules
    (:mod:`patchpack.sources.fields`): not valid UTF-8 (bytes) or not valid Unicode (a lone
    surrogate in a str), over ``max_bytes`` bytes of UTF-8, a NUL byte."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate; not valid Unicode text"
    else:
        raw = value
    if len(raw) > max_bytes:
        return f"is {len(raw)} bytes, over the cap of {max_bytes}"
    if b"\x00" in raw:
        return "holds a NUL byte"
    if not isinstance(value, str):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return "is not UTF-8"
    return None


def _show(value: object) -> str:
    """A stored value in a message: its repr, at most 40 characters."""
    return repr(value)[:40]


def _cap_problem(cap: object) -> str | None:
    if type(cap) is not int or not 1 <= cap <= FIELD_MAX_BYTES_LIMIT:
        return f"field_max_bytes {_show(cap)} is not an integer in [1, {FIELD_MAX_BYTES_LIMIT}]"
    return None


def _names_problem(names: object, what: str) -> str | None:
    if not isinstance(names, (list, tuple)) or len(names) > MAX_FIELDS:
        return f"{what} is not a list of at most {MAX_FIELDS} names"
    for n in names:
        if not isinstance(n, str) or not 0 < len(n) <= _MAX_NAME or "\x00" in n:
            return f"{what} holds {_show(n)}, not a name of 1 to {_MAX_NAME} characters without NUL"
    if len(set(names)) != len(names):
        return f"{what} repeats a name"
    return None


@dataclass(frozen=True)
class TextIdsSpec:
    """Which text fields a shard stores token ids for, and how they were made.

    Attributes:
        tokenizer: the tokenizer's name (a hub id or file name), for the record.
        text_len: most ids per field value (ids are stored unpadded; the mask is their length).
        fields: the text fields tokenized (a subset of the shard's fields).
        vocab_size: every id is below it (``None``: only ``>= 0`` is checked).
    """

    tokenizer: str
    text_len: int
    fields: tuple[str, ...]
    vocab_size: int | None = None

    def problem(self, fields: Sequence[str]) -> str | None:
        """What is wrong with this spec for a shard whose text fields are ``fields``."""
        if not isinstance(self.tokenizer, str) or not 0 < len(self.tokenizer) <= _MAX_NAME:
            return f"tokenizer {_show(self.tokenizer)} is not a name of 1 to {_MAX_NAME} characters"
        if type(self.text_len) is not int or not 1 <= self.text_len <= MAX_TEXT_LEN:
            return f"text_len {_show(self.text_len)} is not an integer in [1, {MAX_TEXT_LEN}]"
        if self.vocab_size is not None and (type(self.vocab_size) is not int or not 1 <= self.vocab_size <= LABEL_MAX):
            return f"vocab_size {_show(self.vocab_size)} is not an integer in [1, {LABEL_MAX}]"
        problem = _names_problem(list(self.fields), "text fields")
        if problem is None and not self.fields:
            problem = "text fields name no field"
        if problem is None and not set(self.fields) <= set(fields):
            problem = f"text fields {list(self.fields)} are not all among the shard's fields {list(fields)}"
        return problem

    def to_dict(self) -> dict:
        return dict(tokenizer=self.tokenizer, text_len=self.text_len, fields=list(self.fields),
                    vocab_size=self.vocab_size)

    @classmethod
    def from_dict(cls, d: object) -> "TextIdsSpec":
        """The spec stored in a shard's ``patchpack.text``; :class:`ShardFormatError` when malformed."""
        keys = {"tokenizer", "text_len", "fields", "vocab_size"}
        if not isinstance(d, dict) or set(d) - keys or not isinstance(d.get("fields"), list):
            raise ShardFormatError(f"patchpack metadata text is not an object with keys {sorted(keys)}")
        return cls(d.get("tokenizer"), d.get("text_len"), tuple(d["fields"]), d.get("vocab_size"))


def expected_columns(kind: str, version: int = FORMAT_VERSION, fields: Sequence[str] = (),
                     text: TextIdsSpec | None = None) -> list[pa.Field]:
    """The columns of a ``kind`` shard of ``version`` with text ``fields`` and ``text`` ids, in order."""
    ids = list(text.fields) if text is not None else []
    if kind == "examples":
        label = pa.field("label", pa.int64(), False) if version == 1 else pa.field("label_set", pa.list_(pa.int64()),
                                                                                   False)
        cols = [
            pa.field("key", pa.string(), False), label, pa.field("grid", GRID_TYPE, False),
            *(pa.field(n, pa.int32(), False) for n in ("patch_size", "tubelet", "channels", "num_tokens", "token_dim")),
            pa.field("tokens", pa.large_binary(), False), pa.field("positions", pa.large_binary(), True),
            pa.field("source_size", SIZE_TYPE, False), pa.field("source_shard", pa.string(), False),
            pa.field("meta", pa.string(), False),
        ]
        return cols + [pa.field(field_column(n), pa.large_string(), True) for n in fields] + \
            [pa.field(text_ids_column(n), pa.list_(pa.int32()), True) for n in ids]
    labels = pa.field("labels", pa.list_(pa.int64()), False) if version == 1 else \
        pa.field("label_sets", pa.list_(pa.list_(pa.int64())), False)
    cols = [
        pa.field("keys", pa.list_(pa.string()), False), labels, pa.field("grids", pa.list_(GRID_TYPE), False),
        pa.field("lengths", pa.list_(pa.int32()), False), pa.field("source_tokens", pa.list_(pa.int32()), False),
        pa.field("token_dim", pa.int32(), False), pa.field("tokens", pa.large_binary(), False),
        pa.field("positions", pa.large_binary(), False), pa.field("source_sizes", pa.list_(SIZE_TYPE), False),
        pa.field("source_shards", pa.list_(pa.string()), False), pa.field("metas", pa.list_(pa.string()), False),
    ]
    return cols + [pa.field(field_column(n), pa.list_(pa.large_string()), False) for n in fields] + \
        [pa.field(text_ids_column(n), pa.list_(pa.list_(pa.int32())), False) for n in ids]


def example_schema(metadata: dict[str, Any] | None = None, fields: Sequence[str] = (),
                   text: TextIdsSpec | None = None, field_max_bytes: int = DEFAULT_FIELD_MAX_BYTES) -> pa.Schema:
    """Schema of an ``"examples"`` shard (see module doc); ``metadata`` goes to ``patchpack.*`` keys."""
    return pa.schema(expected_columns("examples", FORMAT_VERSION, fields, text),
                     metadata=_schema_metadata("examples", metadata, fields, text, field_max_bytes))


def packed_schema(metadata: dict[str, Any] | None = None, fields: Sequence[str] = (),
                  text: TextIdsSpec | None = None, field_max_bytes: int = DEFAULT_FIELD_MAX_BYTES) -> pa.Schema:
    """Schema of a ``"packed"`` shard: one row per packed sequence (see module doc)."""
    return pa.schema(expected_columns("packed", FORMAT_VERSION, fields, text),
                     metadata=_schema_metadata("packed", metadata, fields, text, field_max_bytes))


_OWN_KEYS = ("format", "version", "fields", "field_max_bytes", "text")


def _schema_metadata(kind: str, extra: dict[str, Any] | None, fields: Sequence[str],
                     text: TextIdsSpec | None, field_max_bytes: int) -> dict[bytes, bytes]:
    fields = list(fields)
    problem = _names_problem(fields, "fields") or (text.problem(fields) if text is not None else None) or \
        _cap_problem(field_max_bytes)
    if problem is not None:
        raise ValueError(f"shard {problem}")
    md = {"format": kind, "version": FORMAT_VERSION, "fields": fields, "field_max_bytes": field_max_bytes,
          "text": text.to_dict() if text else None}
    for k, v in (extra or {}).items():
        if k in _OWN_KEYS:
            raise ValueError(f"metadata key {k!r} is the format's own; pass fields=, field_max_bytes=, text= to "
                             "the writer")
        md[k] = v
    return {f"patchpack.{k}".encode(): json.dumps(v, sort_keys=True).encode() for k, v in md.items()}


def decode_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The ``patchpack.*`` schema metadata, decoded and type-checked.

    Raises:
        ShardFormatError: a value that is not JSON (or nested too deep); a known key of the
            wrong type (``config`` not an object; ``patch_size``, ``tubelet``, ``channels``
            not integers in range; ``fields`` / ``text`` malformed); a ``version`` this
            reader does not read (one line, naming the version).
    """
    out: dict[str, Any] = {}
    try:
        for k, v in (schema.metadata or {}).items():
            k = k.decode()
            if k.startswith("patchpack."):
                out[k[len("patchpack.") :]] = json.loads(v.decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ShardFormatError(f"undecodable patchpack metadata ({type(exc).__name__})") from None
    version = out.get("version")
    if type(version) is int and version > FORMAT_VERSION:
        raise ShardFormatError(f"shard format version {version} is newer than this patchpack reads "
                               f"({FORMAT_VERSION}): upgrade patchpack")
    if version not in READ_VERSIONS or type(version) is not int:
        raise ShardFormatError(f"shard format version {_show(version)} is not one of {list(READ_VERSIONS)}")
    for key, low, high in (("patch_size", 1, 2**16), ("tubelet", 1, 2**16), ("channels", 1, 4)):
        v = out.get(key)
        if type(v) is not int or not low <= v <= high:
            raise ShardFormatError(f"patchpack metadata {key}={_show(v)} is not an integer in [{low}, {high}]")
    if not isinstance(out.get("config", {}), dict):
        raise ShardFormatError("patchpack metadata config is not an object")
    if version == 1:  # no text in version 1 shards
        out.update(fields=[], text=None, field_max_bytes=DEFAULT_FIELD_MAX_BYTES)
    problem = _names_problem(out.get("fields"), "patchpack metadata fields") or \
        _cap_problem(out.get("field_max_bytes"))
    if problem is not None:
        raise ShardFormatError(problem)
    if out.get("text") is not None:
        text = TextIdsSpec.from_dict(out["text"])
        problem = text.problem(out["fields"])
        if problem is not None:
            raise ShardFormatError(f"patchpack metadata text: {problem}")
    return out


def schema_problem(schema: pa.Schema, expected: list[pa.Field]) -> str | None:
    """The first ``expected`` column missing from ``schema`` or of another type (``None``: all there)."""
    for f in expected:
        i = schema.get_field_index(f.name)
        if i < 0:
            return f"no {f.name!r} column"
        if schema.field(i).type != f.type:
            return f"column {f.name!r} is {schema.field(i).type}, not {f.type}"
    return None


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


def meta_json(meta: dict[str, Any]) -> str:
    """The JSON of the ``meta`` column: ``meta`` less what has columns of its own (source size
    and shard) or is the reader's (source token count)."""
    rest = {k: v for k, v in meta.items() if k not in ("source_size", "source_shard", "source_tokens")}
    return json.dumps(rest, sort_keys=True, default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o.tolist() if isinstance(o, np.ndarray) else o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def source_size(meta: dict[str, Any]) -> list[int]:
    """``meta["source_size"]`` as ``[height, width]`` (``[0, 0]`` when unknown)."""
    s = meta.get("source_size")
    return [int(s[0]), int(s[1])] if s is not None else [0, 0]


@functools.lru_cache(maxsize=8192)
def full_positions(grid: tuple[int, int, int]) -> np.ndarray:
    """Read-only raster positions of a full grid (shared by every example of that grid)."""
    pos = grid_positions(*grid)
    pos.setflags(write=False)
    return pos

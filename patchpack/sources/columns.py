"""Arrow rows as samples: which column is the image, how every other column becomes a member.

Tables (parquet files, ``datasets`` Arrow files) are read into the same
:class:`~patchpack.sources.sample.Sample` a tar shard gives, so the loader's choices (the
media member by extension, the label from ``cls``, text fields by member name) work unchanged:

* **the image** (or video): a column holding the Hugging Face ``Image`` / ``Video`` struct
  ``{bytes: binary, path: string}`` or plain bytes. Unless named (``image_column``), the first
  such struct column named ``image``, ``img``, ``video`` or like a media extension (``jpg``,
  ``png``, ``mp4``, ...), else the first struct column, else the first binary column so named,
  else the first binary column. Its member name
  is the extension sniffed from the bytes' leading bytes (:func:`sniff_media`: jpg, png,
  webp, gif, bmp, tiff, jp2, mp4, mov, webm, mkv), else the extension of the struct's ``path``.
* **every other column** becomes a member named by the column (lower case): strings as UTF-8,
  bytes (and other image structs' bytes) as they are, integers as text (``"3"``), lists of
  integers as comma-separated text (``"3,7"``: a multi-label ``cls``), floats, booleans,
  structs, maps and other lists as JSON (``json.dumps``, webdataset's encoding), anything else
  as ``str``. A null is no member. Columns named ``__x__`` (``__key__``, ``__url__``,
  pandas' ``__index_level_0__``) are never members.
* **the key**: the ``__key__``, ``key`` or ``id`` column (any case) when there is one (strings
  or integers), else ``<file stem>/<row>``.

Failures are records with the sample key: an image cell that is null, empty or holds only a
``path`` (files referenced by path are not read) -> ``no-media`` / ``empty``; bytes of no known
format without a path extension -> ``not-media``; a member over ``max_member_bytes`` or members
together over 4x that -> ``oversize-member``; a value that cannot be converted -> ``corrupt``.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa

from ..errors import ErrorRecord
from .sample import Sample

__all__ = ["TableLayout", "LayoutError", "table_layout", "sniff_media", "block_samples", "KEY_COLUMNS",
           "MEDIA_EXTS"]

#: columns that name the sample, first found wins
KEY_COLUMNS = ("__key__", "key", "id")
#: extensions :func:`sniff_media` gives
MEDIA_EXTS = ("jpg", "png", "webp", "gif", "bmp", "tiff", "jp2", "j2k", "mp4", "mov", "webm", "mkv", "avif", "heic")
_MEDIA_NAMES = frozenset(MEDIA_EXTS) | {"jpeg", "tif", "image", "img", "video"}
#: members of one row together may hold at most this many times ``max_member_bytes``
ROW_BYTES_FACTOR = 4

_PREFIXES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
             (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2"),
             (b"\xff\x4f\xff\x51", "j2k"))
_BRANDS = {b"qt  ": "mov", b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic", b"mif1": "heic"}


class LayoutError(ValueError):
    """A table with no usable image column (or a named one that is missing or not bytes)."""


def sniff_media(data: bytes) -> str | None:
    """The media extension the leading bytes of ``data`` say (see :data:`MEDIA_EXTS`), else ``None``."""
    for prefix, ext in _PREFIXES:
        if data.startswith(prefix):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return _BRANDS.get(data[8:12], "mp4")
    if data[:4] == b"\x1aE\xdf\xa3":  # EBML: Matroska, or WebM when its doctype says so
        return "webm" if b"webm" in data[:64] else "mkv"
    return None


def _path_ext(path: Any) -> str | None:
    if not isinstance(path, str):
        return None
    ext = posixpath.splitext(path)[1].lstrip(".").lower()
    return ext or None


def _is_media_struct(typ: pa.DataType) -> bool:
    if not pa.types.is_struct(typ) or typ.get_field_index("bytes") < 0:
        return False
    inner = typ.field("bytes").type
    return pa.types.is_binary(inner) or pa.types.is_large_binary(inner)


def _is_bytes(typ: pa.DataType) -> bool:
    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()


def _converter(typ: pa.DataType) -> Callable[[Any], bytes | None]:
    """How one column's (non-null) Python values become member bytes."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if _is_text(typ):
        return lambda v: v.encode("utf-8")
    if _is_bytes(typ):
        return bytes
    if _is_media_struct(typ):
        return lambda v: v["bytes"]
    if pa.types.is_integer(typ):
        return lambda v: str(v).encode()
    listish = pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)
    if listish and pa.types.is_integer(typ.value_type):
        return lambda v: ",".join(str(x) for x in v if x is not None).encode()
    if listish or pa.types.is_nested(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        return _json
    return lambda v: str(v).encode()


@dataclass(frozen=True)
class TableLayout:
    """How a table's rows become samples.

    Attributes:
        image: the column holding the media bytes; ``image_struct`` whether it is the
            ``{bytes, path}`` struct.
        key: the column naming the sample (``None``: ``<file stem>/<row>``).
        members: ``(column, member name, converter)`` for every other column made a member.
    """

    image: str
    image_struct: bool
    key: str | None
    members: tuple[tuple[str, str, Callable[[Any], bytes | None]], ...]

    @property
    def columns(self) -> list[str]:
        """The columns read: the image, the key and the members."""
        names = [self.image, *(c for c, _, _ in self.members)]
        return names + ([self.key] if self.key is not None and self.key not in names else [])


def _named_media(field: pa.Field) -> bool:
    return field.name.lower() in _MEDIA_NAMES


def _image_column(schema: pa.Schema, named: str | None) -> str:
    if named is not None:
        if named not in schema.names:
            raise LayoutError(f"no column {named!r} (columns: {', '.join(schema.names)})")
        typ = schema.field(named).type
        if not (_is_media_struct(typ) or _is_bytes(typ)):
            raise LayoutError(f"column {named!r} is {typ}, not bytes or an image struct {{bytes, path}}")
        return named
    fields = list(schema)
    for pick in (lambda f: _is_media_struct(f.type) and _named_media(f), lambda f: _is_media_struct(f.type),
                 lambda f: _is_bytes(f.type) and _named_media(f), lambda f: _is_bytes(f.type)):
        found = next((f.name for f in fields if pick(f)), None)
        if found is not None:
            return found
    raise LayoutError(f"no image column: no {{bytes, path}} struct or binary column among {', '.join(schema.names)}; "
                      "name one with image_column")


def table_layout(schema: pa.Schema, image_column: str | None = None) -> TableLayout:
    """The :class:`TableLayout` of a table with ``schema`` (module doc).

    Raises:
        LayoutError: no image column, the named one is missing or not bytes, or two columns
            would make one member name.
    """
    image = _image_column(schema, image_column)
    by_lower = {f.name.lower(): f for f in reversed(list(schema))}  # the first of equal names wins
    key = next((by_lower[n].name for n in KEY_COLUMNS if n in by_lower and
                (_is_text(by_lower[n].type) or pa.types.is_integer(by_lower[n].type))), None)
    members, seen = [], {}
    for f in schema:
        if f.name == image or (f.name.startswith("__") and f.name.endswith("__")):
            continue
        name = f.name.lower()
        if name in seen:
            raise LayoutError(f"columns {seen[name]!r} and {f.name!r} would both be member {name!r}")
        seen[name] = f.name
        members.append((f.name, name, _converter(f.type)))
    return TableLayout(image, _is_media_struct(schema.field(image).type), key, tuple(members))


def _media(cell: Any, layout: TableLayout, key: str, url: str) -> tuple[bytes, str] | ErrorRecord:
    """``(bytes, extension)`` of an image cell, or the record saying why it is unusable."""
    data, path = (cell.get("bytes"), cell.get("path")) if layout.image_struct and cell is not None else (cell, None)
    if data is None:
        where = f" (path {path!r}: files referenced by path are not read)" if path else ""
        return ErrorRecord(key, url, "source", "no-media", f"column {layout.image!r} holds no bytes{where}")
    if not data:
        return ErrorRecord(key, url, "source", "empty", f"column {layout.image!r} holds zero bytes")
    ext = sniff_media(data) or _path_ext(path)
    if ext is None:
        return ErrorRecord(key, url, "source", "not-media",
                           f"column {layout.image!r}: bytes {bytes(data[:8])!r}... are no known image or video")
    return bytes(data), ext


def _row_sample(values: dict[str, Sequence[Any]], j: int, layout: TableLayout, key: str, url: str, index: int,
                max_member_bytes: int) -> Sample | ErrorRecord:
    media = _media(values[layout.image][j], layout, key, url)
    if isinstance(media, ErrorRecord):
        return media
    data, ext = media
    members: dict[str, bytes] = {}
    for column, name, convert in layout.members:
        value = values[column][j]
        if value is not None and (raw := convert(value)) is not None:
            members[name] = raw
    if ext in members:
        return ErrorRecord(key, url, "source", "corrupt", f"the image is {ext} and a column also names member {ext!r}")
    members[ext] = data
    big = max(members, key=lambda m: len(members[m]))
    if len(members[big]) > max_member_bytes:
        return ErrorRecord(key, url, "source", "oversize-member",
                           f"member {big!r} of {len(members[big]):,} bytes is over max_member_bytes {max_member_bytes:,}")
    total = sum(len(v) for v in members.values())
    if total > ROW_BYTES_FACTOR * max_member_bytes:
        return ErrorRecord(key, url, "source", "oversize-member",
                           f"members of {total:,} bytes together are over {ROW_BYTES_FACTOR} x max_member_bytes")
    return Sample(key, url, members, index)


def block_samples(table: pa.Table, layout: TableLayout, url: str, stem: str, first: int, wanted: Sequence[int],
                  max_member_bytes: int, failed: str = "") -> Iterator[Sample | ErrorRecord]:
    """The samples (or records) of rows ``wanted`` (file row numbers) of a block of rows starting
    at row ``first``; ``failed`` says which columns of the block could not be read (then every
    row is a ``corrupt`` record)."""
    if len(wanted) < table.num_rows:
        table = table.take(pa.array([i - first for i in wanted], pa.int64()))
    values = {name: table.column(name).to_pylist() for name in table.column_names}
    keys = values.get(layout.key) if layout.key is not None else None
    for j, index in enumerate(wanted):
        key = str(keys[j]) if keys is not None and keys[j] is not None else f"{stem}/{index}"
        if failed:
            yield ErrorRecord(key, url, "source", "corrupt", f"row {index}: {failed}")
            continue
        try:
            yield _row_sample(values, j, layout, key, url, index, max_member_bytes)
        except Exception as exc:  # a value no converter handles: this row only
            yield ErrorRecord(key, url, "source", "corrupt", f"row {index}: {type(exc).__name__}: {exc}")

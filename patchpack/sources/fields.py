"""Per-example text fields (captions, alt text, ...) read from a sample's members, checked.

A field *spec* names where the text is: a member name (``"txt"``; member names are lower
case, as the readers store them) or ``"json:<key>"``, a key of the ``json`` member whose value
must be a JSON string. A trailing ``?`` makes the field optional (``"txt?"``): absent, it is
``None``. The text is returned exactly as stored (decoded, nothing stripped).

Each of these is a ``bad-field`` :class:`~patchpack.errors.SampleError` (a record with the
sample's key, never a crash): a required field that is missing (a JSON ``null`` counts as
missing); a member or JSON string over the byte cap; bytes that are not UTF-8 (also a JSON
string with a lone surrogate escape such as ``"\\ud800"``, which no UTF-8 consumer can take);
a NUL byte (C-string consumers would cut the text there silently, so it is refused); a
``json`` member that is not valid JSON, nests deeper than the parser's stack, is not an
object, or is over :data:`MAX_JSON_BYTES`; a value that is not a string.
"""

from __future__ import annotations

import json
from typing import Iterable

from ..errors import SampleError
from .sample import Sample

__all__ = ["sample_field", "sample_fields", "field_name", "DEFAULT_FIELD_MAX_BYTES", "MAX_JSON_BYTES"]

#: Default cap on one field (bytes, UTF-8): 64 KiB.
DEFAULT_FIELD_MAX_BYTES = 64 * 2**10
#: Largest ``json`` member parsed for fields (1 MiB; the field itself has its own cap).
MAX_JSON_BYTES = 2**20


def _bad(spec: str, message: str) -> SampleError:
    return SampleError("bad-field", f"field {spec!r}: {message}", stage="source")


def field_name(spec: str) -> str:
    """The field's name: its spec without the optional marker (``"txt?"`` -> ``"txt"``)."""
    return spec.removesuffix("?")


def _checked_text(text: str, spec: str, max_bytes: int) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad(spec, "holds a lone surrogate; not valid Unicode text") from None
    if size > max_bytes:
        raise _bad(spec, f"{size} bytes is over the cap of {max_bytes}")
    if "\x00" in text:
        raise _bad(spec, f"holds a NUL byte at character {text.index(chr(0))}")
    return text


def _member_text(raw: bytes, spec: str, max_bytes: int) -> str:
    if len(raw) > max_bytes:
        raise _bad(spec, f"{len(raw)} bytes is over the cap of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(spec, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return _checked_text(text, spec, max_bytes)


def _json_value(raw: bytes, key: str, spec: str) -> object:
    if len(raw) > MAX_JSON_BYTES:
        raise _bad(spec, f"json member of {len(raw)} bytes is over {MAX_JSON_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise _bad(spec, f"json member is not valid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise _bad(spec, f"json member is a {type(doc).__name__}, not an object")
    return doc.get(key)


def sample_field(sample: Sample, spec: str, max_bytes: int = DEFAULT_FIELD_MAX_BYTES) -> str | None:
    """The text of field ``spec`` of ``sample`` (see the module doc), ``None`` when an optional
    field is absent.

    Raises:
        SampleError: ``bad-field`` (see the module doc).
    """
    name = field_name(spec)
    optional = spec.endswith("?")
    member, _, key = name.partition(":") if name.startswith("json:") else (name.lower(), "", "")
    raw = sample.members.get(member)
    value = raw if raw is None or not key else _json_value(raw, key, spec)
    if value is None:
        if optional:
            return None
        raise _bad(spec, "missing" + (f" (no {member!r} member)" if raw is None else f" (no {key!r} in json)"))
    if isinstance(value, bytes):
        return _member_text(value, spec, max_bytes)
    if not isinstance(value, str):
        raise _bad(spec, f"json value is a {type(value).__name__}, not a string")
    return _checked_text(value, spec, max_bytes)


def sample_fields(sample: Sample, specs: Iterable[str], max_bytes: int = DEFAULT_FIELD_MAX_BYTES
                  ) -> dict[str, str | None]:
    """Every field of ``specs`` by name (:func:`field_name`); the first bad one raises."""
    return {field_name(spec): sample_field(sample, spec, max_bytes) for spec in specs}

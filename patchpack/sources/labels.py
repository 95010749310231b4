"""The one label parser: a sample's integer target from its ``cls`` or ``json`` member.

Labels are range-checked at admission, so nothing downstream (collation into an int64
tensor, Arrow's int64 column, a model's class count) can fail on one: a label must be an
integer in ``[-1, LABEL_MAX]`` (``-1`` = unknown). Anything else (23 digits, ``Infinity``,
``NaN``, ``1.5``, ``true``, deeply nested JSON, a member larger than :data:`MAX_LABEL_BYTES`)
is a ``bad-label`` record with the sample's key.
"""

from __future__ import annotations

import json
import math

from ..errors import SampleError
from .sample import Sample

__all__ = ["sample_label", "LABEL_MAX", "MAX_LABEL_BYTES"]

#: Largest accepted label (2**31 - 1: an int32 class index; also fits int64 everywhere).
LABEL_MAX = 2**31 - 1
#: Largest ``cls`` / ``json`` member parsed for a label (1 MiB).
MAX_LABEL_BYTES = 2**20


def _bad(message: str) -> SampleError:
    return SampleError("bad-label", message, stage="source")


def _checked(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{what} {str(value)[:40]!r} is not an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _bad(f"{what} {value!r} is not an integer")
        value = int(value)
    if not -1 <= value <= LABEL_MAX:
        raise _bad(f"{what} {str(value)[:40]} is outside [-1, {LABEL_MAX}]")
    return value


def _integer_text(raw: bytes | str, what: str) -> int:
    try:
        token = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).strip()
        if not token.lstrip("+-").isdigit():
            raise ValueError
        return int(token)  # more than 4300 digits: ValueError
    except (UnicodeDecodeError, ValueError):
        raise _bad(f"{what} {raw[:32]!r} is not an integer") from None


def sample_label(sample: Sample, label_field: str = "cls") -> int:
    """The integer label of a sample: the ``cls`` member as text, or ``"json:<name>"``, a key
    of the ``json`` member; -1 when absent.

    Raises:
        SampleError: ``bad-label`` when the member is present but not an integer in
            ``[-1, LABEL_MAX]`` (see the module doc).
    """
    member = "cls" if label_field == "cls" else "json"
    raw = sample.members.get(member)
    if raw is None:
        return -1
    if len(raw) > MAX_LABEL_BYTES:
        raise _bad(f"{member} member of {len(raw)} bytes is larger than {MAX_LABEL_BYTES}")
    if member == "cls":
        return _checked(_integer_text(raw, "cls member"), "cls label")
    name = label_field.removeprefix("json:")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise _bad(f"json member is not valid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise _bad(f"json member is a {type(doc).__name__}, not an object with {name!r}")
    value = doc.get(name, -1)
    if isinstance(value, str):  # "3" is accepted as 3, as int() always did
        value = _integer_text(value, f"json label {name!r}")
    return _checked(value, f"json label {name!r}")

"""The one label parser: a sample's label set from its ``cls`` or ``json`` member.

:func:`sample_labels` reads multi-label and single-class data alike and returns a tuple of
integers: empty = unlabelled, one element for single-class data, several for multi-label.

* ``cls`` member: UTF-8 text of integers separated by commas and/or whitespace (``"3"``,
  ``"1,4 7"``, ``"2\\n5\\n"``). An empty (or all-whitespace) member is the empty set.
* ``"json:<name>"``: the key ``name`` of the ``json`` member (an object): an integer (an
  integral float such as ``5.0``, or a string of digits such as ``"4"``, count as one), or a
  JSON list of them. A missing member or key is unlabelled; ``[]`` is the empty set.
* ``-1`` alone (``"-1"``, ``-1``, ``"-1"`` in JSON) still means unlabelled. Duplicates are
  removed, first occurrence kept, order kept.

Labels are range-checked at admission, so nothing downstream (an int64 tensor, Arrow's int64
column, a model's class count) can fail on one: each label is an integer in
``[0, LABEL_MAX]``. Anything else is a ``bad-label`` record with the sample's key: 23 digits,
``Infinity``, ``NaN``, ``1.5``, ``true``, ``null``, a negative label, ``-1`` beside other
labels, an empty item (``"1,,2"``), a nested list, more than :data:`MAX_LABELS` labels, deeply
nested JSON, a member larger than :data:`MAX_LABEL_BYTES`.
"""

from __future__ import annotations

import json
import math
import re

from ..errors import SampleError
from .sample import Sample

__all__ = ["sample_labels", "LABEL_MAX", "MAX_LABEL_BYTES", "MAX_LABELS"]

#: Largest accepted label (2**31 - 1: an int32 class index; also fits int64 everywhere).
LABEL_MAX = 2**31 - 1
#: Largest ``cls`` / ``json`` member parsed for labels (1 MiB).
MAX_LABEL_BYTES = 2**20
#: Most labels one sample may carry (more is a ``bad-label`` record).
MAX_LABELS = 4096

_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")  # 20 digits: already far out of range, never a slow int()


def _bad(message: str) -> SampleError:
    return SampleError("bad-label", message, stage="source")


def _label(value: object, what: str) -> int:
    """One label: an integer, an integral float or a string of digits, in ``[-1, LABEL_MAX]``."""
    if isinstance(value, str):
        if not _INTEGER.fullmatch(value.strip()):
            raise _bad(f"{what} {value[:32]!r} is not an integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{what} {str(value)[:40]!r} is not an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _bad(f"{what} {value!r} is not an integer")
        value = int(value)
    if not -1 <= value <= LABEL_MAX:
        raise _bad(f"{what} {str(value)[:40]} is outside [0, {LABEL_MAX}]")
    return value


def _label_set(values: list, what: str) -> tuple[int, ...]:
    """The labels of ``values`` without repeats, in order; a lone -1 is the empty set."""
    if len(values) > MAX_LABELS:
        raise _bad(f"{what} holds {len(values)} labels, more than {MAX_LABELS}")
    labels = [_label(v, what) for v in values]
    if labels == [-1]:
        return ()
    if -1 in labels:
        raise _bad(f"{what} has -1 (unlabelled) beside other labels")
    return tuple(dict.fromkeys(labels))


def _cls_labels(raw: bytes) -> tuple[int, ...]:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _bad(f"cls member {raw[:32]!r} is not UTF-8 text") from None
    if not text:
        return ()
    return _label_set(_SEPARATOR.split(text), "cls label")


def _json_labels(raw: bytes, name: str) -> tuple[int, ...]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise _bad(f"json member is not valid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise _bad(f"json member is a {type(doc).__name__}, not an object with {name!r}")
    if name not in doc:
        return ()
    value = doc[name]
    return _label_set(value if isinstance(value, list) else [value], f"json label {name!r}")


def sample_labels(sample: Sample, label_field: str = "cls") -> tuple[int, ...]:
    """The label set of a sample from a member of integers as text (``label_field="cls"``, or any
    member name, e.g. ``"label"`` for a Hugging Face ``ClassLabel`` column) or from key ``<name>``
    of the ``json`` member (``"json:<name>"``); ``()`` when unlabelled.

    Raises:
        SampleError: ``bad-label`` when the member is present but its labels are not
            integers in ``[0, LABEL_MAX]`` (see the module doc).
    """
    json_key = label_field.startswith("json:")
    member = "json" if json_key else label_field
    raw = sample.members.get(member)
    if raw is None:
        return ()
    if len(raw) > MAX_LABEL_BYTES:
        raise _bad(f"{member} member of {len(raw)} bytes is larger than {MAX_LABEL_BYTES}")
    if not json_key:
        return _cls_labels(raw)
    return _json_labels(raw, label_field.removeprefix("json:"))

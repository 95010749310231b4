"""patchpack's own Arrow shards as a source: each row is a :class:`StoredSample` (no decoding).

Before a shard is read it is checked against its folder's manifest (``verify``, see
:func:`patchpack.storage.manifest.check_shard`: by default its sha256, hashed once per
process and file version, one extra sequential read of the file); a mismatch is one
``checksum`` record for the shard and none of its rows are used. Every row is checked
against itself, slot by slot (:meth:`~patchpack.storage.reader.ShardReader.iter_checked`):
a row whose token count, grid, positions, labels, text fields or token ids contradict its
bytes or their bounds is a ``bad-row`` record keyed by the example at fault, and the rows
after it are still read.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..errors import ErrorKind, ErrorRecord
from ..storage.format import ShardFormatError
from ..storage.manifest import check_shard
from ..storage.reader import BadRow, ShardReader
from .sample import StoredSample

__all__ = ["read_arrow_shard", "bad_row_records"]


def bad_row_records(row: BadRow, url: str) -> list[ErrorRecord]:
    """One ``bad-row`` record per example a refused row drops: the one at fault with what is
    wrong, then (a packed row) each of the row's other examples, dropped with it."""
    first = ErrorRecord(row.key or f"{url}#row{row.row}", url, "source", ErrorKind.BAD_ROW,
                        f"row {row.row}: {row.message}")
    return [first] + [ErrorRecord(key, url, "source", ErrorKind.BAD_ROW,
                                  f"row {row.row}: dropped with its row ({row.key!r} is at fault)")
                      for key in row.also]


def read_arrow_shard(
    url: str, start: int = 0, owns: Callable[[int], bool] | None = None, verify: str = "sha256"
) -> Iterator[StoredSample | ErrorRecord]:
    """Examples of one patchpack shard as :class:`StoredSample` records, from row ``start``.

    Only rows for which ``owns(row)`` is true are yielded (the row index is the sample
    index, so resume and sample-level splitting work as for tar shards). A shard that
    cannot be opened, or fails ``verify``, becomes one ``shard`` / ``checksum``
    :class:`~patchpack.errors.ErrorRecord`. A ``"packed"`` shard yields its slots one by
    one (they are packed again by the loader).
    """
    owns = owns or (lambda i: True)
    problem = check_shard(url, verify)
    if problem is not None:
        if owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.CHECKSUM, f"shard not used: {problem}")
        return
    try:
        reader = ShardReader(url)
    except (ShardFormatError, OSError) as exc:
        if owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.UNREADABLE, f"cannot open patchpack shard: {exc}")
        return
    index = 0
    try:
        for row in reader.iter_checked():
            items = bad_row_records(row, url) if isinstance(row, BadRow) else [row] if reader.kind == "examples" else row
            for tok in items:
                if index >= start and owns(index):
                    if isinstance(tok, ErrorRecord):
                        yield tok
                    else:
                        yield StoredSample(tok.key, url, {}, index, tok, reader.patch_size, reader.tubelet)
                index += 1
    except Exception as exc:  # a record batch Arrow cannot read
        if owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.SHARD, f"patchpack shard unreadable after {index} rows: "
                                                            f"{type(exc).__name__}: {exc}")

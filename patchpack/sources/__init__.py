"""Where samples come from: a reader registry (tar, folder, patchpack Arrow) and shard planning.

A *reader* is a callable ``reader(url, start, owns) -> Iterator[Sample | ErrorRecord]``
yielding the samples of one shard in order from index ``start``, only those for which
``owns(index)`` is true, failures as :class:`~patchpack.errors.ErrorRecord`. Register a new
one with :func:`register_source`; :func:`read_shard` picks the first registered reader
whose ``match(url)`` is true (readers registered later are asked first). A reader may take
keyword options after ``owns``; :func:`read_shard` passes it those of its ``options`` it
names (the built-in ones: ``max_member_bytes=`` for tars and folders, ``verify=`` for
patchpack shards; see :attr:`patchpack.config.LoaderConfig.source_options`).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Callable, Iterable, Iterator, NamedTuple, Protocol

from ..errors import ErrorRecord
from .folder import folder_classes, read_folder
from .labels import sample_label
from .plan import expand_sources, plan_shards, resampled_task
from .sample import UNSAFE_EXTS, Sample, ShardTask, StoredSample
from .tar import read_tar

__all__ = [
    "Sample", "StoredSample", "ShardTask", "UNSAFE_EXTS", "Reader", "register_source", "source_names",
    "reader_for", "read_shard", "read_task", "fetch_samples", "expand_sources", "plan_shards",
    "resampled_task", "folder_classes", "sample_label",
]


class Reader(Protocol):
    """Reads one shard: ``reader(url, start, owns)`` -> samples and error records, in order."""

    def __call__(self, url: str, start: int, owns: Callable[[int], bool]) -> Iterator[Sample | ErrorRecord]: ...


class _Entry(NamedTuple):
    name: str
    reader: Reader
    match: Callable[[str], bool]


_READERS: list[_Entry] = []


def register_source(name: str, reader: Reader, match: Callable[[str], bool]) -> None:
    """Register ``reader`` for the urls ``match(url)`` accepts; it is asked before earlier ones.

    Registering a name again replaces that entry.
    """
    _READERS[:] = [e for e in _READERS if e.name != name]
    _READERS.insert(0, _Entry(name, reader, match))


def source_names() -> list[str]:
    """Registered reader names, in the order they are asked."""
    return [e.name for e in _READERS]


def reader_for(url: str) -> Reader:
    """The reader that handles ``url``."""
    for e in _READERS:
        if e.match(url):
            return e.reader
    raise ValueError(f"no source reader accepts {url!r}; registered: {source_names()}")


def _read_arrow(url: str, start: int, owns: Callable[[int], bool], verify: str = "sha256"
                ) -> Iterator[Sample | ErrorRecord]:
    from .arrow import read_arrow_shard  # pyarrow only for patchpack shards

    return read_arrow_shard(url, start, owns, verify)


@functools.lru_cache(maxsize=64)
def _options_of(reader: Reader) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(reader).parameters)
    except (TypeError, ValueError):
        return frozenset()


register_source("tar", read_tar, lambda url: True)
register_source("arrow", _read_arrow, lambda url: url.endswith(".arrow"))
register_source("folder", read_folder, os.path.isdir)


def read_shard(
    url: str, start: int = 0, owns: Callable[[int], bool] | None = None, **options
) -> Iterator[Sample | ErrorRecord]:
    """Samples of one shard (tar, folder, patchpack shard, ...), in order, from index ``start``.

    Only samples for which ``owns(index)`` is true are yielded (their bytes are the
    only ones kept); failures come as :class:`ErrorRecord`\\ s in stream order.
    ``options`` (e.g. ``verify=`` for patchpack shards) go to the readers that take them.
    """
    reader = reader_for(url)
    accepted = _options_of(reader)
    return reader(url, start, owns or (lambda i: True), **{k: v for k, v in options.items() if k in accepted})


def read_task(task: ShardTask, start: int = 0, **options) -> Iterator[Sample | ErrorRecord]:
    """:func:`read_shard` restricted to the samples a :class:`ShardTask` owns."""
    if task.stride == 1:
        return read_shard(task.url, start, **options)
    return read_shard(task.url, start, task.owns, **options)


def fetch_samples(url: str, indices: Iterable[int], **options) -> dict[int, Sample]:
    """Re-read specific samples of a shard by index (used to restore a packer buffer).

    A tar is scanned from the start up to the last wanted index (tars have no
    index); a folder is read directly. Raises ``KeyError`` if a sample is missing.
    """
    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    found: dict[int, Sample] = {}
    last = max(wanted)
    for rec in read_shard(url, min(wanted), lambda i: i in wanted, **options):
        if isinstance(rec, Sample):
            found[rec.index] = rec
            if rec.index >= last:
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"samples {sorted(missing)[:5]} of {url} could not be re-read")
    return found

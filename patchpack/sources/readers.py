"""The source registry: which reader reads a url, and the options every reader takes.

A *reader* is a callable ``reader(url, start, owns, options) -> Iterator[Sample | ErrorRecord]``
yielding the samples of one shard in order from index ``start``, only those for which
``owns(index)`` is true, failures as :class:`~patchpack.errors.ErrorRecord`. ``options`` is a
:class:`ReadOptions` (the member cap, how stored shards are verified); a reader uses the
fields it needs. Register one with :func:`register_source`; :func:`reader_for` asks the
newest registration first, so a later reader can claim urls an earlier one also matches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, NamedTuple, Protocol

from ..errors import ErrorRecord
from ..registry import Registry
from .folder import read_folder
from .remote import RemoteConfig
from .parquet import datasets_arrow_reader, is_datasets_arrow, is_parquet_url, parquet_reader
from .sample import Sample, ShardTask
from .tar import DEFAULT_MAX_MEMBER_BYTES, read_tar

__all__ = [
    "ReadOptions", "Reader", "SourceEntry", "SOURCES", "register_source", "reader_for", "read_shard", "read_task",
    "fetch_samples", "VERIFY_MODES",
]

#: How patchpack shards are checked against their manifest before use.
VERIFY_MODES = ("sha256", "size", "none")


@dataclass(frozen=True)
class ReadOptions:
    """What every reader is told (``LoaderConfig.read_options`` builds it).

    Attributes:
        max_member_bytes: largest tar member or folder file read (checked before reading;
            default 256 MiB); a larger one is an ``oversize-member`` record.
        verify: how patchpack shards are checked against their manifest: ``"sha256"``
            (default), ``"size"`` or ``"none"``; a mismatch is a ``checksum`` record.
        image_column: parquet and ``datasets`` sources: the column holding the image (``None``:
            the first ``Image`` struct or binary column).
        remote: how object-store and web urls are read (chunk size, retries with backoff);
            ``None``: :data:`patchpack.sources.remote.DEFAULT_REMOTE`.
        follow_outside_links: folder sources: follow symlinks whose target is outside the root
            (default ``False``: a ``link`` record).
    """

    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    verify: str = "sha256"
    image_column: str | None = None
    remote: RemoteConfig | None = None
    follow_outside_links: bool = False

    def __post_init__(self) -> None:
        if self.max_member_bytes < 1:
            raise ValueError(f"max_member_bytes must be >= 1, got {self.max_member_bytes}")
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")


class Reader(Protocol):
    """Reads one shard: ``reader(url, start, owns, options)`` -> samples and error records, in order."""

    def __call__(self, url: str, start: int, owns: Callable[[int], bool],
                 options: ReadOptions) -> Iterator[Sample | ErrorRecord]: ...


class SourceEntry(NamedTuple):
    """A registered reader and the urls it accepts."""

    reader: Reader
    match: Callable[[str], bool]


#: name -> :class:`SourceEntry`; newest registrations are asked first.
SOURCES: Registry[SourceEntry] = Registry("source", hint="patchpack.register_source")


def register_source(name: str, reader: Reader, match: Callable[[str], bool], *, override: bool = False) -> Reader:
    """Register ``reader`` for the urls ``match(url)`` accepts (asked before earlier registrations).

    Raises:
        RegistryError: ``name`` is taken and ``override`` is false.
    """
    SOURCES.register(name, SourceEntry(reader, match), override=override)
    return reader


def reader_for(url: str) -> Reader:
    """The reader of the newest registration whose ``match`` accepts ``url``."""
    found = SOURCES.find(lambda entry: entry.match(url))
    if found is None:
        raise ValueError(f"no source reader accepts {url!r}; registered: {', '.join(SOURCES.names())}")
    return found[1].reader


def _tar(url: str, start: int, owns: Callable[[int], bool], options: ReadOptions) -> Iterator[Sample | ErrorRecord]:
    return read_tar(url, start, owns, max_member_bytes=options.max_member_bytes, remote=options.remote)


def _folder(url: str, start: int, owns: Callable[[int], bool], options: ReadOptions) -> Iterator[Sample | ErrorRecord]:
    return read_folder(url, start, owns, max_member_bytes=options.max_member_bytes,
                       follow_outside_links=options.follow_outside_links)


def _arrow(url: str, start: int, owns: Callable[[int], bool], options: ReadOptions) -> Iterator[Sample | ErrorRecord]:
    from .arrow import read_arrow_shard  # pyarrow only for patchpack shards

    return read_arrow_shard(url, start, owns, options.verify)


register_source("tar", _tar, lambda url: True)
register_source("arrow", _arrow, lambda url: url.endswith(".arrow"))
register_source("folder", _folder, os.path.isdir)
register_source("parquet", parquet_reader, is_parquet_url)
register_source("datasets-arrow", datasets_arrow_reader, is_datasets_arrow)  # save_to_disk, not patchpack shards


def _all(index: int) -> bool:
    return True


def read_shard(url: str, start: int = 0, owns: Callable[[int], bool] | None = None,
               options: ReadOptions | None = None, **fields) -> Iterator[Sample | ErrorRecord]:
    """Samples of one shard (tar, folder, patchpack shard, ...), in order, from index ``start``.

    Only samples for which ``owns(index)`` is true are yielded (their bytes are the only
    ones kept); failures come as :class:`ErrorRecord`\\ s in stream order. ``options`` (or
    its fields as keywords: ``max_member_bytes=``, ``verify=``) go to the reader.
    """
    opts = options or ReadOptions()
    if fields:
        opts = replace(opts, **fields)
    return reader_for(url)(url, start, owns or _all, opts)


def read_task(task: ShardTask, start: int = 0, options: ReadOptions | None = None) -> Iterator[Sample | ErrorRecord]:
    """:func:`read_shard` restricted to the samples a :class:`ShardTask` owns."""
    return read_shard(task.url, start, None if task.stride == 1 else task.owns, options)


def fetch_samples(url: str, indices: Iterable[int], options: ReadOptions | None = None) -> dict[int, Sample]:
    """Re-read specific samples of a shard by index (used to restore a packer buffer).

    A tar is scanned from the start up to the last wanted index (tars have no index); a
    folder is read directly.

    Raises:
        KeyError: a wanted sample is not there (the shard changed, or it is now a record).
    """
    wanted = set(int(i) for i in indices)
    found: dict[int, Sample] = {}
    if not wanted:
        return found
    last = max(wanted)
    for rec in read_shard(url, min(wanted), wanted.__contains__, options):
        if isinstance(rec, Sample):
            found[rec.index] = rec
            if rec.index >= last:
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"samples {sorted(missing)[:5]} of {url} could not be re-read")
    return found

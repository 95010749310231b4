"""webdataset tar shards as a source: samples of raw member bytes, failures as records.

Each sample is a :class:`~patchpack.sources.sample.Sample` ``(key, shard, members, index)``
where ``members`` maps a member extension (``"jpg"``, ``"cls"``, ...) to its raw bytes.
Nothing is decoded here. Tars are read by :func:`patchpack.sources.tarscan.scan_tar`
(webdataset's keys and extensions; gzip, bzip2 and xz streams decompressed on the fly;
local paths and ``file:`` urls opened directly, ``pipe:`` commands read to their end before
their exit status is checked, object stores and the web (``s3://``, ``gs://``, ``hf://``,
``http(s)://``) through fsspec with bounded retries (:mod:`patchpack.sources.remote`), other
schemes through ``webdataset.gopen``), which never loses bytes silently. Failures become records and the
reader goes on:

* a shard that cannot be opened -> kind ``shard`` (key = the shard url);
* a damaged member header, or a pax header that lies (a size that is not a size, disagrees
  with the header or runs past the end of the file; a malformed or oversize pax payload)
  -> ``bad-header``; the samples after it are still read; a name over 4096 bytes -> ``bad-name``;
* a tar that ends early -> ``truncated`` for the sample cut short (its own key), then one
  ``shard`` record for the shard;
* members never read -> ``link``, ``special-file``, ``sparse``, ``oversize-member``
  (over ``max_member_bytes``, default 256 MiB, checked before reading), ``unsafe``
  (pickles, checkpoints, native code: :data:`~patchpack.sources.sample.UNSAFE_EXTS`),
  ``corrupt`` (a repeated member), ``bad-name``, ``meta-member``.

Records about the shard itself have ``key == shard``; one consumer of a shard shared by
sample index (the one owning sample 0) reports them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

from ..errors import ErrorKind, ErrorRecord
from .sample import UNSAFE_EXTS, Sample
from .tarscan import DEFAULT_MAX_MEMBER_BYTES, TarSample, TarScanConfig, decompressed, scan_tar
from .remote import RemoteConfig
from .wds import SKIP_META, open_url

__all__ = ["read_tar", "TAR_CONFIG", "DEFAULT_MAX_MEMBER_BYTES"]

#: How tar shards are scanned: webdataset's metadata pattern, unsafe members refused, 256 MiB cap.
TAR_CONFIG = TarScanConfig(skip_meta=SKIP_META, refuse_exts=UNSAFE_EXTS)


def read_tar(url: str, start: int, owns: Callable[[int], bool],
             max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, remote: RemoteConfig | None = None
             ) -> Iterator[Sample | ErrorRecord]:
    """Samples ``index >= start`` with ``owns(index)`` of the tar at ``url``, failures as records;
    members over ``max_member_bytes`` are reported, never read; ``remote``: how an object-store
    or web url is read (default :data:`~patchpack.sources.remote.DEFAULT_REMOTE`)."""
    config = TAR_CONFIG if max_member_bytes == TAR_CONFIG.max_member_bytes else \
        replace(TAR_CONFIG, max_member_bytes=max_member_bytes)
    try:
        stream = open_url(url, remote)
    except Exception as exc:  # missing file, bad url, failing pipe command
        if owns(0):  # one consumer of a shared shard reports the shard itself
            yield ErrorRecord(url, url, "source", ErrorKind.UNREADABLE, f"cannot open shard: {exc}")
        return
    seen = start > 0  # whether the shard gave a sample (a resumed read starts after some)
    pending: list[ErrorRecord] = []  # shard records before the first sample: a failed pipe explains them
    failure: Exception | None = None
    try:
        for item in scan_tar(decompressed(stream), url, config, lambda i: i >= start and owns(i)):
            if isinstance(item, TarSample) or item.index is not None:
                seen = True
                yield from pending
                pending.clear()
                yield Sample(item.key, url, item.members, item.index) if isinstance(item, TarSample) else item.record
            elif item.position >= start and owns(0):
                if seen:
                    yield item.record
                else:
                    pending.append(item.record)
        finish = getattr(getattr(stream, "raw", stream), "finish", None)
        if finish is not None:  # a pipe: the rest drained, then its exit status
            finish()
    except Exception as exc:  # an unreadable stream (I/O error before the first byte, a failing pipe, ...)
        failure = exc
    finally:
        try:
            _close(stream)
        except Exception as exc:  # a remote stream's status may arrive on close
            failure = failure or exc
    # not reached when the consumer stopped early
    if failure is not None and not seen:  # nothing came through: one record for the source
        if owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.UNREADABLE,
                              f"cannot open shard: {type(failure).__name__}: {failure}")
        return
    yield from pending
    if failure is not None and owns(0):
        yield ErrorRecord(url, url, "source", "shard", f"tar unreadable: {type(failure).__name__}: {failure}")


def _close(stream) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()

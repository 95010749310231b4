"""Object-store and web urls (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``memory://`` ...) through fsspec.

Every source reads remote urls the same way: :func:`open_remote` gives a sequential stream
(tar shards), :func:`open_remote_file` a seekable file (parquet, whose footer is at the end).
Both are a :class:`RemoteStream`, which keeps the promise local files and ``pipe:`` urls keep:
**every byte, or an error**.

* Bytes come in chunks of :attr:`RemoteConfig.chunk_bytes` (default 8 MiB); a shard is never
  held whole. ``http(s)`` shards read sequentially are one streamed request (the server need
  not support ranges); other stores, and seekable files, read ranges through fsspec's files.
* The length the store reports is checked: a stream that ends before it (a dropped
  connection, a cut response) is a failure, not an end. A store that reports no length (an
  ``http`` server without ``Content-Length``) cannot be told from a short one there; the tar
  end marker and the parquet footer still expose a cut file.
* A failing read is retried: at most :attr:`RemoteConfig.retries` (default 5) re-opens per
  stream in all, after ``backoff_s * 2**k`` seconds (0.5, 1, 2, 4, 8: at most 15.5 s of
  waiting), each resuming at the byte where the last stopped (an ``http(s)`` stream asks for
  the rest with a ``Range`` request, used only when the answer is ``206`` from that byte; else
  it asks again from the start and skips the bytes already delivered). A missing file (404), a
  refused permission, a folder or a missing driver is never retried. When the retries are
  spent the read raises :class:`RemoteReadError`, which readers turn into a ``shard`` record.

fsspec is an optional dependency (``pip install 'patchpack[remote]'``: fsspec and aiohttp, for
``http(s)`` and ``memory``); ``s3://`` needs ``s3fs``, ``gs://`` ``gcsfs``, ``hf://``
``huggingface_hub``, ``az://`` ``adlfs``. Without them a remote url is one line naming what to
install (:class:`RemoteUnavailable`). Only the schemes of :data:`REMOTE_SCHEMES` go through
fsspec; other ``scheme://`` urls keep webdataset's ``gopen``.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

__all__ = [
    "REMOTE_SCHEMES", "RemoteConfig", "DEFAULT_REMOTE", "RemoteReadError", "RemoteUnavailable", "RemoteStream",
    "is_remote", "url_scheme", "remote_fs_class", "remote_fs", "check_remote", "glob_remote", "open_remote", "open_remote_file",
]

#: url schemes read through fsspec (the object stores and the web; ``memory`` for tests and tools)
REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "hf", "http", "https", "memory", "az", "abfs", "abfss", "adl"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB = re.compile(r"[*?\[]")
T = TypeVar("T")


@dataclass(frozen=True)
class RemoteConfig:
    """How remote urls are read.

    Attributes:
        retries: re-opens allowed per stream in all (default 5); 0 turns retrying off.
        backoff_s: wait before the first re-open, doubled for each next one (default 0.5 s).
        chunk_bytes: bytes asked for in one read (default 8 MiB): the memory a stream holds.
    """

    retries: int = 5
    backoff_s: float = 0.5
    chunk_bytes: int = 8 * 2**20

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.chunk_bytes < 1:
            raise ValueError(f"RemoteConfig needs retries >= 0, backoff_s >= 0 and chunk_bytes >= 1, got {self}")


#: the configuration :func:`open_remote` and :func:`open_remote_file` use when given none
DEFAULT_REMOTE = RemoteConfig()


class RemoteUnavailable(ImportError):
    """A remote url whose fsspec driver is not installed; the message says what to install."""


class RemoteReadError(OSError):
    """A remote read that failed after its retries, or a stream shorter than its reported length."""


#: failures that a retry cannot mend
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ImportError, ValueError,
              TypeError, NotImplementedError)


def url_scheme(url: str) -> str | None:
    """The lower-case scheme of ``scheme://...`` urls, else ``None``."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


def is_remote(url: str) -> bool:
    """Whether ``url`` is read through fsspec (its scheme is one of :data:`REMOTE_SCHEMES`)."""
    return url_scheme(url) in REMOTE_SCHEMES


def remote_fs_class(url: str) -> type:
    """The fsspec filesystem class of a remote url's scheme (nothing is fetched).

    Raises:
        RemoteUnavailable: fsspec, or the scheme's driver (s3fs, gcsfs, ...), is not installed.
    """
    scheme = url_scheme(url)
    try:
        import fsspec
    except ImportError:
        raise RemoteUnavailable(f"{scheme}:// urls need fsspec: pip install 'patchpack[remote]'") from None
    try:
        return fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        raise RemoteUnavailable(f"{scheme}:// urls need a driver fsspec could not import: {exc}") from None


def remote_fs(url: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of a remote url; raises :class:`RemoteUnavailable` as :func:`remote_fs_class`."""
    remote_fs_class(url)
    import fsspec.core

    return fsspec.core.url_to_fs(url)


def check_remote(url: str) -> None:
    """Raise :class:`ValueError` (one line) when ``url`` is remote and cannot be read here (no
    fsspec, no driver for its scheme); nothing is fetched."""
    if not is_remote(url):
        return
    try:
        remote_fs_class(url)
    except RemoteUnavailable as exc:
        raise ValueError(str(exc)) from None


def glob_remote(url: str) -> list[str]:
    """``url`` itself, or, when it holds ``*``, ``?`` or ``[``, the sorted urls of the files it matches.

    Raises:
        ValueError: the pattern matches no file, or the store cannot be listed (one line).
    """
    if not _GLOB.search(url.split("://", 1)[1]):
        return [url]
    fs, path = remote_fs(url)
    try:
        found = sorted(fs.glob(path))
    except Exception as exc:  # a store that cannot be listed: the user's url, one line
        raise ValueError(f"{url}: cannot list: {type(exc).__name__}: {exc}") from None
    if not found:
        raise ValueError(f"{url}: the pattern matches no file")
    return [fs.unstrip_protocol(p) for p in found]


def _is_http(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"http", "https"} & set(protocols))


class RemoteStream(io.RawIOBase):
    """A remote file read in order (``sequential``) or seekable, with bounded retries (module doc)."""

    def __init__(self, url: str, config: RemoteConfig | None = None, *, sequential: bool = True):
        self.url, self.config = url, config or DEFAULT_REMOTE
        self.pos, self.failures, self.file = 0, 0, None
        self.fs, self.path = remote_fs(url)
        self.http = _is_http(self.fs)
        self.streaming = sequential and self.http
        try:
            info = self._retrying(lambda: self.fs.info(self.path), "info")
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: not found") from None
        if info.get("type") == "directory":
            raise IsADirectoryError(f"{url} is a folder, not a file")
        self.size: int | None = info.get("size")
        self.file = self._retrying(self._open_at_pos, "open")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self.streaming

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.streaming:
            raise io.UnsupportedOperation("a sequential remote stream cannot seek")
        if whence == io.SEEK_END and self.size is None:
            raise io.UnsupportedOperation(f"{self.url}: the store reports no length")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data = self._retrying(lambda: self._read(size), "read")  # returned as read: no extra copy
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._drop_file()
        super().close()

    def _read(self, n: int) -> bytes:
        if self.file is None:
            self.file = self._open_at_pos()
        if not self.streaming and self.file.tell() != self.pos:
            self.file.seek(self.pos)
        parts, got = [], 0
        while got < n:
            part = self.file.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        if not got and self.size is not None and self.pos < self.size:
            raise RemoteReadError(f"stream ended at byte {self.pos} of {self.size}")
        return b"".join(parts)

    def _open_at_pos(self) -> Any:
        known = {"size": self.size} if self.http and self.size is not None else {}  # no second HEAD
        if not self.streaming:
            return self.fs.open(self.path, "rb", block_size=self.config.chunk_bytes, cache_type="readahead", **known)
        if not self.pos:
            return self.fs.open(self.path, "rb", block_size=0, **known)  # one streamed GET
        headers = {**self.fs.kwargs.get("headers", {}), "Range": f"bytes={self.pos}-"}
        f = self.fs.open(self.path, "rb", block_size=0, headers=headers, **known)
        answer = getattr(f, "r", None)  # fsspec's aiohttp response
        status = getattr(answer, "status", None)
        if status == 206 and answer.headers.get("Content-Range", "").startswith(f"bytes {self.pos}-"):
            return f  # the server resumed at pos
        if status != 200:  # where it starts is unknown: ask again for the whole file
            f.close()
            f = self.fs.open(self.path, "rb", block_size=0, **known)
        left = self.pos
        while left > 0:  # the whole file again: skip the bytes already delivered
            part = f.read(min(left, self.config.chunk_bytes))
            if not part:
                f.close()
                raise RemoteReadError(f"stream ended at byte {self.pos - left} while skipping to {self.pos}")
            left -= len(part)
        return f

    def _drop_file(self) -> None:
        f, self.file = self.file, None
        if f is not None:
            try:
                f.close()
            except Exception:  # a broken connection may fail to close too; it is gone either way
                pass

    def _retrying(self, action: Callable[[], T], what: str) -> T:
        while True:
            try:
                return action()
            except _PERMANENT:
                raise
            except Exception as exc:  # a transient store or network failure: re-open, within the bound
                if self.failures >= self.config.retries:
                    raise RemoteReadError(f"{self.url}: {what} failed at byte {self.pos} after {self.failures} "
                                          f"retries: {type(exc).__name__}: {exc}") from exc
                self._drop_file()
                time.sleep(self.config.backoff_s * 2**self.failures)
                self.failures += 1


def open_remote(url: str, config: RemoteConfig | None = None) -> io.BufferedReader:
    """A sequential binary stream of a remote url, read in ``chunk_bytes`` pieces (tar shards).

    Raises:
        RemoteUnavailable: no fsspec or no driver for the scheme.
        FileNotFoundError: the file is not there (an ``http`` 404).
        RemoteReadError: the store failed after the retries.
    """
    config = config or DEFAULT_REMOTE
    return io.BufferedReader(RemoteStream(url, config, sequential=True), buffer_size=config.chunk_bytes)


def open_remote_file(url: str, config: RemoteConfig | None = None) -> RemoteStream:
    """A seekable binary file of a remote url (parquet); raises as :func:`open_remote`."""
    return RemoteStream(url, config, sequential=False)

"""webdataset's shard conventions, read without importing the ``webdataset`` package.

``import webdataset`` imports torch (its package ``__init__`` pulls in its torch adapters),
and the numpy layers of patchpack, preprocessing workers included, must not. This module
keeps webdataset's conventions exactly: sample keys and member extensions
(:func:`base_plus_ext`), ``::`` lists, ``${VAR}`` substitution from ``WDS_VAR`` and brace
expansion (:func:`expand_urls`, with ``braceexpand``, webdataset's own dependency) and the
seeded shard shuffle (:func:`shuffle_urls`). Tars themselves are walked by
:func:`patchpack.sources.tarscan.scan_tar`.
Local paths and ``file:`` urls are opened directly, ``pipe:`` urls by
:class:`~patchpack.sources.pipe.PipeReader` (every byte, then the command's status), object-store
and web urls (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``memory://``:
:data:`~patchpack.sources.remote.REMOTE_SCHEMES`) through fsspec by
:func:`~patchpack.sources.remote.open_remote` (chunked, length-checked, bounded retries); any
other ``scheme://`` url goes through ``webdataset.gopen``, imported only then; when that starts
a download command, its output is read by the same :class:`PipeReader`. ``pipe:`` urls are
refused under webdataset's ``WDS_SECURE=1``.
"""

from __future__ import annotations

import io
import os
import random
import re
from typing import IO, Sequence

import braceexpand

from .files import open_regular
from .pipe import PipeReader
from .remote import RemoteConfig, is_remote, open_remote

__all__ = ["base_plus_ext", "expand_urls", "shuffle_urls", "open_url", "local_path", "missing_local", "SKIP_META"]

#: member names skipped entirely (webdataset's default ``skip_meta``)
SKIP_META = r"__[^/]*__($|/)"

_BASE_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def base_plus_ext(path: str) -> tuple[str | None, str | None]:
    """``(key, extensions)`` of a member path: ``"a/b.seg.png"`` -> ``("a/b", "seg.png")``."""
    match = _BASE_EXT.match(path)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def _env(m: re.Match) -> str:
    key = "WDS_" + m.group(1)
    if key not in os.environ:
        raise ValueError(f"missing environment variable {key} for ${{{m.group(1)}}}")
    return os.environ[key]


#: most urls one pattern may expand to (a mistyped range must not exhaust memory)
MAX_URLS = 1_000_000


def expand_urls(urls: str, limit: int = MAX_URLS) -> list[str]:
    """Split on ``::``, substitute ``${VAR}`` with ``$WDS_VAR`` and expand braces.

    Raises:
        ValueError: the pattern expands to more than ``limit`` urls.
    """
    out: list[str] = []
    for url in urls.split("::"):
        for _ in range(10):
            last, url = url, re.sub(r"\$\{(\w+)\}", _env, url)
            if url == last:
                break
        if len(out) + brace_count(url) > limit:  # braceexpand builds whole ranges: count first
            raise ValueError(f"{urls!r} expands to more than {limit:,} urls; check the brace ranges")
        out.extend(braceexpand.braceexpand(url))
    return out


_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$|^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$")


def brace_count(pattern: str) -> int:
    """How many strings ``braceexpand`` makes of ``pattern`` (``{a,b}`` alternatives, ``{0..9}``
    and ``{a..z}`` ranges, nested), without expanding it."""
    total, i = 1, 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "{":
            end = _closing(pattern, i)
            if end is None:
                return total
            total *= _group_count(pattern[i + 1:end])
            i = end + 1
            continue
        i += 1
    return total


def _closing(s: str, start: int) -> int | None:
    depth, i = 0, start
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return i
        i += 1
    return None


def _group_count(body: str) -> int:
    m = _RANGE.match(body)
    if m:
        a, b, step = (m.group(1), m.group(2), m.group(3)) if m.group(1) is not None else \
            (str(ord(m.group(4))), str(ord(m.group(5))), m.group(6))
        return abs(int(b) - int(a)) // max(1, abs(int(step or 1))) + 1
    alternatives, depth, last, i = [], 0, 0, 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            alternatives.append(body[last:i])
            last = i + 1
        i += 1
    if not alternatives:  # "{x}": braceexpand keeps it as text
        return brace_count(body)
    alternatives.append(body[last:])
    return sum(brace_count(a) for a in alternatives)


def shuffle_urls(urls: list[str], seed: int) -> list[str]:
    """The urls in the order ``webdataset.SimpleShardList(urls, seed=seed)`` yields them."""
    urls = list(urls)
    random.Random(seed).shuffle(urls)
    return urls


def local_path(url: str) -> str | None:
    """The file-system path of a local url (a path, ``file:PATH`` or ``file://PATH``); ``None``
    for ``pipe:``, remote urls and ``-`` (standard input)."""
    if url.startswith("file://"):
        return url[7:]
    if url.startswith("file:"):
        return url[5:]
    if "://" in url or url.startswith("pipe:") or url == "-":
        return None
    return url


def missing_local(urls: Sequence[str]) -> list[str]:
    """The urls of ``urls`` that are local paths which do not exist."""
    return [u for u in urls if (p := local_path(u)) is not None and not os.path.exists(p)]


def open_url(url: str, remote: RemoteConfig | None = None) -> IO[bytes]:
    """A binary stream of ``url``: local regular files directly (:func:`open_regular`: a FIFO or
    a device is refused), ``pipe:`` commands through
    :class:`PipeReader` (call its ``finish()`` at the end for the status), object stores and the
    web through fsspec (:func:`~patchpack.sources.remote.open_remote`, read as ``remote`` says:
    default :data:`~patchpack.sources.remote.DEFAULT_REMOTE`), other schemes through
    ``webdataset.gopen``."""
    if url.startswith("pipe:"):
        if os.environ.get("WDS_SECURE", "0") not in ("", "0"):
            raise PermissionError("pipe: urls run shell commands and are refused under WDS_SECURE=1 "
                                  "(webdataset's security switch)")
        return io.BufferedReader(PipeReader(url[5:]))
    path = local_path(url)
    if path is not None:
        return open_regular(path)
    if is_remote(url):
        return open_remote(url, remote)
    from webdataset.gopen import gopen  # check_layers: allow (remote urls only; imports torch)

    stream = gopen(url)
    proc = getattr(stream, "proc", None)
    if proc is not None and getattr(stream, "stream", None) is proc.stdout:  # a download command (curl, ...)
        ignored = (0, *getattr(stream, "ignore_status", ()))  # read to its end, then its status
        return io.BufferedReader(PipeReader(str(url), proc=proc, ignored=ignored, what="download of",
                                             owner=stream))
    return stream


"""webdataset's shard conventions, read without importing the ``webdataset`` package.

``import webdataset`` imports torch (its package ``__init__`` pulls in its torch adapters),
and the numpy layers of patchpack, preprocessing workers included, must not. This module
keeps webdataset's conventions exactly: sample keys and member extensions
(:func:`base_plus_ext`), ``::`` lists, ``${VAR}`` substitution from ``WDS_VAR`` and brace
expansion (:func:`expand_urls`, with ``braceexpand``, webdataset's own dependency) and the
seeded shard shuffle (:func:`shuffle_urls`). Tars themselves are walked by
:func:`patchpack.sources.tarscan.scan_tar`.
Local paths and ``file:`` urls are opened directly, ``pipe:`` urls by
:class:`~patchpack.sources.pipe.PipeReader` (every byte, then the command's status); any other
url (``http:``, ``s3:`` ...) goes through ``webdataset.gopen``, imported only then.
"""

from __future__ import annotations

import io
import os
import random
import re
from typing import IO

import braceexpand

from .files import open_regular
from .pipe import PipeReader

__all__ = ["base_plus_ext", "expand_urls", "shuffle_urls", "open_url", "SKIP_META"]

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


def expand_urls(urls: str) -> list[str]:
    """Split on ``::``, substitute ``${VAR}`` with ``$WDS_VAR`` and expand braces."""
    out: list[str] = []
    for url in urls.split("::"):
        for _ in range(10):
            last, url = url, re.sub(r"\$\{(\w+)\}", _env, url)
            if url == last:
                break
        out.extend(braceexpand.braceexpand(url))
    return out


def shuffle_urls(urls: list[str], seed: int) -> list[str]:
    """The urls in the order ``webdataset.SimpleShardList(urls, seed=seed)`` yields them."""
    urls = list(urls)
    random.Random(seed).shuffle(urls)
    return urls


def open_url(url: str) -> IO[bytes]:
    """A binary stream of ``url``: local regular files directly (:func:`open_regular`: a FIFO or
    a device is refused), ``pipe:`` commands through
    :class:`PipeReader` (call its ``finish()`` at the end for the status), other schemes through
    ``webdataset.gopen``."""
    if url.startswith("pipe:"):
        return io.BufferedReader(PipeReader(url[5:]))
    if url.startswith("file:"):
        return open_regular(re.sub(r"^file://?", "", url))
    if "://" not in url and url != "-":
        return open_regular(url)
    from webdataset.gopen import gopen  # check_layers: allow (remote urls only; imports torch)

    return gopen(url)


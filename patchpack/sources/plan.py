"""Which shards a consumer reads: url expansion, the exactly-once split, resampling."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..storage.manifest import is_patchpack_folder
from ..storage.manifest import list_shards
from .parquet import datasets_files
from .remote import check_remote, glob_remote, is_remote
from .sample import ShardTask
from .wds import expand_urls, local_path, shuffle_urls

__all__ = ["expand_sources", "plan_shards", "resampled_task", "shard_order"]


def expand_sources(urls: str | Sequence[str]) -> list[str]:
    """Expand brace patterns (``"data-{000..009}.tar"``) and ``::``-joined lists into urls.

    Accepts one string or a sequence of strings. Local folders are kept as they are, except a
    ``patchpack preprocess`` output (its shards) and a ``datasets`` ``save_to_disk`` folder (its
    Arrow files). Remote urls (``s3://``, ``hf://``, ``http(s)://`` ...) stay urls: nothing local
    is looked at; a ``*``, ``?`` or ``[`` in one is a glob listed through fsspec.

    Raises:
        ValueError: no urls; a pattern too large; a remote url that cannot be read here (no
            fsspec or driver: what to install) or a remote glob that matches nothing; a
            ``datasets`` ``DatasetDict`` folder (name a split).
    """
    if isinstance(urls, (str, os.PathLike)):
        urls = [os.fspath(urls)]
    out: list[str] = []
    for u in urls:
        u = os.fspath(u)
        if local_path(u) is None:  # remote, pipe: or stdin: urls, never file-system paths
            for url in expand_urls(u):
                check_remote(url)
                out.extend(glob_remote(url) if is_remote(url) else [url])
        elif not os.path.isdir(u):
            out.extend(expand_urls(u))
        elif os.path.isfile(os.path.join(u, "manifest.json")) and is_patchpack_folder(u):
            out.extend(str(p) for p in list_shards(u))  # a `patchpack preprocess` output
        else:
            out.extend(datasets_files(u) or [u])
    if not out:
        raise ValueError("no shard urls given")
    return out

def _mix(*parts: int) -> list[int]:
    return [int(p) & 0xFFFFFFFF for p in parts]


def shard_order(urls: Sequence[str], *, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list[str]:
    """The order of the shards in ``epoch``: shuffled with a seed derived from ``(seed, epoch)``, the
    same on every consumer (so a shard's place in it does not depend on the consumer count)."""
    order = list(urls)
    if shuffle and len(order) > 1:
        order = shuffle_urls(order, int(np.random.SeedSequence(_mix(seed, epoch)).generate_state(1)[0]))
    return order


def plan_shards(
    urls: Sequence[str],
    consumer: int,
    num_consumers: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> list[ShardTask]:
    """The shards (or shard slices) one consumer reads in one epoch.

    The url order is shuffled with a seed derived from ``(seed, epoch)`` (the same on
    every consumer). With ``n`` shards and ``C`` consumers, the first ``C * (n // C)``
    shards are dealt round robin as whole shards; each of the ``r = n % C`` leftover
    shards is shared by the consumers ``c`` with ``c % r == i``, which take its
    samples by index modulo. So every sample is read by exactly one consumer, also
    when ``n < C`` or ``C`` does not divide ``n``, and the load differs by at most
    one leftover-shard share.
    """
    if not 0 <= consumer < num_consumers:
        raise ValueError(f"consumer {consumer} out of range for {num_consumers} consumers")
    order = shard_order(urls, seed=seed, epoch=epoch, shuffle=shuffle)
    n, c = len(order), num_consumers
    whole = (n // c) * c
    tasks = [ShardTask(order[i]) for i in range(consumer, whole, c)]
    r = n - whole
    if r:
        i = consumer % r
        sharers = list(range(i, c, r))
        tasks.append(ShardTask(order[whole + i], sharers.index(consumer), len(sharers)))
    return tasks


def resampled_task(urls: Sequence[str], consumer: int, draw: int, *, seed: int = 0) -> ShardTask:
    """The ``draw``-th shard of an infinite, with-replacement stream for ``consumer``.

    Deterministic in ``(seed, consumer, draw)``, so a stream can resume at any draw.
    """
    rng = np.random.default_rng(_mix(seed, 0x5E5A, consumer, draw))
    return ShardTask(urls[int(rng.integers(len(urls)))])


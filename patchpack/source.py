"""Sample sources: webdataset tar shards and plain image folders.

A source yields :class:`Sample` records ``(key, shard, members, index)`` where
``members`` maps a member extension (``"jpg"``, ``"cls"``, ``"json"``, ...) to its
raw bytes and ``index`` is the sample's 0-based position in its shard. Nothing is
decoded here, and members that would need unpickling or code execution are never
passed on: their sample becomes an ``unsafe`` :class:`~patchpack.errors.ErrorRecord`.

Shards are read with ``webdataset`` (``gopen`` for local paths, ``file:``,
``pipe:`` and remote urls; ``tar_file_iterator`` for the tar stream; brace
expansion via ``expand_urls``; ``SimpleShardList`` for the seeded shard shuffle).
Failures become records, and the reader goes on with the next shard:

* a shard that cannot be opened -> kind ``shard`` (key = the shard url);
* a tar that ends early -> kind ``shard`` for the shard, and ``truncated`` for the
  sample whose members were being read when it ended.

patchpack's own shards (``*.arrow`` files, or a ``patchpack preprocess`` output folder)
are read by :func:`patchpack.arrowshard.read_arrow_shard`: their samples carry
already-tokenized examples (``tokens``) instead of member bytes.

Splitting across consumers (``rank * num_workers + worker``) is done by
:func:`plan_shards`: exactly once per epoch, with shards that do not divide evenly
shared by sample index modulo (see there).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import webdataset as wds
from webdataset.gopen import gopen as wds_gopen
from webdataset.shardlists import expand_urls as wds_expand_urls
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from .errors import ErrorRecord, SampleError

__all__ = [
    "Sample",
    "ShardTask",
    "UNSAFE_EXTS",
    "expand_sources",
    "plan_shards",
    "resampled_task",
    "read_shard",
    "read_task",
    "fetch_samples",
    "folder_classes",
    "sample_label",
]

#: Member extensions that are never decoded (pickles, torch checkpoints, native code).
UNSAFE_EXTS = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "ckpt", "joblib", "so", "dll", "pyc", "pyo"})

_SKIP_META = r"__[^/]*__($|/)"


@dataclass
class Sample:
    """One sample's raw members.

    Attributes:
        key: the sample key (tar: path up to the first dot of the basename;
            folder: relative path without extensions).
        shard: tar url or folder path it came from.
        members: extension (lower case, e.g. ``"jpg"``, ``"cls"``) -> raw bytes.
        index: 0-based position of the sample in its shard.
    """

    key: str
    shard: str
    members: dict[str, bytes] = field(default_factory=dict)
    index: int = 0


class ShardTask(NamedTuple):
    """Read ``url`` and keep the samples whose ``index % stride == offset``."""

    url: str
    offset: int = 0
    stride: int = 1

    def owns(self, index: int) -> bool:
        return index % self.stride == self.offset


def expand_sources(urls: str | Sequence[str]) -> list[str]:
    """Expand brace patterns (``"data-{000..009}.tar"``) and ``::``-joined lists into urls.

    Accepts one string or a sequence of strings; folders are kept as they are.
    """
    if isinstance(urls, (str, os.PathLike)):
        urls = [os.fspath(urls)]
    out: list[str] = []
    for u in urls:
        u = os.fspath(u)
        if not os.path.isdir(u):
            out.extend(wds_expand_urls(u))
        elif os.path.isfile(os.path.join(u, "manifest.json")) and _arrow().is_patchpack_folder(u):
            out.extend(str(p) for p in _arrow().list_shards(u))  # a `patchpack preprocess` output
        else:
            out.append(u)
    if not out:
        raise ValueError("no shard urls given")
    return out


def _arrow():
    from . import arrowshard  # pyarrow only for patchpack shards

    return arrowshard


def _mix(*parts: int) -> list[int]:
    return [int(p) & 0xFFFFFFFF for p in parts]


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
    order = list(urls)
    if shuffle and len(order) > 1:
        order = [d["url"] for d in wds.SimpleShardList(order, seed=int(np.random.SeedSequence(_mix(seed, epoch)).generate_state(1)[0]))]
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


def folder_classes(path: str) -> list[str]:
    """Sorted names of the immediate sub-folders of ``path`` (the class list)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _folder_groups(path: str) -> list[tuple[str, list[str]]]:
    """``(key, [files])`` of a folder tree, sorted by key."""
    groups: dict[str, list[str]] = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
            key, _ = base_plus_ext(rel)
            if key is None:
                key = rel
            groups.setdefault(key, []).append(rel)
    return sorted(groups.items())


def _unsafe(key: str, shard: str, members: Iterable[str]) -> ErrorRecord | None:
    bad = sorted(m for m in members if m.rsplit(".", 1)[-1].lower() in UNSAFE_EXTS)
    if bad:
        return ErrorRecord(key, shard, "source", "unsafe", f"member(s) {', '.join(bad)} are never loaded")
    return None


def _read_folder(path: str, start: int, owns: Callable[[int], bool]) -> Iterator[Sample | ErrorRecord]:
    classes = {c: i for i, c in enumerate(folder_classes(path))}
    for index, (key, files) in enumerate(_folder_groups(path)):
        if index < start or not owns(index):
            continue
        exts = [base_plus_ext(f)[1] or "" for f in files]
        bad = _unsafe(key, path, exts)
        if bad is not None:
            yield bad
            continue
        members: dict[str, bytes] = {}
        try:
            for f, ext in zip(files, exts):
                with open(os.path.join(path, f), "rb") as fh:
                    members[ext.lower()] = fh.read()
        except OSError as exc:
            yield ErrorRecord(key, path, "source", "corrupt", f"cannot read: {exc}")
            continue
        top = key.split("/", 1)[0] if "/" in key else None
        if top in classes and "cls" not in members:
            members["cls"] = str(classes[top]).encode()
        yield Sample(key, path, members, index)


def _has_end_marker(url: str) -> bool:
    """False for a local uncompressed tar that does not end in two zero blocks.

    ``tarfile`` in stream mode cannot tell a tar cut at a member boundary from a
    complete one; the missing end-of-archive blocks can. Other urls are assumed whole.
    """
    path = url[7:] if url.startswith("file://") else url
    if not path.endswith(".tar") or "://" in path or path.startswith("pipe:") or not os.path.isfile(path):
        return True
    size = os.path.getsize(path)
    if size < 1024 or size % 512:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1024)
        return not any(fh.read(1024))


def _read_tar(url: str, start: int, owns: Callable[[int], bool]) -> Iterator[Sample | ErrorRecord]:
    try:
        stream = wds_gopen(url)
    except Exception as exc:
        if owns(0):  # one consumer of a shared shard reports the shard itself
            yield ErrorRecord(url, url, "source", "shard", f"cannot open shard: {exc}")
        return
    key: str | None = None
    members: dict[str, object] = {}
    index = -1
    problem: str | None = None

    def finish() -> Iterator[Sample | ErrorRecord]:
        if key is None or index < start or not owns(index):
            return
        if problem is not None:
            yield ErrorRecord(key, url, "source", "corrupt", problem)
            return
        bad = _unsafe(key, url, members)
        if bad is not None:
            yield bad
        else:
            yield Sample(key, url, dict(members), index)  # type: ignore[arg-type]

    try:
        for entry in tar_file_iterator(stream, skip_meta=_SKIP_META):
            fname = entry["fname"]
            prefix, suffix = base_plus_ext(fname)
            if prefix is None:
                prefix, suffix = fname, ""
            suffix = suffix.lower()
            if prefix != key:
                yield from finish()
                key, members, index, problem = prefix, {}, index + 1, None
            if index < start or not owns(index):
                continue  # not ours: drop the bytes at once
            if suffix in members:
                problem = f"duplicate member {suffix!r}"
            ext = suffix.rsplit(".", 1)[-1]
            # never keep bytes of unsafe members; the name suffices for the record
            members[suffix] = b"" if ext in UNSAFE_EXTS else entry["data"]
        yield from finish()
        if not _has_end_marker(url) and owns(0):
            yield ErrorRecord(url, url, "source", "shard",
                              f"tar has no end-of-archive marker after {index + 1} sample(s): truncated")
    except Exception as exc:  # tarfile.ReadError, EOFError, OSError, ...
        # the sample being read when the tar ended is incomplete
        if key is not None and index >= start and owns(index):
            yield ErrorRecord(key, url, "source", "truncated", f"tar ended while reading this sample: {exc}")
        msg = f"tar unreadable after {index + 1} sample(s): {exc}"
        if owns(0):  # one consumer of a shared shard reports the shard itself
            yield ErrorRecord(url, url, "source", "shard", re.sub(r" @ <.*?>", "", msg))
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def read_shard(
    url: str, start: int = 0, owns: Callable[[int], bool] | None = None
) -> Iterator[Sample | ErrorRecord]:
    """Samples of one tar shard or folder, in order, from index ``start``.

    Only samples for which ``owns(index)`` is true are yielded (their bytes are the
    only ones kept); failures come as :class:`ErrorRecord`\\ s in stream order.
    """
    owns = owns or (lambda i: True)
    if os.path.isdir(url):
        return _read_folder(url, start, owns)
    if url.endswith(".arrow"):
        return _arrow().read_arrow_shard(url, start, owns)
    return _read_tar(url, start, owns)


def read_task(task: ShardTask, start: int = 0) -> Iterator[Sample | ErrorRecord]:
    """:func:`read_shard` restricted to the samples a :class:`ShardTask` owns."""
    if task.stride == 1:
        return read_shard(task.url, start)
    return read_shard(task.url, start, task.owns)


def fetch_samples(url: str, indices: Iterable[int]) -> dict[int, Sample]:
    """Re-read specific samples of a shard by index (used to restore a packer buffer).

    A tar is scanned from the start up to the last wanted index (tars have no
    index); a folder is read directly. Raises ``KeyError`` if a sample is missing.
    """
    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    found: dict[int, Sample] = {}
    last = max(wanted)
    for rec in read_shard(url, min(wanted), lambda i: i in wanted):
        if isinstance(rec, Sample):
            found[rec.index] = rec
            if rec.index >= last:
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"samples {sorted(missing)[:5]} of {url} could not be re-read")
    return found


def sample_label(sample: Sample, label_field: str = "cls") -> int:
    """The integer label of a sample: the ``cls`` member as text, or ``"json:<name>"``, a key
    of the ``json`` member; -1 when absent.

    Raises:
        SampleError: ``bad-label`` when the member is present but not an integer.
    """
    if label_field == "cls":
        raw = sample.members.get("cls")
        if raw is None:
            return -1
        try:
            return int(raw.decode("utf-8").strip())
        except (UnicodeDecodeError, ValueError):
            raise SampleError("bad-label", f"cls member {raw[:32]!r} is not an integer", stage="source") from None
    raw = sample.members.get("json")
    if raw is None:
        return -1
    name = label_field.removeprefix("json:")
    try:
        return int(json.loads(raw).get(name, -1))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SampleError("bad-label", f"json label {name!r}: {exc}", stage="source") from None

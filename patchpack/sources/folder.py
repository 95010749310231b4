"""Plain folders as a source: files grouped into samples by key, class sub-folders as labels.

Only regular files are read (a symlink to a regular file counts as one), each at most
``max_member_bytes`` (default 256 MiB, checked before reading). A FIFO, socket, device or
directory, also behind a symlink (``x.jpg -> /dev/zero``), is a ``special-file`` record; a
dangling symlink a ``link`` record; a larger file ``oversize-member``. Files are opened
non-blocking and checked on the open descriptor, so nothing can hang the reader.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from ..errors import ErrorRecord, SampleError
from .files import SpecialFileError, open_regular
from .sample import Sample, unsafe_record
from .tarscan import DEFAULT_MAX_MEMBER_BYTES, SAMPLE_BYTES_FACTOR
from .wds import base_plus_ext

__all__ = ["folder_classes", "read_folder", "read_regular_file"]


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

def read_regular_file(path: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes`` bytes.

    Raises:
        SampleError: ``special-file`` (FIFO, device, socket, directory, also via a symlink),
            ``link`` (dangling symlink), ``oversize-member``, ``corrupt`` (unreadable).
    """
    try:
        fh = open_regular(path)
    except SpecialFileError as exc:
        raise SampleError("special-file", str(exc), stage="source") from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise SampleError("link", f"{path} is a dangling symlink to {os.readlink(path)!r}",
                              stage="source") from None
        raise SampleError("corrupt", f"cannot read {path}: no such file", stage="source") from None
    except OSError as exc:
        raise SampleError("corrupt", f"cannot read {path}: {exc}", stage="source") from None
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise SampleError("oversize-member", f"{path} is {size} bytes, over max_member_bytes={max_bytes}",
                                  stage="source")
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise SampleError("corrupt", f"cannot read {path}: {exc}", stage="source") from None
    if len(data) > max_bytes:  # grew since fstat
        raise SampleError("oversize-member", f"{path} is over max_member_bytes={max_bytes}", stage="source")
    return data


def read_folder(path: str, start: int, owns: Callable[[int], bool],
                max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample | ErrorRecord]:
    classes = {c: i for i, c in enumerate(folder_classes(path))}
    for index, (key, files) in enumerate(_folder_groups(path)):
        if index < start or not owns(index):
            continue
        exts = [base_plus_ext(f)[1] or "" for f in files]
        bad = unsafe_record(key, path, exts)
        if bad is not None:
            yield bad
            continue
        members: dict[str, bytes] = {}
        try:
            total = 0
            for f, ext in zip(files, exts):
                members[ext.lower()] = data = read_regular_file(os.path.join(path, f), max_member_bytes)
                total += len(data)
                if total > SAMPLE_BYTES_FACTOR * max_member_bytes:
                    raise SampleError("oversize-member", f"sample {key!r} holds more than {SAMPLE_BYTES_FACTOR} x "
                                      f"max_member_bytes={max_member_bytes} bytes of files", stage="source")
        except SampleError as err:
            yield err.record(key, path)
            continue
        top = key.split("/", 1)[0] if "/" in key else None
        if top in classes and "cls" not in members:
            members["cls"] = str(classes[top]).encode()
        yield Sample(key, path, members, index)


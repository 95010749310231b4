"""Plain folders as a source: one example per media file, sidecars as members, class sub-folders as labels.

What is an example, its key (the media file's path relative to the root, e.g.
``cat/2021.05.01.jpg``), its sidecars and the records for hidden entries, folder links and
unread files: :mod:`patchpack.sources.folderscan`. Each example is a
:class:`~patchpack.sources.sample.Sample` whose members are its media file under its
extension and its sidecars under theirs: ``{"jpg": ..., "txt": ..., "json": ..., "cls": ...}``.
When the root holds class sub-folders (:func:`folder_classes`), an example below one gets
``cls`` = that class's index unless it has a ``cls`` sidecar.

Files are read only when regular (a symlink to a regular file counts as one), each at most
``max_member_bytes`` (default 256 MiB, checked before reading), an example's files together
at most 4 x that. A FIFO, socket, device or directory, also behind a symlink
(``x.jpg -> /dev/zero``), is a ``special-file`` record; a dangling symlink or a symlink loop a
``link`` record; a symlink to a file outside the root a ``link`` record unless
``follow_outside_links``; a larger file ``oversize-member``. Files are opened non-blocking and
checked on the open descriptor, so nothing can hang the reader. Files neither media nor
sidecars are named in one shard-level ``unread-files`` record (key = the folder).
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Iterator

from ..errors import ErrorRecord, SampleError
from .files import SpecialFileError, not_regular, open_regular
from .folderscan import FolderEntry, folder_key, inside, is_dir, list_folder
from .sample import Sample
from .tarscan import DEFAULT_MAX_MEMBER_BYTES, SAMPLE_BYTES_FACTOR

__all__ = ["folder_classes", "read_folder", "read_regular_file", "tar_key", "UNREAD_NAMES_SHOWN"]

#: How many unread file names the ``unread-files`` record shows (it counts them all).
UNREAD_NAMES_SHOWN = 5


def folder_classes(path: str) -> list[str]:
    """Sorted names of the immediate sub-folders of ``path`` that are not hidden (the class list;
    a symlinked sub-folder counts, whether or not it is read). Names as keys spell them."""
    with os.scandir(path) as it:
        return sorted(folder_key(e.name) for e in it if not e.name.startswith(".") and is_dir(e))


def tar_key(key: str) -> str:
    """A folder key as a webdataset sample key: ``%`` -> ``%25``, ``.`` -> ``%2E`` (one-to-one and
    dot-free, so the members ``f"{tar_key(key)}.{ext}"`` of a tar group back into one sample;
    ``urllib.parse.unquote`` turns it back)."""
    return key.replace("%", "%25").replace(".", "%2E")


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


def _check_link(path: str, real_root: str, follow_outside: bool) -> None:
    """Raise the record a symlinked file gets instead of being read, if any."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SampleError("link", f"{path} is a dangling symlink to {os.readlink(path)!r}", stage="source") from None
    except OSError as exc:
        kind = "link" if exc.errno == errno.ELOOP else "corrupt"
        raise SampleError(kind, f"cannot read {path}: {exc.strerror}", stage="source") from None
    why = not_regular(path, mode)
    if why is not None:
        raise SampleError("special-file", why, stage="source")
    if not follow_outside and not inside(os.path.realpath(path), real_root):
        raise SampleError("link", f"{path} is a symlink to {os.readlink(path)!r}, outside the folder; not followed "
                                  "(follow_outside_links=True reads it)", stage="source")


def _read_members(root: str, real_root: str, entry: FolderEntry, max_bytes: int,
                  follow_outside: bool) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    for rel in (entry.media, *entry.sidecars):
        path = os.path.join(root, rel)
        if os.path.islink(path):
            _check_link(path, real_root, follow_outside)
        members[rel.rpartition(".")[2].lower()] = data = read_regular_file(path, max_bytes)
        total += len(data)
        if total > SAMPLE_BYTES_FACTOR * max_bytes:
            raise SampleError("oversize-member", f"example {entry.key!r} holds more than {SAMPLE_BYTES_FACTOR} x "
                              f"max_member_bytes={max_bytes} bytes of files", stage="source")
    return members


def _unread_record(path: str, unread: list[str]) -> ErrorRecord:
    shown = ", ".join(repr(n) for n in unread[:UNREAD_NAMES_SHOWN]) + (", ..." if len(unread) > UNREAD_NAMES_SHOWN
                                                                          else "")
    return ErrorRecord(path, path, "source", "unread-files",
                       f"{len(unread)} file(s) neither media nor the sidecar of a media file (same stem) are not "
                       f"read: {shown}")


def read_folder(path: str, start: int, owns: Callable[[int], bool],
                max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                follow_outside_links: bool = False) -> Iterator[Sample | ErrorRecord]:
    """The examples ``index >= start`` with ``owns(index)`` of the folder tree at ``path``, in key
    order, and records in their place; the ``unread-files`` record first (from index 0, by the
    consumer owning it)."""
    listing = list_folder(path, follow_outside_links)
    if listing.unread and start == 0 and owns(0):
        yield _unread_record(path, listing.unread)
    classes = {c: i for i, c in enumerate(folder_classes(path))}
    real_root = os.path.realpath(path)
    for index, entry in enumerate(listing.entries):
        if index < start or not owns(index):
            continue
        if entry.problem is not None:
            yield ErrorRecord(entry.key, path, "source", *entry.problem)
            continue
        try:
            members = _read_members(path, real_root, entry, max_member_bytes, follow_outside_links)
        except SampleError as err:
            yield err.record(entry.key, path)
            continue
        top = entry.key.split("/", 1)[0] if "/" in entry.key else None
        if top in classes and "cls" not in members:
            members["cls"] = str(classes[top]).encode()
        yield Sample(entry.key, path, members, index)

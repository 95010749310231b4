"""A plain folder listed as examples: one example per media file, sidecars by stem, nothing dropped unnamed.

A folder is not a tar: its files are not grouped by the name up to the first dot.

* **Examples.** Every file whose last extension (lower-cased) is an image or video extension
  (:data:`~patchpack.sources.extensions.MEDIA_EXTS`) is one example. Its **key** is its path
  relative to the root, ``/``-separated, extension and case kept: ``cat/2021.05.01.jpg``. Keys
  are unique (one path, one file) and stable (they depend on the path alone; examples come in
  key order, which fixes their indices). A name that is not UTF-8 is written with backslash
  escapes (byte ``0xff`` -> ``\\xff``), as tar member names are.
* **Sidecars.** A file ``S.E`` that is not media is a member of every media file with stem
  ``S`` (the name without its last extension) in the same folder, under ``E`` lower-cased:
  ``x.jpg`` + ``x.txt`` + ``x.json`` + ``x.cls`` -> one example with members ``jpg``, ``txt``,
  ``json``, ``cls``. Media files sharing a stem (``x.jpg``, ``x.png``, ``x.JPG``) are separate
  examples, each with all the sidecars. Two sidecars giving one member (``x.txt``, ``x.TXT``)
  make those examples ``corrupt`` records; an unsafe sidecar (``x.pkl``) makes them ``unsafe``.
* **Unread files.** A file that is neither media nor a sidecar (``README.md``, an ``x.txt``
  with no ``x.<media>`` beside it, ``.DS_Store``, a name without an extension) is not read:
  :attr:`FolderListing.unread` lists them (the reader gives one ``unread-files`` record per
  folder source with their count).
* **Hidden entries** (name starts with ``.``): a hidden media file is a ``hidden`` record
  (key: its path); a hidden folder is not entered: one ``hidden`` record (key: its path + ``/``).
* **Folder links.** A symlinked folder whose target is inside the root is not entered (its
  files are read at their own path; entering would read them twice or loop): a ``link``
  record (key: its path + ``/``). One whose target is outside the root is entered only with
  ``follow_outside_links``; each real folder is entered once (the folders are walked depth
  first in name order), so a loop or a later link to a folder already entered is a ``link``
  record. (File links are checked when read: see
  :mod:`patchpack.sources.folder`.)
* A folder that cannot be listed: a ``corrupt`` record (key: its path + ``/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

from .extensions import MEDIA_EXTS
from .sample import unsafe_record
from .tarblocks import decode_name

__all__ = ["FolderEntry", "FolderListing", "list_folder", "folder_key", "inside", "is_dir"]


@dataclass(frozen=True)
class FolderEntry:
    """One example (``media`` and ``sidecars``: paths relative to the root) or, with
    ``problem`` ``(kind, message)``, a record in its place."""

    key: str
    media: str = ""
    sidecars: tuple[str, ...] = ()
    problem: tuple[str, str] | None = None


@dataclass(frozen=True)
class FolderListing:
    """A folder's examples and records in key order, and the files that are not read."""

    entries: list[FolderEntry] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)


def folder_key(rel: str) -> str:
    """The key of a path relative to the root: ``/``-separated, non-UTF-8 bytes as ``\\xNN``."""
    return decode_name(os.fsencode(rel.replace(os.sep, "/")))


def inside(target: str, real_root: str) -> bool:
    """Whether the resolved path ``target`` is ``real_root`` or below it."""
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def list_folder(root: str, follow_outside_links: bool = False) -> FolderListing:
    """The examples, records and unread files of the folder tree at ``root`` (see the module doc)."""
    entries: list[FolderEntry] = []
    unread: list[str] = []
    for rel, names, problems in _walk(root, follow_outside_links):
        entries += problems
        examples, skipped = _group_files(rel, names)
        entries += examples
        unread += skipped
    entries.sort(key=lambda e: e.key)
    return FolderListing(entries, sorted(unread))


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def is_dir(e: os.DirEntry) -> bool:
    """Whether ``e`` is a folder (links followed); ``False`` for a symlink loop."""
    try:
        return e.is_dir()
    except OSError:  # a symlink loop
        return False


def _walk(root: str, follow: bool) -> Iterator[tuple[str, list[str], list[FolderEntry]]]:
    """``(folder relative to root, its file names, records for folders not entered)`` of every
    folder entered, depth first in name order (an explicit stack: no recursion limit on deep
    trees). A real folder is entered once: a later way to it is a record."""
    real_root = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel)
        try:
            ident = _identity(path)
            if ident in seen:
                yield rel, [], [FolderEntry(folder_key(rel) + "/", problem=(
                    "link", f"folder {folder_key(rel)!r} was already read (a link loop, or a later link to a folder "
                            "already entered)"))]
                continue
            seen.add(ident)
            with os.scandir(path) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield rel, [], [FolderEntry(folder_key(rel) + "/", problem=("corrupt", f"cannot list folder: {exc}"))]
            continue
        files, problems, subdirs = [], [], []
        for e in listing:
            if not is_dir(e):  # a file, a dangling link or loop, a FIFO, a device: decided when read
                files.append(e.name)
                continue
            sub = os.path.join(rel, e.name)
            problem = _folder_problem(e, sub, real_root, follow)
            if problem is None:
                subdirs.append(sub)
            else:
                problems.append(FolderEntry(folder_key(sub) + "/", problem=problem))
        yield rel, files, problems
        stack.extend(reversed(subdirs))


def _folder_problem(e: os.DirEntry, sub: str, real_root: str, follow: bool) -> tuple[str, str] | None:
    """Why the sub-folder ``e`` (``sub`` relative to the root) is not entered, or ``None``."""
    key = folder_key(sub)
    if e.name.startswith("."):
        return "hidden", f"hidden folder {key!r} is not read"
    if not e.is_symlink():
        return None
    target = os.readlink(e.path)
    if inside(os.path.realpath(e.path), real_root):
        return "link", (f"folder symlink {key!r} -> {target!r} points inside the folder: its files are read at "
                        "their own path, not through the link")
    if not follow:
        return "link", (f"folder symlink {key!r} -> {target!r} points outside the folder; not followed "
                        "(follow_outside_links=True reads it)")
    return None


def _group_files(rel: str, names: list[str]) -> tuple[list[FolderEntry], list[str]]:
    """The examples of one folder's files (media with their sidecars) and its unread files."""
    media: list[tuple[str, str]] = []
    others: dict[str, list[str]] = {}
    unread: list[str] = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if dot and ext.lower() in MEDIA_EXTS:
            media.append((name, stem))
        elif dot:
            others.setdefault(stem, []).append(name)
        else:
            unread.append(name)
    stems = {stem for _, stem in media}
    unread += [n for stem, group in others.items() if stem not in stems for n in group]
    examples = [_example(rel, name, others.get(stem, [])) for name, stem in media]
    return examples, [folder_key(os.path.join(rel, n)) for n in unread]


def _example(rel: str, name: str, sidecars: list[str]) -> FolderEntry:
    key = folder_key(os.path.join(rel, name))
    paths = tuple(os.path.join(rel, n) for n in sidecars)
    if name.startswith("."):
        return FolderEntry(key, problem=("hidden", f"hidden file {key!r} is not read"))
    exts = [n.rpartition(".")[2].lower() for n in sidecars]
    clash = sorted({e for e in exts if exts.count(e) > 1})
    if clash:
        both = [n for n in sidecars if n.rpartition(".")[2].lower() == clash[0]]
        return FolderEntry(key, problem=("corrupt", f"sidecars {', '.join(map(repr, both))} both give member "
                                                    f"{clash[0]!r}"))
    unsafe = unsafe_record(key, "", exts)
    if unsafe is not None:
        return FolderEntry(key, problem=(unsafe.kind, unsafe.message))
    return FolderEntry(key, os.path.join(rel, name), paths)

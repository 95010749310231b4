"""Property: a folder's examples plus its records are exactly its media files; keys unique and stable.

Trees are drawn with dots in names, case clashes, unicode, hidden files and folders, sidecars,
nested class folders and symlinks (to files and folders, inside and outside the root, dangling).
The oracle is independent of the reader: it walks what was written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchpack.errors import ErrorRecord
from patchpack.sources import Sample
from patchpack.sources.extensions import MEDIA_EXTS
from patchpack.sources.folder import read_folder

STEMS = ["x", "X", "2021.05.01", "a.b.c", ".h", "ü", "日本", "x y", "-", "100%"]
EXTS = ["jpg", "JPG", "png", "mp4", "gif", "txt", "TXT", "json", "cls", "pkl", ""]
FOLDERS = ["", "cat", "Cat", "dög", ".hidden", "cat/sub", "cat/sub.d", "a.b"]
LINKS = ["file-inside", "file-outside", "dangling", "folder-inside", "folder-outside"]

names = st.builds(lambda stem, ext: f"{stem}.{ext}" if ext else stem, st.sampled_from(STEMS), st.sampled_from(EXTS))
files = st.lists(st.tuples(st.sampled_from(FOLDERS), names), min_size=1, max_size=14, unique=True)
links = st.lists(st.tuples(st.sampled_from(LINKS), st.sampled_from(FOLDERS), names), max_size=4, unique=True)


def is_media(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in MEDIA_EXTS


def build(base: Path, tree: list[tuple[str, str]], link_specs: list[tuple[str, str, str]]) -> Path:
    root, outside = base / "root", base / "outside"
    (outside / "o").mkdir(parents=True)
    (outside / "o" / "p.jpg").write_bytes(b"outside")
    (outside / "q.png").write_bytes(b"outside")
    root.mkdir()
    for folder, name in tree:
        (root / folder).mkdir(parents=True, exist_ok=True)
        path = root / folder / name
        if not path.exists():
            path.write_bytes(f"{folder}/{name}".encode())
    for kind, folder, name in link_specs:
        (root / folder).mkdir(parents=True, exist_ok=True)
        path = root / folder / name
        if os.path.lexists(path):
            continue
        target = {"file-inside": root / tree[0][0] / tree[0][1], "file-outside": outside / "q.png",
                  "dangling": root / "missing.jpg", "folder-inside": root / "cat", "folder-outside": outside / "o"}[kind]
        os.symlink(target, path)
    return root


def expected(root: Path, follow: bool) -> tuple[set[str], set[str], int]:
    """(keys of media files, keys of folder records, unread file count) by a plain walk: hidden
    folders and folder links are records (followed: outside links when ``follow``, the first in
    depth-first name order when two lead to one folder)."""
    media, folder_records, unread = set(), set(), 0
    stack = [("", root)]
    seen = set()
    while stack:
        rel, path = stack.pop()
        if os.stat(path).st_ino in seen:  # entered before: a loop or a second way in
            folder_records.add(rel)
            continue
        seen.add(os.stat(path).st_ino)
        entries = sorted(os.listdir(path))
        here = [n for n in entries if not os.path.isdir(path / n)]
        stems = {n.rpartition(".")[0] for n in here if is_media(n)}
        unread += sum(1 for n in here if not is_media(n) and ("." not in n or n.rpartition(".")[0] not in stems))
        media |= {rel + n for n in here if is_media(n)}
        for n in reversed(entries):  # popped in name order: depth first, as the reader walks
            sub = path / n
            if not os.path.isdir(sub):
                continue
            out = not os.path.realpath(sub).startswith(os.path.realpath(root) + os.sep)
            if n.startswith(".") or (os.path.islink(sub) and (not out or not follow)):
                folder_records.add(rel + n + "/")
            else:
                stack.append((rel + n + "/", sub))
    return media, folder_records, unread


def outcome(root: Path, follow: bool) -> list[tuple[str, int, str]]:
    out = []
    for r in read_folder(str(root), 0, lambda i: True, follow_outside_links=follow):
        out.append((r.key, getattr(r, "index", -1), "sample" if isinstance(r, Sample) else r.kind))
        assert isinstance(r, (Sample, ErrorRecord))
        if isinstance(r, Sample):
            assert set(r.members) - {"cls"} <= {n.rpartition(".")[2].lower() for n in os.listdir(root / os.path.dirname(
                r.key) or root)} | {r.key.rpartition(".")[2].lower()}
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files, links, st.booleans())
def test_examples_plus_records_are_exactly_the_media_files(tree, link_specs, follow):
    with tempfile.TemporaryDirectory() as base:
        root = build(Path(base), tree, link_specs)
        first = outcome(root, follow)
        assert first == outcome(root, follow)  # stable across reads: same keys, indices, kinds
        keys = [k for k, _, kind in first if kind != "unread-files"]
        assert len(keys) == len(set(keys))  # unique
        assert keys == sorted(keys)  # key order; a sample's index is its place among examples and records
        assert all(i == keys.index(k) for k, i, kind in first if kind == "sample")
        media, folder_records, unread = expected(root, follow)
        assert set(keys) == media | folder_records  # nothing lost silently, nothing invented
        summary = [k for k, _, kind in first if kind == "unread-files"]
        assert summary == ([str(root)] if unread else [])
        if unread:
            message = next(r.message for r in read_folder(str(root), 0, lambda i: True, follow_outside_links=follow)
                           if isinstance(r, ErrorRecord) and r.kind == "unread-files")
            assert int(re.match(r"(\d+) file", message).group(1)) == unread

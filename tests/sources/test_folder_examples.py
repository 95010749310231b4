"""A plain folder is not a tar: every media file is an example (or a record), sidecars are its members."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from urllib.parse import unquote

import hostile as H
import pytest

from patchpack.errors import ErrorRecord
from patchpack.sources import Sample, read_shard
from patchpack.sources.folder import UNREAD_NAMES_SHOWN, folder_classes, read_folder, tar_key
from patchpack.sources.tarscan import TarSample, scan_tar


def read(root, follow: bool = False, start: int = 0, owns=lambda i: True):
    recs = list(read_folder(str(root), start, owns, follow_outside_links=follow))
    samples = {r.key: r for r in recs if isinstance(r, Sample)}
    records = {r.key: r for r in recs if isinstance(r, ErrorRecord)}
    return samples, records


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_dotted_names_are_one_example_each(tmp_path):
    write(tmp_path, {f"2021.05.0{d}.jpg": bytes([d]) for d in range(1, 4)})
    samples, records = read(tmp_path)
    assert records == {}
    assert {k: s.members for k, s in samples.items()} == {f"2021.05.0{d}.jpg": {"jpg": bytes([d])} for d in range(1, 4)}


def test_case_variants_are_separate_examples(tmp_path):
    write(tmp_path, {"x.jpg": b"lower", "x.JPG": b"upper", "x.txt": b"caption"})
    samples, records = read(tmp_path)
    assert records == {}
    assert samples["x.jpg"].members == {"jpg": b"lower", "txt": b"caption"}
    assert samples["x.JPG"].members == {"jpg": b"upper", "txt": b"caption"}


def test_sidecars_are_members_and_a_cls_sidecar_wins_over_the_class_folder(tmp_path):
    write(tmp_path, {"cat/x.jpg": b"img", "cat/x.txt": b"a cat", "cat/x.json": b'{"y": 1}', "cat/x.cls": b"7",
                     "cat/y.png": b"img2", "dog/z.mp4": b"vid", "dog/z.png": b"poster", "dog/z.txt": b"a dog"})
    samples, records = read(tmp_path)
    assert records == {}
    assert samples["cat/x.jpg"].members == {"jpg": b"img", "txt": b"a cat", "json": b'{"y": 1}', "cls": b"7"}
    assert samples["cat/y.png"].members == {"png": b"img2", "cls": b"0"}
    # two media files with one stem: two examples, each with the sidecars
    assert samples["dog/z.mp4"].members == {"mp4": b"vid", "txt": b"a dog", "cls": b"1"}
    assert samples["dog/z.png"].members == {"png": b"poster", "txt": b"a dog", "cls": b"1"}


def test_files_that_are_not_read_are_counted_in_one_record(tmp_path):
    write(tmp_path, {"a.jpg": b"1", "orphan.txt": b"no media", "README": b"notes", ".DS_Store": b"\0",
                     "sub/notes.md": b"#"})
    samples, records = read(tmp_path)
    assert set(samples) == {"a.jpg"}
    (rec,) = records.values()
    assert (rec.key, rec.kind) == (str(tmp_path), "unread-files")
    assert rec.message.startswith("4 file(s)") and "'orphan.txt'" in rec.message and "'sub/notes.md'" in rec.message
    many = tmp_path / "many"
    write(many, {f"n{i}.txt": b"" for i in range(UNREAD_NAMES_SHOWN + 3)})
    assert list(read(many)[1].values())[0].message.endswith(", ...")


def test_the_unread_record_comes_once_from_the_consumer_of_index_0(tmp_path):
    write(tmp_path, {"a.jpg": b"1", "b.jpg": b"2", "c.txt": b"orphan"})
    assert "unread-files" in {r.kind for r in read(tmp_path)[1].values()}
    assert read(tmp_path, start=1)[1] == {}
    assert read(tmp_path, owns=lambda i: i % 2 == 1)[1] == {}


def test_hidden_files_and_folders_are_records(tmp_path):
    write(tmp_path, {"a.jpg": b"1", ".b.jpg": b"2", ".cache/c.jpg": b"3", "cls/.ipynb_checkpoints/d.png": b"4"})
    samples, records = read(tmp_path)
    assert set(samples) == {"a.jpg"}
    assert {k: r.kind for k, r in records.items()} == {".b.jpg": "hidden", ".cache/": "hidden",
                                                       "cls/.ipynb_checkpoints/": "hidden"}


def test_sidecar_clash_and_unsafe_sidecar_are_records_for_their_examples(tmp_path):
    write(tmp_path, {"x.jpg": b"1", "x.txt": b"a", "x.TXT": b"b", "y.png": b"2", "y.pkl": b"\x80", "z.png": b"3"})
    samples, records = read(tmp_path)
    assert set(samples) == {"z.png"}
    assert {k: r.kind for k, r in records.items()} == {"x.jpg": "corrupt", "y.png": "unsafe"}
    assert "'x.TXT'" in records["x.jpg"].message and "'txt'" in records["x.jpg"].message


@pytest.fixture
def outside(tmp_path):
    """A folder of cat images outside the root ``tmp_path / "root"``."""
    write(tmp_path / "elsewhere", {"c1.jpg": b"c1", "c1.txt": b"cap", "c2.jpg": b"c2"})
    root = tmp_path / "root"
    write(root, {"dog/d.jpg": b"d"})
    return root, tmp_path / "elsewhere"


def test_a_symlinked_class_folder_outside_the_root_is_a_record_or_followed(outside):
    root, elsewhere = outside
    os.symlink(elsewhere, root / "cat")
    assert folder_classes(str(root)) == ["cat", "dog"]  # the class index does not depend on the option
    samples, records = read(root)
    assert set(samples) == {"dog/d.jpg"}
    assert {k: r.kind for k, r in records.items()} == {"cat/": "link"}
    assert "follow_outside_links=True" in records["cat/"].message
    samples, records = read(root, follow=True)
    assert records == {} and set(samples) == {"cat/c1.jpg", "cat/c2.jpg", "dog/d.jpg"}
    assert samples["cat/c1.jpg"].members == {"jpg": b"c1", "txt": b"cap", "cls": b"0"}


def test_folder_links_inside_the_root_and_loops_are_records(outside):
    root, elsewhere = outside
    os.symlink(root / "dog", root / "all")  # inside: the files are read at their own path only
    os.symlink("..", root / "dog" / "up")  # a loop back to the root
    os.symlink(elsewhere, elsewhere / "again")  # outside, a loop into itself
    os.symlink(elsewhere, root / "ext")
    os.symlink(elsewhere, root / "ext2")  # a second link to one outside folder
    samples, records = read(root, follow=True)
    assert set(samples) == {"dog/d.jpg", "ext/c1.jpg", "ext/c2.jpg"}
    assert {k: r.kind for k, r in records.items()} == {"all/": "link", "dog/up/": "link", "ext/again/": "link",
                                                       "ext2/": "link"}


def test_symlinked_files_outside_the_root_are_followed_only_when_allowed(outside):
    root, elsewhere = outside
    os.symlink(elsewhere / "c1.jpg", root / "dog" / "e.jpg")
    os.symlink("d.jpg", root / "dog" / "f.jpg")  # inside: read
    samples, records = read(root)
    assert set(samples) == {"dog/d.jpg", "dog/f.jpg"}
    assert {k: r.kind for k, r in records.items()} == {"dog/e.jpg": "link"}
    samples, records = read(root, follow=True)
    assert records == {} and samples["dog/e.jpg"].members["jpg"] == b"c1"


def test_keys_are_stable_and_resume_and_ownership_split_the_same_examples(tmp_path):
    write(tmp_path, {f"{c}/{i}.{e}": bytes([i]) for c in "ab" for i in range(4) for e in ("jpg", "txt")})
    full = list(read_shard(str(tmp_path)))
    assert [(r.key, r.index) for r in full] == [(r.key, r.index) for r in read_shard(str(tmp_path))]
    assert [r.key for r in full] == sorted(r.key for r in full)
    tail = list(read_folder(str(tmp_path), 3, lambda i: True))
    assert [(r.key, r.index) for r in tail] == [(r.key, r.index) for r in full[3:]]
    halves = [list(read_folder(str(tmp_path), 0, lambda i, k=k: i % 2 == k)) for k in (0, 1)]
    assert sorted(r.key for h in halves for r in h) == sorted(r.key for r in full)


def test_a_name_that_is_not_utf8_gets_an_escaped_key(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as fh:
        fh.write(b"x")
    samples, records = read(tmp_path)
    assert records == {} and set(samples) == {"caf\\xe9.jpg"}
    assert json.loads(json.dumps("caf\\xe9.jpg")) == "caf\\xe9.jpg"


def test_tar_key_makes_folder_keys_webdataset_keys(tmp_path):
    keys = ["cat/2021.05.01.jpg", "cat/2021.05.01.png", "100%.jpg", "a%2E.jpg", "x.JPG"]
    assert len({tar_key(k) for k in keys}) == len(keys) and all("." not in tar_key(k) for k in keys)
    assert [unquote(tar_key(k)) for k in keys] == keys
    data = H.tar_bytes([(f"{tar_key(k)}.{e}", k.encode()) for k in keys for e in ("jpg", "txt")])
    got = [s for s in scan_tar(io.BytesIO(data), "t") if isinstance(s, TarSample)]
    assert [unquote(s.key) for s in got] == keys and all(set(s.members) == {"jpg", "txt"} for s in got)


def test_an_unlistable_folder_is_a_record(tmp_path, monkeypatch):
    write(tmp_path, {"a.jpg": b"1", "locked/b.jpg": b"2"})
    scandir = os.scandir

    def refusing(path):
        if os.path.basename(os.path.normpath(path)) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    samples, records = read(tmp_path)
    assert set(samples) == {"a.jpg"} and records["locked/"].kind == "corrupt"
    assert "Permission denied" in records["locked/"].message


def test_a_deep_tree_needs_no_recursion(tmp_path):
    deep = tmp_path
    for _ in range(1200):  # deeper than Python's recursion limit
        deep = deep / "d"
        try:
            deep.mkdir()
        except OSError:  # the path grew too long for this file system: deep enough
            deep = deep.parent
            break
    (deep / "x.png").write_bytes(b"1")
    samples, records = read(tmp_path)
    assert records == {} and len(samples) == 1
    (deep / "x.png").unlink()
    while deep != tmp_path:  # shutil.rmtree recurses: remove the tree here, bottom up
        deep.rmdir()
        deep = deep.parent


def test_media_extensions_are_the_decoders_ones():
    from patchpack.decode.image import IMAGE_EXTS
    from patchpack.decode.video.config import VIDEO_EXTS
    from patchpack.sources import extensions

    assert extensions.IMAGE_EXTS == IMAGE_EXTS and extensions.VIDEO_EXTS == VIDEO_EXTS

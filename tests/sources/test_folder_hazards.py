"""Folder sources read regular files only, with a size bound; anything else is a record."""

from __future__ import annotations

import os

import hostile as H
import pytest

from patchpack.errors import SampleError
from patchpack.sources import read_shard
from patchpack.sources.folder import read_folder, read_regular_file
from patchpack.sources.tar import read_tar
from patchpack.sources.tarscan import MAX_ZERO_BLOCKS


def kinds(recs):
    return {r.key: r.kind for r in recs if not hasattr(r, "members")}


def folder_keys(keys: list[str], last: str) -> set[str]:
    """The hostile folder builders' keys as folder keys (the media file's path, extension
    included): good ``.png`` files, then the hazard named ``last``."""
    return {k if k.endswith(".png") else k + ".png" for k in keys[:-1]} | {last}


def test_fifo_named_like_an_image_is_a_record_not_a_hang(tmp_path):
    keys = H.fifo_folder(tmp_path)
    recs = list(read_shard(str(tmp_path)))
    assert kinds(recs) == {"a/x.jpg": "special-file"}
    assert {r.key for r in recs} == folder_keys(keys, "a/x.jpg")


@pytest.mark.parametrize("follow", [False, True])
def test_symlink_to_dev_zero_is_a_record(tmp_path, follow):
    keys = H.devzero_folder(tmp_path)
    recs = list(read_folder(str(tmp_path), 0, lambda i: True, follow_outside_links=follow))
    assert kinds(recs) == {"a/z.jpg": "special-file"}
    assert "/dev/zero" in next(r.message for r in recs if r.key == "a/z.jpg")
    assert {r.key for r in recs} == folder_keys(keys, "a/z.jpg")


def test_dangling_symlink_and_symlinked_regular_file(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "real.png").write_bytes(H.ok_image(1))
    os.symlink("real.png", d / "alias.png")
    os.symlink("missing.png", d / "gone.png")
    os.symlink("loop2.png", d / "loop1.png")
    os.symlink("loop1.png", d / "loop2.png")
    recs = list(read_shard(str(tmp_path)))
    assert kinds(recs) == {"a/gone.png": "link", "a/loop1.png": "link", "a/loop2.png": "link"}
    assert {r.key for r in recs if hasattr(r, "members")} == {"a/real.png", "a/alias.png"}


def test_file_over_the_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.jpg"
    with open(path, "wb") as fh:
        fh.truncate(5_000_000)  # a hole: no bytes written
    with pytest.raises(SampleError) as e:
        read_regular_file(str(path), max_bytes=1_000_000)
    assert e.value.kind == "oversize-member"
    assert read_regular_file(str(path), max_bytes=5_000_000)[:4] == b"\x00" * 4


@pytest.mark.parametrize("make", ["fifo", "devzero", "folder"])
@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_shard_path_that_is_not_a_regular_file_is_one_record_not_a_hang(tmp_path, make, scheme):
    path = tmp_path / "shard.tar"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "devzero":
        os.symlink("/dev/zero", path)
    else:
        path.mkdir()
    url = scheme + str(path)
    recs = list(read_shard(url)) if make != "folder" else list(read_tar(url, 0, lambda i: True))
    assert len(recs) == 1 and (recs[0].key, recs[0].kind) == (url, "unreadable")
    what = {"fifo": "is a FIFO", "devzero": "is a character device (symlink to '/dev/zero')", "folder": "is a directory"}
    assert recs[0].message == f"cannot open shard: {path} {what[make]}; only regular files are read"


def test_an_endless_stream_of_zeros_ends_in_one_record():
    recs = list(read_shard("pipe:cat /dev/zero"))
    assert len(recs) == 1 and recs[0].kind == "shard"
    assert recs[0].message == f"more than {MAX_ZERO_BLOCKS} zero blocks in a row from byte 0: the rest of the stream is not read"

"""Folder sources read regular files only, with a size bound; anything else is a record."""

from __future__ import annotations

import os

import hostile as H
import pytest

from patchpack.errors import SampleError
from patchpack.sources import read_shard
from patchpack.sources.folder import read_regular_file


def kinds(recs):
    return {r.key: r.kind for r in recs if not hasattr(r, "members")}


def test_fifo_named_like_an_image_is_a_record_not_a_hang(tmp_path):
    keys = H.fifo_folder(tmp_path)
    recs = list(read_shard(str(tmp_path)))
    assert kinds(recs) == {"a/x": "special-file"}
    assert {r.key for r in recs} == set(keys)


def test_symlink_to_dev_zero_is_a_record(tmp_path):
    keys = H.devzero_folder(tmp_path)
    recs = list(read_shard(str(tmp_path)))
    assert kinds(recs) == {"a/z": "special-file"}
    assert "/dev/zero" in next(r.message for r in recs if r.key == "a/z")
    assert {r.key for r in recs} == set(keys)


def test_dangling_symlink_and_symlinked_regular_file(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "real.png").write_bytes(H.ok_image(1))
    os.symlink("real.png", d / "alias.png")
    os.symlink("missing.png", d / "gone.png")
    recs = list(read_shard(str(tmp_path)))
    assert kinds(recs) == {"a/gone": "link"}
    assert {r.key for r in recs if hasattr(r, "members")} == {"a/real", "a/alias"}


def test_file_over_the_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.jpg"
    with open(path, "wb") as fh:
        fh.truncate(5_000_000)  # a hole: no bytes written
    with pytest.raises(SampleError) as e:
        read_regular_file(str(path), max_bytes=1_000_000)
    assert e.value.kind == "oversize-member"
    assert read_regular_file(str(path), max_bytes=5_000_000)[:4] == b"\x00" * 4

"""A damaged or hostile manifest.json is a clear ManifestError, never a traceback or a path outside."""

from __future__ import annotations

import json

import pytest

from media import make_samples, write_shards
from patchpack.cli import main
from patchpack.offline.engines import preprocess
from patchpack.storage.manifest import (MANIFEST, ManifestError, is_patchpack_folder, list_shards, read_manifest,
                                        verify_folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    urls = write_shards(root / "src", make_samples(4), per_shard=4)
    preprocess(urls, root / "out", progress=False)
    return root, urls, (root / "out" / MANIFEST).read_text()


BAD = {
    "deep": "[" * 100_000 + "]" * 100_000,
    "not json": "{not json",
    "a list": "[1, 2]",
    "shards not a list": '{"format": "patchpack-shards", "shards": 3}',
    "entry not an object": '{"format": "patchpack-shards", "shards": [7]}',
    "output outside": '{"format": "patchpack-shards", "shards": [{"output": "../../etc/passwd"}]}',
    "absolute output": '{"format": "patchpack-shards", "shards": [{"output": "/etc/passwd"}]}',
    "errors file outside": '{"format": "patchpack-shards", "shards": [{"output": "a.arrow", "errors_file": "../x"}]}',
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_is_a_manifest_error(tmp_path, case):
    (tmp_path / MANIFEST).write_text(BAD[case])
    with pytest.raises(ManifestError, match=MANIFEST):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError):
        list_shards(tmp_path)
    assert not is_patchpack_folder(tmp_path)
    assert len(verify_folder(tmp_path)) == 1


def test_a_good_manifest_still_reads(run):
    root, _, _ = run
    assert is_patchpack_folder(root / "out") and verify_folder(root / "out") == []
    assert [p.suffix for p in list_shards(root / "out")] == [".arrow"]


def test_preprocess_over_a_damaged_manifest_asks_for_overwrite_in_one_line(run, tmp_path, capsys):
    root, urls, good = run
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(BAD["deep"])
    code = main(["preprocess", *urls, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unreadable manifest (RecursionError" in err[0] and "--overwrite" in err[0]
    assert main(["preprocess", *urls, "--out", str(out), "--no-progress", "--overwrite"]) == 0
    def keep(m):
        return [(e["output"], e["examples"], e["sha256"]) for e in json.loads(m)["shards"]]

    assert keep((out / MANIFEST).read_text()) == keep(good)

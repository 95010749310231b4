"""preprocess() never marks a run complete when a source gave nothing or no example came through."""

from __future__ import annotations

import json

import pytest

from media import make_samples, write_raw_tar, write_shards
from patchpack.cli import main as cli_main
from patchpack.fit import FitConfig
from patchpack.offline import PreprocessConfig, PreprocessError, preprocess, read_manifest

CFG = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48))


def test_wrong_local_path_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"input shard .*missing-000\.tar does not exist; check the path"):
        preprocess(str(tmp_path / "missing-000.tar"), out, CFG, progress=False)
    assert not out.exists()
    good = write_shards(tmp_path / "src", make_samples(4), per_shard=4)
    with pytest.raises(FileNotFoundError, match=r"1 of 2 input shards do not exist"):
        preprocess([*good, str(tmp_path / "missing-001.tar")], out, CFG, progress=False)
    assert not out.exists()


def test_source_that_gives_nothing_leaves_the_run_incomplete(tmp_path):
    good = write_shards(tmp_path / "src", make_samples(4), per_shard=4)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar file" * 100)
    out = tmp_path / "out"
    with pytest.raises(PreprocessError, match=r"^2 of 3 input shard\(s\) gave nothing \(first: pipe:false: cannot open"):
        preprocess([*good, "pipe:false", str(garbage)], out, CFG, progress=False)
    m = read_manifest(out)
    assert m["complete"] is False
    unread = {e["input"] for e in m["unread"]}
    assert unread == {"pipe:false", str(garbage)} and [e["input"] for e in m["shards"]] == good
    assert sorted(p.name for p in out.glob("*.arrow")) == sorted(e["output"] for e in m["shards"])  # none for unread
    assert m["totals"]["examples"] == 4
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {r["shard"] for r in records if r["kind"] == "unreadable"} >= unread
    # a rerun with the bad source fixed finishes only what is missing and completes
    m2 = preprocess(good, out, CFG, progress=False)
    assert m2["complete"] and m2["unread"] == [] and m2["totals"]["examples"] == 4


def test_run_where_no_example_came_through_is_not_complete(tmp_path):
    urls = write_shards(tmp_path / "src", [{"__key__": f"t{i}", "txt": b"caption only"} for i in range(3)],
                        per_shard=3)
    out = tmp_path / "out"
    with pytest.raises(PreprocessError, match=r"no example came through \(3 samples, 3 error records: no-media=3\)"):
        preprocess(urls, out, CFG, progress=False)
    m = read_manifest(out)
    assert m["complete"] is False and m["totals"]["examples"] == 0
    assert len((out / "errors.jsonl").read_text().splitlines()) == 3


def test_cli_reports_a_failing_pipe_in_records_not_a_traceback(tmp_path, capsys):
    code = cli_main(["preprocess", "pipe:false", "--out", str(tmp_path / "out"), "--no-progress",
                     "--patch-size", "8", "--max-patches", "48"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0] == "patchpack preprocess: error: no example came through (1 error records: unreadable=1)"
    assert err[1].startswith("  pipe:false [unreadable] cannot open shard")
    assert read_manifest(tmp_path / "out")["complete"] is False
    assert not list((tmp_path / "out").glob("*.arrow"))

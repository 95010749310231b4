"""tools/make_shards.py, lint_shards.py and shard_info.py on small data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from media import broken_payloads, image_bytes, make_samples, write_folder, write_raw_tar, write_shards

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_every_tool_has_help():
    for name in ("check_layers", "shard_info", "lint_shards", "make_shards", "readme_figures"):
        r = _tool(name, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, name


def test_make_shards_from_class_folders_gives_labelled_shards(tmp_path):
    keys = [k + ".png" for k in write_folder(tmp_path / "src", {"cat": 3, "dog": 4})]
    (tmp_path / "src" / "dog" / "bad.png").write_bytes(image_bytes(8, 8))
    (tmp_path / "src" / "dog" / "bad.pkl").write_bytes(b"\x80\x04")  # a sidecar needing unpickling
    (tmp_path / "src" / "cat" / "2021.05.01.png").write_bytes(image_bytes(8, 8))  # dots stay one sample
    keys.append("cat/2021.05.01.png")
    r = _tool("make_shards", tmp_path / "src", "--out", tmp_path / "out", "--per-shard", 3)
    assert r.returncode == 0, r.stderr
    assert "8 samples -> 3 shard(s)" in r.stdout and "dog/bad.png" in r.stderr and "unsafe" in r.stderr
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == {"cat": 0, "dog": 1}
    from patchpack.sources import Sample, read_shard
    from patchpack.sources.folder import tar_key

    got = {}
    for shard in sorted((tmp_path / "out").glob("shard-*.tar")):
        for s in read_shard(str(shard)):
            assert isinstance(s, Sample)
            got[s.key] = int(s.members["cls"])
    assert got == {tar_key(k): (0 if k.startswith("cat/") else 1) for k in keys}


def test_lint_shards_reports_kinds_unsafe_members_and_end_markers(tmp_path):
    (clean,) = write_shards(tmp_path / "clean", make_samples(5, seed=1), per_shard=10)
    r = _tool("lint_shards", clean)
    assert r.returncode == 0 and "5 samples, 0 problems (clean)" in r.stdout, r.stdout + r.stderr
    files = [("ok.png", image_bytes(16, 16, "PNG")), ("ok.cls", b"1"), ("evil.pkl", b"\x80\x04"),
             ("evil.png", image_bytes(8, 8, "PNG")), ("badlabel.png", image_bytes(8, 8)), ("badlabel.cls", b"x")]
    files += [(f"{name}.{ext}", data) for name, (ext, data, _) in broken_payloads().items()]
    bad = write_raw_tar(tmp_path / "bad.tar", files)
    r = _tool("lint_shards", bad, "--json", "--pixels")  # some damage shows only when decoding
    assert r.returncode == 1
    report = json.loads(r.stdout)
    kinds = {(p["key"], p["kind"]) for p in report["problems"]}
    assert ("evil", "unsafe") in kinds and ("badlabel", "bad-label") in kinds
    for name, (_, _, kind) in broken_payloads().items():
        assert (name, kind) in kinds, name
    assert all(p["member"] for p in report["problems"] if p["kind"] not in ("unsafe", "no-media", "shard"))
    cut = tmp_path / "cut.tar"
    data = Path(clean).read_bytes()
    end = -(-len(data.rstrip(b"\x00")) // 512) * 512  # the last member's end: drop the end-of-archive blocks
    cut.write_bytes(data[:end])
    r = _tool("lint_shards", cut)
    assert r.returncode == 1 and "shard" in r.stdout and "end-of-archive" in r.stdout


def test_shard_info_verifies_a_preprocessed_folder(tmp_path):
    from patchpack.fit import FitConfig
    from patchpack.offline import PreprocessConfig, preprocess

    urls = write_shards(tmp_path / "src", make_samples(8, seed=2), per_shard=4)
    out = tmp_path / "out"
    preprocess(urls, out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=32)), progress=False)
    r = _tool("shard_info", out)
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout and r.stdout.count(" ok\n") == 2 and "p=8" in r.stdout
    info = json.loads(_tool("shard_info", out, "--json").stdout)
    assert info["totals"]["examples"] == sum(s["examples"] for s in info["shards"]) and not info["problems"]
    shard = out / info["shards"][0]["output"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    r = _tool("shard_info", out)
    assert r.returncode == 1 and "sha256 differs" in r.stderr
    assert _tool("shard_info", out, "--no-verify").returncode == 0  # sizes still match
    single = _tool("shard_info", out / info["shards"][1]["output"])
    assert single.returncode == 0 and "examples shard" in single.stdout

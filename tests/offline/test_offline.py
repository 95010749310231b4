"""Offline preprocessing: same examples as the online loader, atomic, resumable, deterministic."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from patchpack.storage.manifest import list_shards, sha256_file
from patchpack.storage.reader import ShardReader, iter_shard_examples, iter_shard_sequences
from patchpack.cli import main as cli_main
from patchpack.fit import FitConfig
from patchpack.loader import LoaderConfig, make_loader
from patchpack.offline import ManifestError, PreprocessConfig, output_name, preprocess, read_manifest
from patchpack.pack import PackConfig

P = 8
FIT = FitConfig(patch_size=P, max_patches=48)


def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG" if rng.random() < 0.7 else "PNG")
    return buf.getvalue()


def _write_shards(folder: Path, shards: int, per_shard: int, seed: int = 0, bad: bool = True,
                  max_side: int = 80) -> list[str]:
    """Shards of random JPEG/PNG images with labels; with ``bad``, shard 0 carries broken samples."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    urls = []
    for s in range(shards):
        url = str(folder / f"src-{s:03d}.tar")
        with wds.TarWriter(url) as sink:
            for i in range(per_shard):
                h, w = (int(v) for v in rng.integers(4, max_side, 2))
                sink.write({"__key__": f"s{s}/img{i:04d}", "jpg": _jpeg(rng, h, w), "cls": str(i % 5)})
            if bad and s == 0:
                sink.write({"__key__": f"s{s}/corrupt", "jpg": b"\xff\xd8\xff\xe0" + bytes(50), "cls": "1"})
                sink.write({"__key__": f"s{s}/empty", "jpg": b"", "cls": "1"})
                sink.write({"__key__": f"s{s}/nomedia", "txt": b"hello", "cls": "1"})
                sink.write({"__key__": f"s{s}/badlabel", "jpg": _jpeg(rng, 16, 16), "cls": "x"})
        urls.append(url)
    return urls


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    return _write_shards(tmp_path_factory.mktemp("src"), shards=3, per_shard=12)


def _online(urls, cfg: LoaderConfig):
    """Every example the online loader yields: key -> (grid, label, patches, positions); and its errors."""
    loader = make_loader(urls, cfg)
    out = {}
    for b in loader:
        for i, keys in enumerate(b.sample_keys):
            for j, key in enumerate(keys):
                sel = b.segment_ids[i] == j + 1
                out[key] = (tuple(b.grids[i, j].tolist()), int(b.labels[i, j]), b.patches[i][sel].numpy(),
                            b.positions[i][sel].numpy())
    return out, loader.errors


def _offline(out_dir: Path):
    return {t.key: t for p in list_shards(out_dir) for t in iter_shard_examples(p)}


def _errors(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "errors.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["native", "side-uniform"])
def test_read_back_equals_online_examples(shards, tmp_path, mode):
    fit = FitConfig(patch_size=P, max_patches=48, mode=mode, side_min=8, side_max=64)
    lcfg = LoaderConfig(fit=fit, pack=PackConfig(seq_len=64, buffer_size=8), batch_size=3, seed=7,
                        shuffle_shards=False)
    online, online_errors = _online(shards, lcfg)
    m = preprocess(shards, tmp_path, PreprocessConfig.from_loader(lcfg), progress=False)
    offline = _offline(tmp_path)
    assert set(offline) == set(online) and len(offline) == 36
    for key, (grid, label, patches, positions) in online.items():
        t = offline[key]
        assert tuple(t.grid) == grid and t.label == label
        np.testing.assert_array_equal(t.patches, patches)
        np.testing.assert_array_equal(t.positions, positions)
        assert t.meta["source_shard"] in shards and min(t.meta["source_size"]) >= 4
    # the same samples fail, with the same kinds
    assert sorted((e["key"], e["kind"]) for e in _errors(tmp_path)) == sorted(
        (e.key, e.kind) for e in online_errors
    )
    assert m["complete"] and m["totals"]["samples"] == 40 and m["totals"]["examples"] == 36
    assert m["error_kinds"] == {"bad-label": 1, "corrupt": 1, "empty": 1, "no-media": 1}


def test_manifest_and_outputs(shards, tmp_path):
    m = preprocess(shards, tmp_path, PreprocessConfig(fit=FIT), progress=False)
    on_disk = read_manifest(tmp_path)
    assert on_disk == m and m["format"] == "patchpack-shards" and m["kind"] == "examples"
    assert m["config"]["fit"]["patch_size"] == P and m["inputs"] == shards
    for url, e in zip(shards, m["shards"]):
        assert e["input"] == url and e["output"] == output_name(url)
        assert e["sha256"] == sha256_file(tmp_path / e["output"]) and e["bytes"] == (tmp_path / e["output"]).stat().st_size
        assert e["samples"] == e["examples"] + e["errors"]
        with ShardReader(tmp_path / e["output"]) as r:
            assert len(r) == e["examples"] and r.metadata["config"] == m["config"] and r.metadata["input"] == url
    assert [p.name for p in list_shards(tmp_path)] == [e["output"] for e in m["shards"]]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_deterministic_across_workers(shards, tmp_path):
    cfg = PreprocessConfig(fit=FitConfig(patch_size=P, max_patches=48, mode="area-truncnorm", side_min=8, side_max=64),
                           seed=3)
    a = preprocess(shards, tmp_path / "a", cfg, workers=1, progress=False)
    b = preprocess(shards, tmp_path / "b", cfg, workers=2, progress=False)
    assert [e["sha256"] for e in a["shards"]] == [e["sha256"] for e in b["shards"]]
    c = preprocess(shards, tmp_path / "c", PreprocessConfig(fit=cfg.fit, seed=4), progress=False)
    assert [e["sha256"] for e in a["shards"]] != [e["sha256"] for e in c["shards"]]


def test_resume_redoes_only_missing_or_damaged_shards(shards, tmp_path):
    cfg = PreprocessConfig(fit=FIT)
    first = preprocess(shards, tmp_path, cfg, progress=False)
    out0, out1 = (tmp_path / e["output"] for e in first["shards"][:2])
    out0.unlink()  # missing
    data = bytearray(out1.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged, same size
    out1.write_bytes(bytes(data))
    mtime2 = (tmp_path / first["shards"][2]["output"]).stat().st_mtime_ns
    second = preprocess(shards, tmp_path, cfg, progress=False)
    assert second["shards"] == [dict(e, seconds=s["seconds"]) for e, s in zip(first["shards"], second["shards"])]
    assert (tmp_path / first["shards"][2]["output"]).stat().st_mtime_ns == mtime2  # untouched
    assert sha256_file(out1) == first["shards"][1]["sha256"]
    with pytest.raises(ManifestError, match="configuration"):
        preprocess(shards, tmp_path, PreprocessConfig(fit=FitConfig(patch_size=P, max_patches=16)), progress=False)
    third = preprocess(shards, tmp_path, PreprocessConfig(fit=FitConfig(patch_size=P, max_patches=16)),
                       overwrite=True, progress=False)
    assert third["config"]["fit"]["max_patches"] == 16
    assert all(max(t.grid[1] * t.grid[2] for t in iter_shard_examples(p)) <= 16 for p in list_shards(tmp_path))


def test_truncated_tar_is_reported_not_lost(tmp_path):
    (url,) = _write_shards(tmp_path / "src", shards=1, per_shard=6, bad=False)
    data = Path(url).read_bytes()
    cut = tmp_path / "src" / "cut.tar"
    cut.write_bytes(data[: len(data) * 2 // 3])
    m = preprocess([str(cut)], tmp_path / "out", PreprocessConfig(fit=FIT), progress=False)
    e = m["shards"][0]
    kinds = {r["kind"] for r in _errors(tmp_path / "out")}
    assert "shard" in kinds and e["examples"] >= 1
    assert e["samples"] == e["examples"] + sum(r["kind"] != "shard" for r in _errors(tmp_path / "out"))


def test_packed_shards(shards, tmp_path):
    cfg = PreprocessConfig(fit=FIT, pack=PackConfig(seq_len=64, buffer_size=8, max_per_seq=6), seed=1)
    m = preprocess(shards, tmp_path, cfg, packed=True, progress=False)
    assert m["kind"] == "packed" and m["totals"]["examples"] == 36
    keys = []
    for p in list_shards(tmp_path):
        for seq in iter_shard_sequences(p):
            assert sum(len(t) for t in seq) <= 64 and 1 <= len(seq) <= 6
            keys += [t.key for t in seq]
    assert len(keys) == len(set(keys)) == 36


def test_cli_preprocess(shards, tmp_path, capsys):
    rc = cli_main(["preprocess", *shards, "--out", str(tmp_path), "--patch-size", str(P), "--max-patches", "48",
                   "--no-progress"])
    assert rc == 0 and "36 examples" in capsys.readouterr().out
    assert read_manifest(tmp_path)["complete"]


def test_sigkill_midway_then_rerun_is_complete(tmp_path):
    urls = _write_shards(tmp_path / "src", shards=8, per_shard=20, seed=5, max_side=200)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "patchpack.cli", "preprocess", *urls, "--out", str(out), "--workers", "2",
           "--patch-size", str(P), "--max-patches", "256", "--no-progress"]
    # the worker of input shard 3 kills the whole run after its 5th example, once a shard is finished
    env = dict(os.environ, PATCHPACK_TEST_KILL_AT="3:5")
    proc = subprocess.run(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob(".*.tmp-*"))  # the interrupted shard's temporary file is left, never a partial shard
    before = read_manifest(out)
    assert not before["complete"] and 1 <= len(before["shards"]) < len(urls)
    finished_before = {e["input"]: e["sha256"] for e in before["shards"]}
    assert urls[3] not in finished_before

    m = preprocess(urls, out, PreprocessConfig(fit=FitConfig(patch_size=P, max_patches=256)), workers=2,
                   progress=False)
    assert m["complete"] and [e["input"] for e in m["shards"]] == urls
    for e in m["shards"]:
        if e["input"] in finished_before:
            assert e["sha256"] == finished_before[e["input"]]  # not redone
        assert sha256_file(out / e["output"]) == e["sha256"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no partial file left
    assert sorted(p.name for p in out.glob("*.arrow")) == sorted(e["output"] for e in m["shards"])
    keys = [t.key for p in list_shards(out) for t in iter_shard_examples(p)]
    reported = [e["key"] for e in _errors(out)]
    every = [f"s{s}/img{i:04d}" for s in range(8) for i in range(20)] + ["s0/corrupt", "s0/empty", "s0/nomedia",
                                                                        "s0/badlabel"]
    assert len(keys) == len(set(keys))  # no duplicate
    assert sorted(keys + reported) == sorted(every)  # every input example present once or reported


@pytest.mark.slow
def test_ray_engine_equals_local(tmp_path):
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'patchpack[ray]')")
    urls = _write_shards(tmp_path / "src", shards=2, per_shard=6, seed=9)
    cfg = PreprocessConfig(fit=FIT, seed=2)
    local = preprocess(urls, tmp_path / "local", cfg, workers=1, progress=False)
    ray_ = preprocess(urls, tmp_path / "ray", cfg, workers=2, engine="ray", progress=False)
    assert [e["sha256"] for e in ray_["shards"]] == [e["sha256"] for e in local["shards"]]
    assert [e["output"] for e in ray_["shards"]] == [e["output"] for e in local["shards"]]
    assert (tmp_path / "ray" / "errors.jsonl").read_text() == (tmp_path / "local" / "errors.jsonl").read_text()
    a, b = _offline(tmp_path / "local"), _offline(tmp_path / "ray")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].patches, b[k].patches) for k in a)


def test_loader_reads_patchpack_folder_as_a_source(shards, tmp_path):
    from patchpack.drop import DropConfig
    from patchpack.sources import expand_sources

    lcfg = LoaderConfig(fit=FitConfig(patch_size=P, max_patches=48, mode="side-uniform", side_min=8, side_max=64),
                        drop=DropConfig(kind="beta", rate_max=0.5), pack=PackConfig(seq_len=64, buffer_size=8),
                        batch_size=3, seed=5, shuffle_shards=False)
    preprocess(shards, tmp_path, PreprocessConfig.from_loader(lcfg), progress=False)
    assert any(u.endswith(".arrow") for u in expand_sources(str(tmp_path)))
    online = list(make_loader(shards, lcfg))
    offline = list(make_loader(str(tmp_path), lcfg))
    assert len(offline) == len(online) and all(a == b for a, b in zip(online, offline))

"""Hostile input, case by case: every input packed or reported, no hang, memory bounded.

Each case builds its own data, runs it in a fresh process (``--case NAME``) under a 60 s limit
and prints what came of it; the parent measures the child's wall time and peak RSS (``wait4``),
against a baseline child that packs 4 small images. Classes: silent loss (folders, stored rows,
tar headers), resume states that lie, unbounded work and memory (decode time and size, keys), and
loud messages (the command line). A case passes when every input is packed or named in a record
(or, for states and mistakes, refused in one line), within the time limit.

    python benchmarks/adversary.py [--quick] [--case NAME]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the hostile corpus builders
sys.path.insert(0, str(ROOT / "tests" / "storage"))

LIMIT_S = 60
KW = dict(seq_len=256, patch_size=16, max_patches=64, batch_size=4, buffer_size=16)


def _png(seed: int = 0, h: int = 32, w: int = 48) -> bytes:
    from media import image_bytes

    return image_bytes(h, w, seed=seed)


def _tar(path: Path, samples: list[tuple[str, dict[str, bytes]]], fmt=tarfile.GNU_FORMAT) -> str:
    with tarfile.open(path, "w", format=fmt) as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return str(path)


def _run_loader(urls, **kw) -> dict:
    from patchpack import make_loader

    loader = make_loader(urls, **{**KW, **kw})
    keys = [k for b in loader for row in b.sample_keys for k in row]
    kinds: dict[str, int] = {}
    for e in loader.errors:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return {"packed": len(keys), "records": kinds}


# -- silent loss ---------------------------------------------------------------------------------
def case_folder_dotted_names(tmp: Path) -> dict:
    d = tmp / "f" / "cat"
    d.mkdir(parents=True)
    for i in range(3):
        (d / f"2021.05.0{i + 1}.jpg").write_bytes(_png(i))
    return {**_run_loader(str(tmp / "f")), "inputs": 3}


def case_folder_case_clash_and_hidden(tmp: Path) -> dict:
    d = tmp / "f"
    d.mkdir()
    (d / "x.jpg").write_bytes(_png(1))
    (d / "x.JPG").write_bytes(_png(2))
    (d / ".hidden.jpg").write_bytes(_png(3))
    return {**_run_loader(str(d)), "inputs": 3}


def case_folder_symlinked_class(tmp: Path) -> dict:
    real = tmp / "elsewhere"
    real.mkdir()
    (real / "a.jpg").write_bytes(_png(1))
    root = tmp / "f"
    (root / "dogs").mkdir(parents=True)
    (root / "dogs" / "b.jpg").write_bytes(_png(2))
    (root / "cats").symlink_to(real, target_is_directory=True)
    return {**_run_loader(str(root)), "inputs": 2}


def _stored(tmp: Path, packed: bool) -> Path:
    from media import make_samples, write_shards
    from patchpack.fit import FitConfig
    from patchpack.offline import PreprocessConfig, preprocess
    from patchpack.pack import PackConfig

    src = write_shards(tmp / "src", make_samples(8, sizes=((32, 48),), seed=3), per_shard=8)
    out = tmp / "stored"
    preprocess(src, out, PreprocessConfig(fit=FitConfig(patch_size=16, max_patches=64), packed=packed,
                                          pack=PackConfig(seq_len=256, max_per_seq=8)), progress=False)
    return out


def case_stored_row_slot_lengths(tmp: Path) -> dict:
    import shardkit
    from patchpack.storage.manifest import list_shards

    out = _stored(tmp, packed=True)
    shard = list_shards(out)[0]
    row = shardkit.read_table(shard).column("lengths")[0].as_py()
    shardkit.tamper(shard, shard, 0, lengths=[0, row[0] + row[1]] + row[2:])
    shardkit.refresh_manifest(out)
    return {**_run_loader(str(out), max_per_seq=8), "inputs": 8}


def case_stored_example_of_zero_tokens(tmp: Path) -> dict:
    import shardkit
    from patchpack.storage.manifest import list_shards

    out = _stored(tmp, packed=False)
    shard = list_shards(out)[0]
    shardkit.tamper(shard, shard, 0, num_tokens=0, tokens=b"")
    shardkit.refresh_manifest(out)
    return {**_run_loader(str(out)), "inputs": 8}


def case_pax_absurd_size(tmp: Path) -> dict:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(3):
            png = _png(i)
            info = tarfile.TarInfo(f"s{i}.png")
            info.size = len(png)
            if i == 1:
                info.pax_headers = {"comment": "x" * 8}
            tf.addfile(info, io.BytesIO(png))
    data = buf.getvalue()
    record = b"20 comment=xxxxxxxx\n"
    assert record in data
    path = tmp / "pax.tar"  # the same record length, now saying sample s1 is 99,999,999,999 bytes long
    path.write_bytes(data.replace(record, b"20 size=99999999999\n"))
    return {**_run_loader(str(path)), "inputs": 3}


# -- resume states that lie ------------------------------------------------------------------------
def _state_after(urls, cut=2):
    from patchpack import make_loader
    from patchpack.loader.resume import decode_state

    loader = make_loader(urls, **{**KW, "buffer_size": 4})
    it = iter(loader)
    for _ in range(cut):
        next(it)
    return decode_state(loader.state_dict())


def _resume(urls, state) -> dict:
    from patchpack import make_loader
    from patchpack.errors import ResumeError

    loader = make_loader(urls, **{**KW, "buffer_size": 4})
    try:
        loader.load_state_dict(state)
        n = sum(b.num_examples for b in loader)
    except ResumeError as exc:
        return {"refused": str(exc)[:110]}
    return {"resumed_examples": n}


def _shards(tmp: Path, n: int = 24, per: int = 6) -> list[str]:
    from media import make_samples, write_shards

    return write_shards(tmp / "s", make_samples(n, sizes=((32, 48),), seed=5), per_shard=per)


def _tampered(tmp: Path, path: tuple, value) -> dict:
    urls = _shards(tmp)
    state = _state_after(urls)
    target = state
    for p in path[:-1]:
        target = target[p]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return _resume(urls, state)


_CURSOR = ("workers", "0", "parent", "parent", "parent", "sources", 0)


def case_state_position_1e18(tmp: Path) -> dict:
    return _tampered(tmp, _CURSOR + ("next",), 10**18)


def case_state_negative_position(tmp: Path) -> dict:
    return _tampered(tmp, _CURSOR + ("next",), -5)


def case_state_task_1e12(tmp: Path) -> dict:
    return _tampered(tmp, _CURSOR + ("task",), 10**12)


def case_state_negative_epoch(tmp: Path) -> dict:
    return _tampered(tmp, ("epoch",), -1)


def case_state_without_fingerprint_other_data(tmp: Path) -> dict:
    from media import make_samples, write_shards

    state = _state_after(_shards(tmp))
    del state["fingerprint"]
    other = write_shards(tmp / "other", make_samples(6, seed=9, prefix="o"), per_shard=6)
    return _resume(other, state)


def case_state_garbled(tmp: Path) -> dict:
    return _tampered(tmp, ("workers",), ["not", "a", "map"])


def case_state_shard_changed(tmp: Path) -> dict:
    urls = _shards(tmp)
    state = _state_after(urls, cut=1)  # mid-shard: a cursor 4 samples into a shard
    for u in urls:  # the first sample of every shard deleted
        with tarfile.open(u) as tf:
            members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
        with tarfile.open(u, "w") as tf:
            for m, data in members[2:]:
                tf.addfile(m, io.BytesIO(data))
    return _resume(urls, state)


# -- unbounded work and memory -----------------------------------------------------------------------
def _hostile_tar(tmp: Path, name: str, ext: str, payload: bytes) -> str:
    samples = [(f"ok{i}", {"png": _png(i)}) for i in range(2)] + [(name, {ext: payload})]
    return _tar(tmp / f"{name}.tar", samples)


def case_progressive_jpeg_many_scans(tmp: Path, quick: bool = False) -> dict:
    import hostile as H

    url = _hostile_tar(tmp, "scans", "jpg", H.many_scans_jpeg(1024 if quick else 2048, 400 if quick else 3000))
    return {**_run_loader(url), "inputs": 3}


def case_ico_embedding_huge_png(tmp: Path, quick: bool = False) -> dict:
    import hostile as H

    side = 8000 if quick else 20000
    url = _hostile_tar(tmp, "ico", "ico", H.ico_embedding(H.solid_png(side, side)))
    return {**_run_loader(url, image__formats=("JPEG", "PNG", "WEBP", "ICO")), "inputs": 3}


def case_tiny_webp_13000(tmp: Path, quick: bool = False) -> dict:
    import hostile as H

    side = 6000 if quick else 13000
    url = _hostile_tar(tmp, "webp", "webp", H.solid_webp(side, side))
    return {**_run_loader(url), "inputs": 3}


def case_video_frames_larger_than_declared(tmp: Path, quick: bool = False) -> dict:
    import hostile as H
    from patchpack.decode.video import VideoConfig

    url = _hostile_tar(tmp, "vid", "mkv", H.lying_video(16, 4000 if quick else 16000))
    return {**_run_loader(url, video=VideoConfig(frames=4, tubelet=2)), "inputs": 3}


def case_keys_of_one_mib(tmp: Path, quick: bool = False) -> dict:
    n = 40 if quick else 400
    buf_path = tmp / "keys.tar"
    with tarfile.open(buf_path, "w", format=tarfile.PAX_FORMAT) as tf:
        png = _png(1)
        for i in range(n + 2):
            key = f"k{i}-" + ("x" * 2**20 if i < n else "")
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(png)
            tf.addfile(info, io.BytesIO(png))
            tf.members.clear()  # tarfile keeps every header it wrote: 400 MiB of names here
    from patchpack import make_loader

    loader = make_loader(str(buf_path), **KW)
    keys = [k for b in loader for row in b.sample_keys for k in row]
    kinds: dict[str, int] = {}
    for e in loader.errors:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return {"packed": len(keys), "records": kinds, "inputs": n + 2,
            "state_bytes": len(json.dumps(loader.state_dict()))}


# -- loud messages ------------------------------------------------------------------------------------
def _cli(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "patchpack.cli", *argv], capture_output=True, text=True,
                       timeout=LIMIT_S)
    err = r.stderr.strip().splitlines()
    return {"exit": r.returncode, "lines": len(err), "said": (err[0] if err else r.stdout.strip()[:80])[:110]}


def case_simulate_seq_len_1e11(tmp: Path) -> dict:
    return _cli("simulate", "--seq-len", "99999999999")


def case_errors_to_missing_folder(tmp: Path) -> dict:
    return _cli("stats", _shards(tmp)[0], "--errors", str(tmp / "no" / "such" / "e.jsonl"), "--no-progress")


def case_report_unwritable(tmp: Path) -> dict:
    blocker = tmp / "file"
    blocker.write_text("x")
    return _cli("stats", _shards(tmp)[0], "--report", str(blocker / "rep"), "--no-progress")


def case_frames_zero(tmp: Path) -> dict:
    return _cli("stats", _shards(tmp)[0], "--frames", "0")


def case_show_out_existing_folder(tmp: Path) -> dict:
    out = tmp / "pics"
    out.mkdir()
    res = _cli("show", _shards(tmp)[0], "--out", str(out))
    return {**res, "wrote": sorted(p.name for p in out.iterdir())}


def case_baseline(tmp: Path) -> dict:
    return {**_run_loader(_tar(tmp / "b.tar", [(f"b{i}", {"png": _png(i)}) for i in range(4)])), "inputs": 4}


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}
QUICK = ["baseline", "folder_dotted_names", "folder_case_clash_and_hidden", "stored_example_of_zero_tokens",
         "pax_absurd_size", "state_position_1e18", "state_without_fingerprint_other_data",
         "progressive_jpeg_many_scans", "tiny_webp_13000", "keys_of_one_mib", "frames_zero"]


def _child(name: str, quick: bool) -> None:
    import resource

    fn = CASES[name]
    with tempfile.TemporaryDirectory() as d:
        kw = {"quick": quick} if "quick" in fn.__code__.co_varnames[: fn.__code__.co_argcount] else {}
        try:
            out = fn(Path(d), **kw)
        except Exception as exc:  # a crash is a finding, printed as one
            out = {"crashed": f"{type(exc).__name__}: {str(exc)[:150]}"}
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({**out, "rss_mib": round(peak / 1024, 1)}))


def _measure(name: str, quick: bool) -> tuple[dict, float, float]:
    """The child's result, wall seconds and peak RSS (MiB, its own or its commands')."""
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--case", name] + (["--quick"] if quick else [])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return {"hung": f"over {LIMIT_S} s"}, time.perf_counter() - start, float("nan")
    seconds = time.perf_counter() - start
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[-1]) if lines else {"crashed": (r.stderr.strip().splitlines() or ["?"])[-1][:150]}
    return res, seconds, float(res.pop("rss_mib", float("nan")))


def _verdict(res: dict) -> str:
    if "hung" in res or "crashed" in res:
        return "FAIL"
    if "wrote" in res:
        return "ok" if res["wrote"] == ["show.png"] and res["exit"] == 0 else "FAIL"
    if "inputs" in res:
        accounted = res["packed"] + sum(res["records"].values())
        return "ok" if accounted >= res["inputs"] else f"LOST {res['inputs'] - accounted}"
    if "refused" in res or res.get("exit") == 2 and res.get("lines") == 1:
        return "ok"
    return "check"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer cases, smaller inputs")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _child(args.case, args.quick)
        return 0
    if args.quick:
        print("(--quick: a smoke run on fewer, smaller cases; the table is judged on a full run)")
    names = QUICK if args.quick else list(CASES)
    base = _measure("baseline", args.quick)[2]
    print(f"{'case':42} {'verdict':8} {'seconds':>8} {'peak MiB':>9} {'x base':>7}  outcome")
    failed = 0
    for name in names:
        res, seconds, rss = _measure(name, args.quick)
        verdict = _verdict(res)
        failed += verdict not in ("ok", "check")
        print(f"{name:42} {verdict:8} {seconds:8.2f} {rss:9.0f} {rss / base:7.2f}  {json.dumps(res)[:150]}")
    print(f"{len(names)} cases, {failed} not accounted for, limit {LIMIT_S} s each")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

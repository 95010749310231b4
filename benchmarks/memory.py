"""Peak memory of loading hostile and large inputs, against a small-image baseline.

Each case is one tar shard run through ``patchpack stats`` (the packed loader over every
example, default settings, one process) in its own child process; the child's peak RSS
is read from ``/proc/self/status`` (``VmHWM``) at its end. Cases:

* ``baseline``: 200 small JPEGs (320 x 240 px);
* ``png16-13000``: one solid 16-bit greyscale PNG of 13000 x 13000 px (a few hundred KB);
* ``sparse-2GiB``: a GNU-sparse member claiming 2 GiB in 6 KB;
* ``member-1GiB``: a regular 1 GiB member (a sparse file on disk, so it is cheap to make);
* ``photos-200``: 200 photos of 3000 x 2000 px (JPEG, ~1-2 MB each);
* hostile decodes, each next to 4 small JPEGs (the row's note says what became of it):
  ``jpeg-scans`` a 1.2 MB progressive JPEG of 8192 x 8192 px and ~2,000 scans (each a pass of
  the decoder over the whole image: ~27 s decoded), ``ico-20000`` an ICO whose directory declares
  16 x 16 but which embeds a 20000 x 20000 PNG (decoded by Pillow while opening),
  ``webp-13000`` a 32-byte lossless WebP of 13000 x 13000 px (under ``max_pixels``; decoded
  whole at ~16 bytes a pixel), ``video-16000`` a Matroska MJPEG stream that declares (and
  starts with) 16 x 16 frames, then sends 16000 x 16000 ones (``stats --frames 2``).

Each row prints the peak in MiB, its excess over the baseline's (``+MiB``; the baseline is
mostly the interpreter with torch imported), the ratio to the baseline's peak and the examples and
errors ``stats`` counted. Goal: no ratio above 1.5. ``--quick`` (CI, < 40 s) uses a 6000 px
PNG, a 300 MiB member, 24 photos and a 60-image baseline. Cases run ``--jobs`` at a time (peaks are per process,
so this changes only the seconds column).

    python benchmarks/memory.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the hostile corpus builders

import hostile as H  # noqa: E402
from PIL import Image  # noqa: E402

GOAL = 1.5

CHILD = r"""
import json, sys, io, contextlib
from patchpack.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["stats", sys.argv[1], "--json", "--no-progress", *sys.argv[2:]])
last = [l for l in out.getvalue().splitlines() if l.startswith("{")]
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "stats": json.loads(last[-1]) if last else {}, "vmhwm_kib": hwm}))
"""


def _small_jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise(240, 320, i)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    return (y * 0.5 + x * 0.5 + rng.normal(0, 12, (h, w, 3)).astype(np.float32)).clip(0, 255).astype("uint8")


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    path.write_bytes(H.tar_bytes(members))
    return str(path)


def hostile_decodes(tmp: Path, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """The hostile decode cases (module doc), each a tar with 4 small JPEGs: name -> (url, stats flags)."""
    small = [m for i in range(4) for m in ((f"s{i:04d}.jpg", _small_jpeg(i)), (f"s{i:04d}.cls", b"1"))]
    side = 2048 if quick else 8192
    bad = {
        "jpeg-scans": ("scans.jpg", H.many_scans_jpeg(side, 1000 if quick else 2000)),
        "ico-20000": ("bomb.ico", H.ico_embedding(H.solid_png(20000, 20000, value=7))),
        "webp-13000": ("bomb.webp", H.solid_webp(13000, 13000)),
        "video-16000": ("lie.mkv", H.lying_video(16, 4000 if quick else 16000, frames=3)),
    }
    cases = {}
    for name, (member, data) in bad.items():
        url = _write_tar(tmp / f"{name}.tar", small + [(member, data), (member.split(".")[0] + ".cls", b"2")])
        cases[name] = (url, ["--frames", "2"] if member.endswith(".mkv") else [])
    return cases


def build(tmp: Path, quick: bool) -> dict[str, str]:
    cases: dict[str, str] = {}
    cases["baseline"] = _write_tar(
        tmp / "baseline.tar",
        [m for i in range(60 if quick else 200)
         for m in ((f"s{i:04d}.jpg", _small_jpeg(i)), (f"s{i:04d}.cls", str(i % 5).encode()))],
    )
    side = 6000 if quick else 13000
    png = H.png16_solid(side)
    small = [m for i in range(4) for m in ((f"s{i:04d}.jpg", _small_jpeg(i)), (f"s{i:04d}.cls", b"1"))]
    cases[f"png16-{side}"] = _write_tar(tmp / "png16.tar", small + [("big16.png", png), ("big16.cls", b"3")])
    (tmp / "sparse.tar").write_bytes(H.sparse_tar(realsize=2 * 2**30, stored=6 * 1024))
    cases["sparse-2GiB"] = str(tmp / "sparse.tar")
    size = 300 * 2**20 if quick else 2**30
    cases[f"member-{size >> 20}MiB"] = H.holey_member_tar(tmp / "member.tar", size)
    n = 24 if quick else 200
    photos = []
    for k in range(3 if quick else 8):  # a few distinct photos, repeated: every sample holds its own bytes
        buf = io.BytesIO()
        Image.fromarray(_noise(2000, 3000, k)).save(buf, "JPEG", quality=90)
        photos.append(buf.getvalue())
    cases[f"photos-{n}"] = _write_tar(
        tmp / "photos.tar",
        [m for i in range(n)
         for m in ((f"p{i:04d}.jpg", photos[i % len(photos)]), (f"p{i:04d}.cls", str(i % 5).encode()))],
    )
    return cases


def run_case(url: str, timeout: float, flags: list[str] | None = None) -> dict:
    """Run ``patchpack stats`` on ``url`` in a child that reports its own peak RSS (``VmHWM``: the
    high-water mark of its address space; ``ru_maxrss`` would include this parent's, inherited
    through fork and exec)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", CHILD, url, *(flags or [])], stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        _, status = os.waitpid(p.pid, 0)
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        res = {"peak_mib": float("nan"), "seconds": time.perf_counter() - t0, "rc": p.returncode,
               "timed_out": p.returncode == -9}
        out.seek(0)
        err.seek(0)
        try:
            res.update(json.loads(out.read().decode().strip().splitlines()[-1]))
            res["peak_mib"] = res["vmhwm_kib"] / 1024
        except (IndexError, ValueError, KeyError):
            tail = err.read().decode(errors="replace").strip().splitlines()
            res["error"] = tail[-1][:200] if tail else "no output"
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for CI (< 40 s)")
    ap.add_argument("--keep", help="build the cases in this folder and keep them")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (each in its own process)")
    args = ap.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(args.keep or td)
        tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cases = {name: (url, []) for name, url in build(tmp, args.quick).items()}
        cases.update(hostile_decodes(tmp, args.quick))
        print(f"built {len(cases)} cases in {time.perf_counter() - t0:.1f}s "
              f"({', '.join(f'{k} {os.path.getsize(v[0]) / 2**20:.1f} MiB' for k, v in cases.items())})")
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {name: pool.submit(run_case, url, args.timeout, flags) for name, (url, flags) in cases.items()}
            results = {name: f.result() for name, f in futures.items()}
    base = results["baseline"]["peak_mib"]
    print(f"{'case':<16} {'peak MiB':>9} {'+MiB':>6} {'ratio':>6} {'examples':>9} {'errors':>7} {'seconds':>8}  note")
    worst = 0.0
    for name, r in results.items():
        ratio = r["peak_mib"] / base
        worst = max(worst, ratio)
        st = r.get("stats", {})
        note = "timed out" if r.get("timed_out") else (f"rc={r['rc']} {r.get('error', '')}" if r["rc"] else
                                                      " ".join(f"{k}: {v}" for k, v in st.get("error_kinds", {}).items()))
        print(f"{name:<16} {r['peak_mib']:>9.0f} {r['peak_mib'] - base:>+6.0f} {ratio:>6.2f} "
              f"{st.get('examples', '-'):>9} "
              f"{st.get('errors', '-'):>7} {r['seconds']:>8.1f}  {note}")
    print(f"worst ratio {worst:.2f} (goal <= {GOAL}): {'met' if worst <= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

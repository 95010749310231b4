"""Video decode speed and peak memory: patchpack against plain PyAV on the same clips.

Every path turns the same encoded clip into the same sampled clip (8 frames spread over
the clip, tubelet 2, at most 256 patches of 16 px per frame, RGB at the fitted size):

* ``patchpack``: header read + fit + frame decode (``read_header``, ``plan_example``, ``decode_plan``,
  ``materialize``), all timed;
* ``decode-all``: decode every frame and convert each to RGB (what ``read_video``-style
  readers do), keep the sampled ones and resize them;
* ``forward``: decode from the start up to the last sampled frame, converting only the
  sampled frames;
* ``seek``: for each sampled frame, seek to it (the demuxer lands on the key frame before
  it) and decode up to it.

The baselines get the sampled frames' timestamps and the output size for free (from an
untimed demux pass and patchpack's plan); patchpack pays for its own header and fit.

Clips: (a) 18 short clips of 8-120 frames in H.264 (MP4, B-frames), VP9 (WebM) and MPEG-4
(AVI) at 180p-360p, timed in this process (per clip and path the best of ``--reps`` runs; mean
ms per clip);
(b) a 60 s 1280x720 30 fps H.264 clip with a key frame every 60 frames (x264 ultrafast
over a noisy texture, ~200 MB). Clips are encoded once and cached under ``--cache``.
Peak RSS (the child's ``ru_maxrss``) and the long clip's times come from one fresh
subprocess per path and clip, timed inside the child (start-up excluded); the short
clip's figure is the same command on the largest short clip. ``patchpack-loader`` runs
the whole loader (tar shard -> packed batch) on a one-sample shard holding the clip.

Everything runs pinned to ``--cores`` cores (default 1, as issue 16 measured); wall time and
CPU time (all threads) are both printed, CPU time being the steadier figure on a loaded machine.

Goals (issue 16), printed as ratios measured in this run:
short clips: patchpack >= 1.3x faster than decode-all and <= 1.1x the time of the better of
forward/seek; long clip: <= 1.2x the seek path's time, and peak RSS at most the clip's bytes
+ 150 MB above the same command's peak on a short clip.

Run: ``python benchmarks/video.py`` (``--quick``: six of the short clips, at the full run's sizes, and a 4 s "long" clip, for CI).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

FRAMES, TUBELET, PATCH, MAX_PATCHES = 8, 2, 16, 256
PATHS = ("patchpack", "decode-all", "forward", "seek")
CODECS = (("h264", "mp4", "libx264"), ("vp9", "webm", "libvpx-vp9"), ("mpeg4", "avi", "mpeg4"))
SHORT_COUNTS = (8, 12, 15, 17, 24, 31, 36, 40, 48, 57, 64, 66, 72, 81, 90, 100, 110, 120)
CLIP_VERSION = "v2"  # part of the cached file names: bump when the clip recipe changes
SHORT_SIZES = ((240, 320), (360, 640), (270, 480), (180, 320), (360, 480), (288, 512))


# ----------------------------------------------------------------------------- clips


def encode_clip(path: str, frames: int, height: int, width: int, codec: str, *, fps: int = 30, gop: int = 48,
                noise: int = 6, preset: str = "veryfast", seed: int = 0) -> None:
    """Write a clip of a drifting blocky texture plus per-frame sensor-like noise (so it costs real bits).

    H.264: x264 ``preset`` (``veryfast``: 3 B-frames), CRF 23; VP9: libvpx realtime, CRF 32;
    MPEG-4: FFmpeg's encoder at 1.5 Mb/s. A key frame every ``gop`` frames."""
    rng = np.random.default_rng(seed)
    tex = np.repeat(np.repeat(rng.integers(16, 224, ((height + 64) // 4 + 1, (width + 256) // 4 + 1), np.uint8), 4, 0), 4, 1)
    bank = [rng.integers(0, noise, (height, width), np.uint8) for _ in range(7)]
    chroma = np.full((height // 2, width), 128, np.uint8)
    opts = {"libx264": {"preset": preset, "crf": "23", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"},
            "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"},
            "mpeg4": {"b": "1500k"}}[codec]
    fmt = {"libx264": "mp4", "libvpx-vp9": "webm", "mpeg4": "avi"}[codec]
    tmp = path + ".part"
    with av.open(tmp, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps, options=opts)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.gop_size = gop
        for i in range(frames):
            dy, dx = i % 64, (3 * i) % 256
            y = tex[dy : dy + height, dx : dx + width] + bank[i % len(bank)]
            f = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)


def short_clips(cache: str, quick: bool) -> list[tuple[str, int]]:
    """``(path, frames)`` of the short clips (encoded on first use)."""
    if quick:
        specs = [(n, *SHORT_SIZES[k % len(SHORT_SIZES)], CODECS[k % 3]) for k, n in enumerate((8, 15, 24, 40, 64, 120))]
    else:
        specs = [(n, *SHORT_SIZES[k % len(SHORT_SIZES)], CODECS[k % 3]) for k, n in enumerate(SHORT_COUNTS)]
    paths = []
    for k, (n, h, w, (name, ext, codec)) in enumerate(specs):
        path = os.path.join(cache, f"short-{CLIP_VERSION}-{name}-{n}f-{w}x{h}-s{k}.{ext}")
        if not os.path.exists(path):
            encode_clip(path, n, h, w, codec, seed=k)
        paths.append((path, n))
    return paths


def long_clip(cache: str, quick: bool) -> tuple[str, float]:
    """``(path, seconds spent encoding)`` of the long clip (0 when cached)."""
    seconds, (h, w) = (4, (240, 320)) if quick else (60, (720, 1280))
    path = os.path.join(cache, f"long-{CLIP_VERSION}-{seconds}s-{w}x{h}-gop60.mp4")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        encode_clip(path, seconds * 30, h, w, "libx264", gop=60, noise=24, preset="ultrafast")
    return path, time.perf_counter() - t0


def one_sample_tar(clip: str) -> str:
    """A webdataset shard holding the clip as its only sample (next to the clip)."""
    tar = clip + ".tar"
    if not os.path.exists(tar):
        import tarfile

        ext = clip.rsplit(".", 1)[-1]
        with tarfile.open(tar + ".part", "w") as tf:
            tf.add(clip, arcname=f"clip0.{ext}")
            info = tarfile.TarInfo("clip0.cls")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"1"))
        os.replace(tar + ".part", tar)
    return tar


# ----------------------------------------------------------------------------- paths


def configs():
    from patchpack.decode.video import VideoConfig
    from patchpack.fit import FitConfig

    return FitConfig(patch_size=PATCH, max_patches=MAX_PATCHES), VideoConfig(frames=FRAMES, tubelet=TUBELET, clip="centre")


def patchpack_clip(data: bytes, fit, video) -> np.ndarray:
    from patchpack.decode import materialize
    from patchpack.pipeline.admission import plan_media

    plan = plan_media(data, "video", fit, video=video)
    return materialize(data, plan, video_cfg=video)


def baseline_plan(data: bytes, fit, video) -> tuple[list[int], tuple[int, int]]:
    """Untimed: the sampled frames' timestamps and the output size, as patchpack chose them."""
    from patchpack.pipeline.admission import plan_media

    plan = plan_media(data, "video", fit, video=video)
    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(vs) if p.size and p.pts is not None)
    return [pts[i] for i in plan.frame_indices], tuple(plan.size)


def _resize(frame, size) -> np.ndarray:
    return frame.to_ndarray(width=size[1], height=size[0], format="rgb24", interpolation="AREA")


def decode_all(data: bytes, targets: list[int], size) -> np.ndarray:
    keep: dict[int, np.ndarray] = {}
    wanted = set(targets)
    with av.open(io.BytesIO(data)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            if f.pts in wanted:
                keep[f.pts] = rgb
    return np.stack([_resize(av.VideoFrame.from_ndarray(keep[t], format="rgb24"), size) for t in targets])


def forward(data: bytes, targets: list[int], size) -> np.ndarray:
    out, i = [], 0
    with av.open(io.BytesIO(data)) as c:
        for f in c.decode(video=0):
            while i < len(targets) and f.pts >= targets[i]:
                out.append(_resize(f, size) if not out or targets[i] != targets[i - 1] else out[-1])
                i += 1
            if i == len(targets):
                break
    return np.stack(out)


def seek(data: bytes, targets: list[int], size) -> np.ndarray:
    out = []
    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        for t in targets:
            c.seek(int(t), stream=vs, backward=True)
            for f in c.decode(vs):
                if f.pts >= t:
                    break
            out.append(_resize(f, size))
    return np.stack(out)


BASELINES = {"decode-all": decode_all, "forward": forward, "seek": seek}


def run_path(name: str, data: bytes, fit, video, plan) -> np.ndarray:
    if name == "patchpack":
        return patchpack_clip(data, fit, video)
    return BASELINES[name](data, *plan)


# ----------------------------------------------------------------------------- child (peak RSS)


def _rss_now() -> int:
    """Resident set size now (bytes; Linux ``/proc``, else 0)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def child(path_name: str, clip: str) -> None:
    """One path on one clip in this fresh process; prints a JSON line."""
    import importlib

    fit, video = configs()
    for module in ("patchpack.decode", "patchpack.fit", "patchpack.decode.video.header", "patchpack.decode.video.frames"):
        importlib.import_module(module)  # imports are start-up, not decode time
    if path_name == "patchpack-loader":
        from patchpack.loader import LoaderConfig, make_loader
        from patchpack.pack import PackConfig

        cfg = LoaderConfig(fit=fit, video=video, pack=PackConfig(seq_len=4096), batch_size=1)
        before = _rss_now()
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sum(1 for _ in make_loader(one_sample_tar(clip), cfg))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert rows >= 1
    else:
        before = _rss_now()
        with open(clip, "rb") as fh:
            data = fh.read()
        plan = None if path_name == "patchpack" else baseline_plan(data, fit, video)
        t0, c0 = time.perf_counter(), time.process_time()
        run_path(path_name, data, fit, video, plan)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"peak": peak, "seconds": secs, "cpu": cpu, "before": before}))


def measure(path_name: str, clip: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", path_name, clip], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def mb(x: float) -> str:
    return f"{x / 2**20:7.1f} MB"


def goal(ok: bool) -> str:
    return "met" if ok else "NOT met"


def pin_cores(n: int) -> str:
    """Run this process (and its children) on ``n`` of the allowed cores; returns which."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return "all cores (no affinity control)"
    if 0 < n < len(allowed):
        os.sched_setaffinity(0, allowed[-n:])
        allowed = allowed[-n:]
    return f"{len(allowed)} core{'s' if len(allowed) > 1 else ''} ({', '.join(map(str, allowed))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="six short clips at the full run's sizes and a 4 s 'long' clip (CI)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per short clip and path (best kept)")
    ap.add_argument("--cores", type=int, default=1, help="cores to run on (0: all); the issue measured on one")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "patchpack-bench"))
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "CLIP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
    if args.child:
        child(*args.child)
        return
    reps = args.reps or (3 if args.quick else 5)
    os.makedirs(args.cache, exist_ok=True)
    fit, video = configs()
    where = pin_cores(args.cores)

    t0 = time.perf_counter()
    specs = short_clips(args.cache, args.quick)
    paths, counts = [p for p, _ in specs], [n for _, n in specs]
    clips = []
    for p in paths:
        with open(p, "rb") as fh:
            clips.append(fh.read())
    plans = [baseline_plan(d, fit, video) for d in clips]
    print(f"on {where}, load average {os.getloadavg()[0]:.1f}; wall = elapsed time, CPU = process time of all threads")
    print(f"short clips: {len(clips)} ({min(counts)}-{max(counts)} frames, "
          f"H.264/VP9/MPEG-4, {sum(map(len, clips)) / 2**20:.1f} MB; ready in {time.perf_counter() - t0:.1f} s); "
          f"{FRAMES} frames spread, tubelet {TUBELET}, <= {MAX_PATCHES} patches of {PATCH} px per frame")
    # same frames from every path (lossy codecs: compare means of absolute differences)
    for d, plan in zip(clips, plans):
        ref = run_path("patchpack", d, fit, video, plan).astype(np.int16)
        for name in BASELINES:
            got = run_path(name, d, fit, video, plan)
            if got.shape != ref.shape or np.abs(got - ref).mean() > 2:
                print(f"  WARNING: {name} disagrees with patchpack on a clip")
    # each path on each clip in turn, best of `reps` per clip and path: load from other
    # processes hits every path alike, and a burst spoils one run, not a whole pass
    wall = np.full((len(PATHS), len(clips)), np.inf)
    cpu = np.full((len(PATHS), len(clips)), np.inf)
    for _ in range(reps):
        for j, (d, plan) in enumerate(zip(clips, plans)):
            for i, name in enumerate(PATHS):
                t, c = time.perf_counter(), time.process_time()
                run_path(name, d, fit, video, plan)
                wall[i, j] = min(wall[i, j], time.perf_counter() - t)
                cpu[i, j] = min(cpu[i, j], time.process_time() - c)
    print(f"  {'path':12s} {'wall ms/clip':>12s} {'(patchpack speed-up)':>21s} {'CPU ms/clip':>12s} {'(speed-up)':>11s}")
    w, c = wall.mean(axis=1), cpu.mean(axis=1)
    for i, name in enumerate(PATHS):
        print(f"  {name:12s} {w[i] * 1e3:12.2f} {w[i] / w[0]:20.2f}x {c[i] * 1e3:12.2f} {c[i] / c[0]:10.2f}x")
    for label, t in (("wall", w), ("CPU", c)):
        all_, better = t[1] / t[0], t[0] / min(t[2], t[3])
        print(f"  goals ({label}): >= 1.3x decode-all: {all_:.2f}x ({goal(all_ >= 1.3)}); "
              f"<= 1.1x the better of forward/seek: {better:.2f}x ({goal(better <= 1.1)})")
    if args.skip_long:
        return

    path, gen = long_clip(args.cache, args.quick)
    size = os.path.getsize(path)
    with av.open(path) as cont:
        vs = cont.streams.video[0]
        n, fps, hw = vs.frames, vs.average_rate, (vs.codec_context.height, vs.codec_context.width)
    print(f"long clip ({size / 2**20:.1f} MB): {n} frames ({float(n / fps) if fps else 0:.0f} s) {hw[1]}x{hw[0]}, "
          f"key frame every 60, {f'encoded in {gen:.1f} s' if gen else 'cached'}; one fresh process per path and clip, "
          f"times taken inside it (best of 3 interleaved runs; decode-all and forward: 1), peak RSS = the child's ru_maxrss; short clip = the largest short clip")
    small = max(paths, key=os.path.getsize)
    names = (*PATHS, "patchpack-loader")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    fast = ("patchpack", "seek", "patchpack-loader")  # interleaved, so load hits them alike
    for _ in range(1 if args.quick else 3):
        for name in fast:
            runs[name].append(measure(name, path))
    for name in ("decode-all", "forward"):  # tens of seconds each: one run
        runs[name].append(measure(name, path))
    rows = {}
    for name in names:
        rows[name] = dict(wall=min(r["seconds"] for r in runs[name]), cpu=min(r["cpu"] for r in runs[name]),
                          peak=max(r["peak"] for r in runs[name]), small=measure(name, small)["peak"],
                          over=max(r["peak"] - r["before"] for r in runs[name]))
    seek = rows["seek"]
    for name, r in rows.items():
        print(f"  {name:16s} wall {r['wall']:6.2f} s ({r['wall'] / seek['wall']:5.2f}x seek)  "
              f"CPU {r['cpu']:6.2f} s ({r['cpu'] / seek['cpu']:5.2f}x)  peak RSS {mb(r['peak'])}, "
              f"short clip {mb(r['small'])}, growth {mb(r['peak'] - r['small'])}; "
              f"peak - RSS before the clip {mb(r['over'])}")
    pp, budget = rows["patchpack"], size + 150 * 2**20
    print(f"  goals: <= 1.2x seek: wall {pp['wall'] / seek['wall']:.2f}x ({goal(pp['wall'] / seek['wall'] <= 1.2)}), "
          f"CPU {pp['cpu'] / seek['cpu']:.2f}x ({goal(pp['cpu'] / seek['cpu'] <= 1.2)}); "
          f"growth <= clip + 150 MB = {mb(budget).strip()}: patchpack {mb(pp['peak'] - pp['small']).strip()} "
          f"({goal(pp['peak'] - pp['small'] <= budget)}), patchpack-loader "
          f"{mb(rows['patchpack-loader']['peak'] - rows['patchpack-loader']['small']).strip()} "
          f"({goal(rows['patchpack-loader']['peak'] - rows['patchpack-loader']['small'] <= budget)})")


if __name__ == "__main__":
    main()

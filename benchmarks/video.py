"""Sampled video decoding: throughput against decode-everything-then-sample, and memory on a long clip.

1. Throughput. The same encoded clips are turned into sampled, resized clips by
   * patchpack: ``probe_video`` + ``materialize_video`` (seek to the key frame
     before each sampled frame, decode forward, convert only sampled frames);
   * baseline: decode every frame, convert each to an RGB array (what
     ``read_video``-style readers hand back), then pick the sampled frames and
     resize them;
   * a stricter reference: decode every frame but convert only the sampled ones.
   Two samplings: 16 frames spread over the clip, and an 8-frame 4 fps window at a
   random place (the usual training clip). Figures are clips/s and ratios against
   the baseline, measured in this run.
2. Memory. A long 720p clip (default 5 min at 30 fps, low-complexity content,
   x264 ultrafast; generation time is printed) is sampled in a fresh subprocess;
   its peak RSS above the process's RSS before decoding is compared with the size
   of the sampled frames, with a 30 s clip of the same kind, and with what holding
   every frame would take.

Run: ``python benchmarks/video.py`` (``--quick`` for a short smoke run).
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

from patchpack.decode.video import VideoConfig, materialize_video, probe_video
from patchpack.fit import FitConfig


# ----------------------------------------------------------------------------- clips


def make_clip(seconds: float, height: int, width: int, fps: int = 30, seed: int = 0, path: str | None = None) -> bytes | None:
    """H.264 clip with moving blocks over a gradient (x264 defaults: key frame every 250 frames)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    target = path if path is not None else io.BytesIO()
    base = np.tile(np.linspace(40, 200, width, dtype=np.uint8), (height, 1))
    chroma = np.full((height // 2, width), 128, np.uint8)
    blocks = rng.integers(0, [max(1, height - 48), max(1, width - 48)], size=(4, 2))
    speed = rng.integers(-6, 7, size=(4, 2))
    with av.open(target, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            y = base.copy()
            for (by, bx), (vy, vx) in zip(blocks, speed):
                yy = int(by + vy * i) % (height - 48)
                xx = int(bx + vx * i) % (width - 48)
                y[yy : yy + 48, xx : xx + 48] = 255 - (i * 3) % 200
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return None if path is not None else target.getvalue()


# ----------------------------------------------------------------------------- decoders


def patchpack_clip(data: bytes, fit: FitConfig, cfg: VideoConfig, rng) -> np.ndarray:
    probe = probe_video(data, fit, cfg, rng)
    return materialize_video(data, probe, cfg)


def decode_all_then_sample(data: bytes, fit: FitConfig, cfg: VideoConfig, rng, convert_all: bool = True) -> np.ndarray:
    """Decode every frame (RGB arrays when ``convert_all``), then pick and resize the sampled ones."""
    probe = probe_video(data, fit, cfg, rng)  # same frame choice and size as patchpack
    wanted = set(probe.frame_indices)
    frames: dict[int, object] = {}
    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        vs.codec_context.thread_type = cfg.thread_type
        for i, f in enumerate(c.decode(vs)):
            if convert_all:
                frames[i] = f.to_ndarray(format="rgb24")
            elif i in wanted:
                frames[i] = f.to_ndarray(format="rgb24")
    hh, ww = probe.size
    out = np.empty((len(probe.frame_indices), hh, ww, 3), np.uint8)
    for k, i in enumerate(probe.frame_indices):
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        out[k] = frame.to_ndarray(width=ww, height=hh, format="rgb24", interpolation=cfg.interpolation)
    return out


def throughput(clips: list[bytes], fit: FitConfig, cfg: VideoConfig, fn, repeat: int = 1, **kw) -> float:
    t0 = time.perf_counter()
    for r in range(repeat):
        for j, data in enumerate(clips):
            fn(data, fit, cfg, np.random.default_rng(1000 * r + j), **kw)
    return repeat * len(clips) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- memory


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_child(path: str, frames: int) -> None:
    """Runs in a fresh process: sample ``frames`` frames of the clip at ``path`` at native size."""
    with open(path, "rb") as fh:
        data = fh.read()
    fit = FitConfig(patch_size=16, max_patches=None)
    cfg = VideoConfig(frames=frames, tubelet=2, clip="centre")
    if _reset_peak() and _status("VmRSS") is not None:
        before = _status("VmRSS")
        peak_now = lambda: _status("VmHWM")  # noqa: E731
    else:  # no /proc: the lifetime peak, which includes imports
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_now = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731
    t0 = time.perf_counter()
    probe = probe_video(data, fit, cfg)
    stats: dict = {}
    clip = materialize_video(data, probe, cfg, stats=stats)
    secs = time.perf_counter() - t0
    peak = peak_now()
    h, w = probe.source_size
    print(json.dumps({
        "before": before, "peak": peak, "sampled_bytes": clip.nbytes, "num_frames": probe.info["num_frames"],
        "all_frames_bytes": probe.info["num_frames"] * h * w * 3, "file_bytes": len(data), "seconds": secs,
        "decoded": stats["decoded"], "seeks": stats["seeks"], "shape": list(clip.shape),
    }))


def measure_rss(path: str, frames: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", path, "--rss-frames", str(frames)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mb(x: float) -> str:
    return f"{x / 2**20:.1f} MB"


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="clips in the throughput test")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each throughput clip (s)")
    ap.add_argument("--size", type=int, nargs=2, default=[270, 480], metavar=("H", "W"))
    ap.add_argument("--long-seconds", type=float, default=300.0, help="length of the long 720p clip (s)")
    ap.add_argument("--rss-frames", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_frames)
        return
    if args.quick:
        args.clips, args.seconds, args.long_seconds = 3, 6.0, 40.0

    h, w = args.size
    t0 = time.perf_counter()
    clips = [make_clip(args.seconds, h, w, seed=i) for i in range(args.clips)]
    print(f"throughput clips: {args.clips} x {args.seconds:.0f} s at {w}x{h} 30 fps H.264 "
          f"(made in {time.perf_counter() - t0:.1f} s, {mb(sum(map(len, clips)))} in all)")
    fit = FitConfig(patch_size=16, max_patches=256)
    for name, cfg in [
        ("16 frames spread", VideoConfig(frames=16, tubelet=2, clip="centre")),
        ("8 frames @ 4 fps, random window", VideoConfig(frames=8, fps=4, tubelet=2, clip="random")),
    ]:
        base = throughput(clips, fit, cfg, decode_all_then_sample)
        strict = throughput(clips, fit, cfg, decode_all_then_sample, convert_all=False)
        ours = throughput(clips, fit, cfg, patchpack_clip)
        print(f"  {name:34s} decode-all+convert-all {base:7.2f} clips/s (1.00x)"
              f" | decode-all+convert-sampled {strict:7.2f} clips/s ({strict / base:5.2f}x)"
              f" | patchpack {ours:7.2f} clips/s ({ours / base:5.2f}x)")

    if args.skip_long:
        return
    with tempfile.TemporaryDirectory() as td:
        lines = []
        for secs in (min(30.0, args.long_seconds), args.long_seconds):
            path = os.path.join(td, f"long-{int(secs)}s.mp4")
            t0 = time.perf_counter()
            make_clip(secs, 720, 1280, path=path)
            gen = time.perf_counter() - t0
            r = measure_rss(path, args.rss_frames)
            lines.append((secs, gen, r))
        print(f"memory, {args.rss_frames} frames sampled at native 1280x720 (fresh subprocess each):")
        for secs, gen, r in lines:
            extra = r["peak"] - r["before"]
            print(f"  {secs:5.0f} s clip ({r['num_frames']} frames, {mb(r['file_bytes'])} file, generated in {gen:.1f} s):"
                  f" peak RSS +{mb(extra)} over the pre-decode RSS;"
                  f" sampled frames {mb(r['sampled_bytes'])} ({extra / r['sampled_bytes']:.2f}x);"
                  f" every frame as RGB would be {r['all_frames_bytes'] / 2**30:.1f} GB;"
                  f" decoded {r['decoded']} frames with {r['seeks']} seeks in {r['seconds']:.2f} s")
        short, long_ = lines[0][2], lines[-1][2]
        ratio = (long_["peak"] - long_["before"]) / max(1, short["peak"] - short["before"])
        print(f"  peak RSS growth, {lines[-1][0]:.0f} s clip vs {lines[0][0]:.0f} s clip: {ratio:.2f}x "
              f"(clip length {lines[-1][0] / lines[0][0]:.1f}x)")


if __name__ == "__main__":
    main()

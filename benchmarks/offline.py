"""Offline preprocessing and reading patchpack shards, against the online JPEG path.

Prints, all measured in this run on the same synthetic shards:

* preprocessing throughput (images/s) with 1 and 2 worker processes and the scaling ratio;
* loader throughput (images/s, packed batches out) reading the patchpack shards against
  reading the original JPEG/PNG webdataset shards, and the ratio: ``"examples"`` shards
  (decoded tokens, dropped and packed again by the loader; goal on thumbnails >= 10x) and
  ``preprocess --packed`` shards, whose stored rows the loader serves as they are
  (``packed_shards="serve"``: no decode, no drop, no packing; goal >= 30x).

When the loader does not accept a patchpack folder as a source, the patchpack side runs the
same stages by hand (memory-mapped examples -> drop -> streaming packer -> collate) and says so.

    python benchmarks/offline.py [--images 1200] [--shards 4] [--min-side 64] [--max-side 384] [--repeat 2] [--quick]

``--min-side 256 --max-side 512`` gives ImageNet-like photo sizes (the default set is
smaller images, where JPEG decoding is cheap and the ratio lower).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from patchpack.drop import DropConfig
from patchpack.fit import FitConfig
from patchpack.loader import LoaderConfig, make_loader
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.pack import PackConfig
from patchpack.synth import SynthConfig, make_dataset


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _count_loader(source, cfg: LoaderConfig) -> int:
    return sum(b.num_examples for b in make_loader(source, cfg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--min-side", type=int, default=64, help="smallest geometric-mean image side, pixels")
    ap.add_argument("--max-side", type=int, default=384, help="largest geometric-mean image side, pixels")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per figure (best is kept)")
    ap.add_argument("--tmp", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="120 images in 2 shards, one run: a smoke run for CI")
    args = ap.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
        args.images, args.shards, args.repeat = min(args.images, 120), 2, 1
    work = Path(args.tmp or tempfile.mkdtemp(prefix="patchpack-bench-"))
    try:
        data = make_dataset(work / "src", n_images=args.images, seed=0, shard_size=-(-args.images // args.shards),
                            config=SynthConfig(min_side=args.min_side, max_side=args.max_side))
        urls = data["urls"]
        fit = FitConfig(patch_size=16, max_patches=256)
        lcfg = LoaderConfig(fit=fit, drop=DropConfig(kind="beta", rate_max=0.5),
                            pack=PackConfig(seq_len=1024, max_per_seq=32), batch_size=8, shuffle_shards=False)
        pcfg = PreprocessConfig.from_loader(lcfg)
        print(f"{args.images} images in {len(urls)} shards, side {args.min_side}..{args.max_side} px, p=16, <=256 patches, "
              f"cpus={os.cpu_count()}")

        rates = {}
        for workers in (1, 2):
            def run(w=workers):
                out = work / f"pp-{w}"
                shutil.rmtree(out, ignore_errors=True)
                return preprocess(urls, out, pcfg, workers=w, progress=False)

            secs, m = _best(run, args.repeat)
            rates[workers] = m["totals"]["examples"] / secs
            print(f"preprocess  workers={workers}: {rates[workers]:8.1f} images/s  ({secs:.2f} s)")
        print(f"preprocess  scaling 2 vs 1 workers: {rates[2] / rates[1]:.2f}x")
        mb = sum(e["bytes"] for e in m["shards"]) / 2**20
        src_mb = sum(Path(u).stat().st_size for u in urls) / 2**20
        print(f"shards      {src_mb:.1f} MiB JPEG/PNG tar -> {mb:.1f} MiB patchpack (uncompressed uint8 tokens)")

        folder = work / "pp-2"
        packed = work / "pp-packed"
        preprocess(urls, packed, pcfg, workers=2, packed=True, progress=False)
        jpeg_s = pp_s = rows_s = float("inf")
        for _ in range(args.repeat):  # interleaved, best of: the machine may be shared
            t = time.perf_counter()
            n_jpeg = _count_loader(urls, lcfg)
            jpeg_s = min(jpeg_s, time.perf_counter() - t)
            t = time.perf_counter()
            n_pp = _count_loader(str(folder), lcfg)
            pp_s = min(pp_s, time.perf_counter() - t)
            t = time.perf_counter()
            n_rows = _count_loader(str(packed), lcfg)
            rows_s = min(rows_s, time.perf_counter() - t)
        r_jpeg, r_pp, r_rows = n_jpeg / jpeg_s, n_pp / pp_s, n_rows / rows_s
        print(f"loader      JPEG/PNG shards          : {r_jpeg:9.1f} images/s  ({n_jpeg} examples, {jpeg_s:.2f} s)")
        print(f"loader      patchpack examples shards: {r_pp:9.1f} images/s  ({n_pp} examples, {pp_s:.2f} s) "
              "[make_loader(folder): drop + pack again]")
        print(f"loader      patchpack packed shards  : {r_rows:9.1f} images/s  ({n_rows} examples, {rows_s:.2f} s) "
              "[make_loader(folder): stored rows served]")
        print(f"loader      examples shards vs JPEG  : {r_pp / r_jpeg:.1f}x  (goal >= 10x on thumbnails)")
        print(f"loader      packed shards vs JPEG    : {r_rows / r_jpeg:.1f}x  (goal >= 30x)")
    finally:
        if args.tmp is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Offline preprocessing and reading patchpack shards, against the online JPEG path.

Prints, all measured in this run on the same synthetic shards:

* preprocessing throughput (images/s) with 1 and 2 worker processes and the scaling ratio;
* loader throughput (images/s, packed batches out) reading the patchpack shards against
  reading the original JPEG/PNG webdataset shards, and the ratio (goal: >= 10x).

When the loader does not accept a patchpack folder as a source, the patchpack side runs the
same stages by hand (memory-mapped examples -> drop -> streaming packer -> collate) and says so.

    python benchmarks/offline.py [--images 1200] [--shards 4] [--min-side 64] [--max-side 384] [--repeat 2]

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
    args = ap.parse_args()

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
        jpeg_s, n_jpeg = _best(lambda: _count_loader(urls, lcfg), args.repeat)
        pp_s, n_pp = _best(lambda: _count_loader(str(folder), lcfg), args.repeat)
        how = "make_loader(folder)"
        r_jpeg, r_pp = n_jpeg / jpeg_s, n_pp / pp_s
        print(f"loader      JPEG/PNG shards   : {r_jpeg:8.1f} images/s  ({n_jpeg} examples, {jpeg_s:.2f} s)")
        print(f"loader      patchpack shards  : {r_pp:8.1f} images/s  ({n_pp} examples, {pp_s:.2f} s) [{how}]")
        print(f"loader      patchpack vs JPEG : {r_pp / r_jpeg:.1f}x  (goal >= 10x)")
    finally:
        if args.tmp is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

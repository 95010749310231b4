"""Images/s on one core, from shard bytes to packed batch, against a naive Pillow pipeline.

Data: the photographs that ship with scikit-image (``skimage.data``), JPEG-encoded
(quality 90) into webdataset shards. Two sets:

* ``mixed``: every shipped colour photo (300 to 1411 px), repeated;
* ``large``: photos over 1000 px. Only ``retina`` (1411 x 1411) ships that large; its
  8 EXIF-free rotations/flips are used (real pixels, no upscaling).

Pipelines, on the same shard bytes and the same budget (``p = 16``, 256 patches):

* ``patchpack``: ``make_loader`` (header probe, packing on header sizes,
  ``Image.draft`` + decode + resize at the fitted size, patchify, collate into
  ``PackedBatch``), ``num_workers=0``; once with the default resize (``image__resize="opencv"``:
  antialiasing prefilter + OpenCV cubic) and once with ``image__resize="pillow"`` (Pillow's
  antialiased bicubic, the former default);
* ``naive``: ``webdataset`` tar reading, full ``Image.open().convert("RGB")``, resize
  to the same fitted size with the same filter, numpy patchify (no packing at all);
* ``siglip2`` / ``qwen2-vl``: Hugging Face ``Siglip2ImageProcessor`` / ``Qwen2VLImageProcessor`` when
  ``transformers`` imports (their fast variants need torchvision; without it transformers
  falls back to the Pillow backends, and the row says which ran);
* ``limit``: Pillow ``Image.draft()`` decode toward the fitted size and nothing else (no
  resize, no patchify, no packing), on the same bytes already in memory: the floor for
  any Pillow pipeline. patchpack's goal is at most 1.3x its time per image.

A third set, ``upscaled``, holds every photo bicubic-upscaled to a long side of 1500, 2200
and 3000 px (JPEG q90), for photos over 1000 px beyond the one shipped. A fourth,
``png-webp``, holds the mixed photos as PNG and WebP (q90), alternating: formats without DCT
scaling, whose decode is the whole-size one (the limit there is Pillow's decode alone, and the
row reports the share of patchpack's time that decode takes).

``--threads`` (on by default, needs 2 cores): ``decode_threads=2`` in one process against
one thread and against ``num_workers=2`` processes, in subprocesses: images/s, peak memory
(PSS summed over the process and its workers, sampled) and a digest of every batch, which
must be the same for one and two threads.

Figures are ratios against ``naive`` measured in the same run. Also reported: the share
of time in packing + collation, and peak RSS of a stream 10x longer (in subprocesses).

Each pipeline runs ``--repeat`` times, interleaved, and its best time is kept.

Run: ``python benchmarks/pipeline.py [--n 160] [--repeat 3] [--quick]``.
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

import numpy as np

P, BUDGET, SEQ_LEN = 16, 256, 1024
#: how often the threads row samples the PSS of the process under test (reading smaps costs that
#: process page-table walks and takes CPU from the two measured cores: keep it sparse)
PSS_INTERVAL_S = 0.05


def pin_one_core() -> None:
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    import torch

    torch.set_num_threads(1)


def photos() -> dict[str, list[np.ndarray]]:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
             "motorcycle", "colorwheel"]
    mixed = []
    for n in names:
        fn = getattr(data, "stereo_motorcycle" if n == "motorcycle" else n, None)
        if fn is None:
            continue
        img = fn()
        img = img[0] if isinstance(img, tuple) else img
        if img.ndim == 3 and img.shape[2] >= 3:
            mixed.append(np.ascontiguousarray(img[..., :3]))
    retina = data.retina()[..., :3]
    large = [np.ascontiguousarray(np.rot90(v, k)) for v in (retina, retina[:, ::-1]) for k in range(4)]
    return {"mixed": mixed, "large": large}


#: member extension and Pillow save options by format
FORMATS = {"JPEG": ("jpg", {"quality": 90}), "PNG": ("png", {}), "WEBP": ("webp", {"quality": 90})}


def write_set(directory: str, images: list[np.ndarray], n: int, name: str,
              formats: tuple[str, ...] = ("JPEG",)) -> list[str]:
    """Shards of ``n`` samples cycling through ``images``, image ``i`` encoded as ``formats[i % len]``."""
    import webdataset as wds
    from PIL import Image

    encoded = []
    for i, img in enumerate(images * len(formats)):
        fmt = formats[i % len(formats)]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt, **FORMATS[fmt][1])
        encoded.append((FORMATS[fmt][0], buf.getvalue()))
    pattern = os.path.join(directory, f"{name}-%04d.tar")
    with wds.ShardWriter(pattern, maxcount=100, verbose=0) as sink:
        for i in range(n):
            ext, data = encoded[i % len(encoded)]
            sink.write({"__key__": f"{name}{i:06d}", ext: data, "cls": b"0"})
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.startswith(name + "-"))


def media(sample: dict) -> bytes:
    """The image member of a webdataset sample."""
    return next(v for k, v in sample.items() if k in ("jpg", "png", "webp"))


def run_patchpack(urls: list[str], timers: bool = False, resize: str = "opencv") -> tuple[int, float, float]:
    """(images, seconds, seconds in packing + collation)."""
    import patchpack.loader.dataset as loader_module
    from patchpack import make_loader
    from patchpack.pack import PackConfig, make_packer

    spent = [0.0]
    if timers:
        def timed(fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    spent[0] += time.perf_counter() - t
            return wrapper

        packer_cls = type(make_packer(PackConfig()))  # the class the loader's default algorithm uses
        loader_module.collate = timed(loader_module.collate)
        packer_cls.push = timed(packer_cls.push)
        packer_cls.flush = timed(packer_cls.flush)
    t = time.perf_counter()
    loader = make_loader(urls, seq_len=SEQ_LEN, patch_size=P, max_patches=BUDGET, batch_size=8,
                         buffer_size=64, shuffle_shards=False, image__resize=resize)
    n = sum(b.num_examples for b in loader)
    return n, time.perf_counter() - t, spent[0]


def run_naive(urls: list[str]) -> tuple[int, float]:
    import webdataset as wds
    from PIL import Image

    from patchpack.fit import FitConfig, fit

    cfg = FitConfig(patch_size=P, max_patches=BUDGET)
    t = time.perf_counter()
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        im = Image.open(io.BytesIO(media(sample))).convert("RGB")
        h, w = fit(im.height, im.width, cfg)
        a = np.asarray(im.resize((w, h), Image.Resampling.BICUBIC))
        patches = a.reshape(h // P, P, w // P, P, 3).transpose(0, 2, 1, 3, 4).reshape(-1, P * P * 3)
        assert patches.shape[0] <= BUDGET
        n += 1
    return n, time.perf_counter() - t


def run_siglip2(urls: list[str]) -> tuple[int, float] | str:
    try:
        from transformers import Siglip2ImageProcessor
    except Exception:
        return "skipped: transformers not installed"
    import webdataset as wds
    from PIL import Image

    proc = Siglip2ImageProcessor(patch_size=P, max_num_patches=BUDGET)
    t = time.perf_counter()
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        proc(images=[Image.open(io.BytesIO(media(sample))).convert("RGB")], return_tensors="np")
        n += 1
    return n, time.perf_counter() - t


def run_qwen2vl(urls: list[str]) -> tuple[int, float, str] | str:
    """Qwen2-VL's processor at the same budget (16 px patches, no 2x2 merge, <= 256 patches)."""
    try:
        from transformers import Qwen2VLImageProcessor
    except Exception:
        return "skipped: transformers not installed"
    import logging
    import webdataset as wds
    from PIL import Image

    logging.getLogger("transformers").setLevel(logging.ERROR)
    proc = Qwen2VLImageProcessor(patch_size=P, merge_size=1, temporal_patch_size=1, min_pixels=P * P,
                                 max_pixels=BUDGET * P * P)
    t = time.perf_counter()
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        proc(images=[Image.open(io.BytesIO(media(sample))).convert("RGB")], return_tensors="np")
        n += 1
    return n, time.perf_counter() - t, type(proc).__name__


def shard_bytes(urls: list[str]) -> list[bytes]:
    import webdataset as wds

    return [media(s) for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]


def run_limit(images: list[bytes]) -> tuple[int, float]:
    """Pillow ``draft()`` toward the fitted size, then the decode: nothing else (bytes already in memory)."""
    from PIL import Image

    from patchpack.fit import FitConfig, fit

    cfg = FitConfig(patch_size=P, max_patches=BUDGET)
    targets = []
    for data in images:
        w, h = Image.open(io.BytesIO(data)).size
        fh, fw = fit(h, w, cfg)
        targets.append((fw, fh))
    t = time.perf_counter()
    for data, target in zip(images, targets):
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", target)
        im.load()
    return len(images), time.perf_counter() - t


def upscaled(mixed: list[np.ndarray]) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for img in mixed:
        h, w = img.shape[:2]
        for side in (1500, 2200, 3000):
            s = side / max(h, w)
            im = Image.fromarray(img).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
            out.append(np.asarray(im))
    return out


def run_patchpack_augmented(urls: list[str]) -> tuple[int, float, float]:
    """``make_loader`` with the default augmentation: crop + flip drawn from the header, draft decode
    of the crop, colour jitter on the fitted pixels. ``(images, wall s, CPU s)``."""
    from patchpack import make_loader
    from patchpack.augment import AugmentConfig

    t, c = time.perf_counter(), time.process_time()
    loader = make_loader(urls, seq_len=SEQ_LEN, patch_size=P, max_patches=BUDGET, batch_size=8, buffer_size=64,
                         shuffle_shards=False, augment=AugmentConfig())
    n = sum(b.num_examples for b in loader)
    return n, time.perf_counter() - t, time.process_time() - c


def run_naive_augmented(urls: list[str]) -> tuple[int, float, float]:
    """The naive pipeline doing the same augmentation: full decode, then the same crop box and
    flip, resize of the crop to its fitted size, the same colour jitter, patchify.
    ``(images, wall s, CPU s)``."""
    import webdataset as wds
    from PIL import Image

    from patchpack.augment import AugmentConfig, apply_pixels, draw_crop
    from patchpack.rng import CROP_STREAM, PIXEL_STREAM
    from patchpack.fit import FitConfig, fit
    from patchpack.rng import example_rng

    cfg, aug = FitConfig(patch_size=P, max_patches=BUDGET), AugmentConfig()
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        im = Image.open(io.BytesIO(media(sample))).convert("RGB")
        box = draw_crop(im.height, im.width, aug, example_rng(0, 0, key, CROP_STREAM))
        h, w = fit(box.height, box.width, cfg)
        im = im.crop((box.left, box.top, box.left + box.width, box.top + box.height))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        if box.flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = apply_pixels(np.asarray(im)[None], aug, example_rng(0, 0, key, PIXEL_STREAM))[0]
        patches = a.reshape(h // P, P, w // P, P, 3).transpose(0, 2, 1, 3, 4).reshape(-1, P * P * 3)
        assert patches.shape[0] <= BUDGET
        n += 1
    return n, time.perf_counter() - t, time.process_time() - c


def augment_row(tmp: str, name: str, images: list[np.ndarray], n: int, repeat: int) -> None:
    """A set with the default augmentation on, against the naive pipeline doing the same."""
    d = os.path.join(tmp, "augment-" + name)
    os.makedirs(d)
    urls = write_set(d, images, n, "aug")
    run_naive_augmented(urls[:1])
    run_patchpack_augmented(urls[:1])
    tn = tpp = cn = cpp = float("inf")
    for _ in range(repeat):
        nn, t, c = run_naive_augmented(urls)
        tn, cn = min(tn, t), min(cn, c)
        npp, t, c = run_patchpack_augmented(urls)
        tpp, cpp = min(tpp, t), min(cpp, c)
    assert nn == npp == n, (nn, npp, n)
    naive, ours = nn / tn, npp / tpp
    print(f"\n[{name}, default augmentation: random resized crop + flip + colour jitter] {n} images, best of {repeat}")
    print(f"  naive Pillow (full decode, crop, resize, flip, jitter)  {naive:8.1f} img/s   1.00x")
    print(f"  patchpack (crop from header, draft decode of the crop)  {ours:8.1f} img/s   {ours / naive:.2f}x"
          f"   (CPU time: {cn / cpp:.2f}x)")


def threads_child(spec_json: str) -> None:
    """One loader run in this process: images/s and a digest of every batch (for --threads)."""
    import hashlib

    import torch

    from patchpack import make_loader

    spec = json.loads(spec_json)
    torch.set_num_threads(1)
    loader = make_loader(spec["urls"], seq_len=SEQ_LEN, patch_size=P, max_patches=BUDGET, batch_size=8,
                         buffer_size=64, shuffle_shards=False, decode_threads=spec["threads"],
                         num_workers=spec["workers"])
    digest, n = hashlib.blake2b(digest_size=8), 0
    t = time.perf_counter()
    for b in loader:
        n += b.num_examples
        for name in ("patches", "segment_ids", "positions", "grids", "labels"):
            digest.update(np.ascontiguousarray(getattr(b, name).numpy()).data)  # no copy; hashing frees the GIL
        digest.update(json.dumps(b.sample_keys).encode())
    print(json.dumps({"images": n, "seconds": time.perf_counter() - t, "digest": digest.hexdigest()}))


def _tree_pss_mb(pid: int) -> float:
    """PSS (MB) of ``pid`` and its descendants (shared pages split between the processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                        break
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return total


def measure_threads(urls: list[str], threads: int, workers: int, cores: set[int]) -> dict:
    """Run :func:`threads_child` on ``cores``; sample its peak PSS (with its workers) every ``PSS_INTERVAL_S``."""
    import threading

    spec = json.dumps({"urls": urls, "threads": threads, "workers": workers})
    proc = subprocess.Popen([sys.executable, __file__, "--threads-child", spec], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_pss_mb(proc.pid))
            time.sleep(PSS_INTERVAL_S)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"threads child failed ({proc.returncode})")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_pss_mb"] = peak[0]
    return res


def threads_row(tmp: str, images: list[np.ndarray], n: int, repeat: int, cores: list[int]) -> None:
    """decode_threads=2 in one process against one thread and against two worker processes, on 2 cores."""
    cores = cores[:2]
    d = os.path.join(tmp, "threads")
    os.makedirs(d)
    urls = write_set(d, images, n, "thr")
    runs: dict[str, dict] = {}
    for _ in range(repeat):  # interleaved, best of
        for label, threads, workers in (("1 thread", 1, 0), ("decode_threads=2", 2, 0), ("2 workers", 1, 2)):
            r = measure_threads(urls, threads, workers, set(cores))
            best = runs.get(label)
            if best is None or r["seconds"] < best["seconds"]:
                r["peak_pss_mb"] = max(r["peak_pss_mb"], best["peak_pss_mb"]) if best else r["peak_pss_mb"]
                runs[label] = r
            else:
                best["peak_pss_mb"] = max(best["peak_pss_mb"], r["peak_pss_mb"])
    one = runs["1 thread"]
    print(f"\n[threads: mixed + upscaled photos, cores {cores}] {n} images, best of {repeat}")
    for label, r in runs.items():
        print(f"  {label:<18} {r['images'] / r['seconds']:8.1f} img/s  {one['seconds'] / r['seconds']:5.2f}x   "
              f"peak PSS {r['peak_pss_mb']:6.0f} MB   batches {r['digest']}")
    same = runs["decode_threads=2"]["digest"] == one["digest"]
    print(f"  batches of decode_threads=2 {'identical to' if same else 'DIFFER FROM'} decode_threads=1")


def rss_child(urls_json: str) -> None:
    pin_one_core()
    n, _, _ = run_patchpack(json.loads(urls_json))
    print(json.dumps({"images": n, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure_rss(urls: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-child", json.dumps(urls)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: the sets, and the formats their photos are encoded in
SETS = {"mixed": ("JPEG",), "large": ("JPEG",), "upscaled": ("JPEG",), "png-webp": ("PNG", "WEBP")}


def measure_set(tmp: str, name: str, images: list[np.ndarray], n: int, repeat: int) -> dict:
    """Every pipeline on one set, interleaved, best of ``repeat``: images/s by row, and shares."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    urls = write_set(d, images, n, name, SETS[name])
    run_naive(urls[:1])  # warm caches and imports
    run_patchpack(urls[:1])
    run_patchpack(urls[:1], resize="pillow")
    data = shard_bytes(urls)
    run_limit(data[:4])
    best: dict[str, float] = {}
    peers: dict[str, str] = {}

    def keep(label: str, seconds: float) -> None:
        best[label] = min(best.get(label, float("inf")), seconds)

    for _ in range(repeat):  # interleaved, best of: the machine may be shared
        keep("naive", run_naive(urls)[1])
        keep("patchpack", run_patchpack(urls)[1])
        keep("patchpack-pillow", run_patchpack(urls, resize="pillow")[1])
        keep("limit", run_limit(data)[1])
        for label, run in (("siglip2 image processor (Pillow backend)", run_siglip2),
                           ("qwen2-vl image processor", run_qwen2vl)):
            res = run(urls)
            if isinstance(res, str):
                peers[label] = res
            else:
                keep(label, res[1])
    _, total, packing = run_patchpack(urls, timers=True)
    return {"rate": {k: n / v for k, v in best.items()}, "peers": peers, "pack_share": packing / total}


def print_set(name: str, res: dict, n: int, repeat: int) -> None:
    rate, naive = res["rate"], res["rate"]["naive"]
    ours, limit = rate["patchpack"], rate["limit"]
    print(f"\n[{name}: {'/'.join(SETS[name])}] {n} images, best of {repeat}")
    print(f"  naive Pillow (full decode, resize, patchify)   {naive:8.1f} img/s   1.00x")
    print(f"  patchpack (probe, pack, draft decode, collate) {ours:8.1f} img/s   {ours / naive:.2f}x   "
          f"({limit / ours:.2f}x the limit's time per image; goal <= 1.30x)")
    print(f"  patchpack, image__resize='pillow'              {rate['patchpack-pillow']:8.1f} img/s   "
          f"{rate['patchpack-pillow'] / naive:.2f}x   ({limit / rate['patchpack-pillow']:.2f}x the limit's time)")
    for label in ("siglip2 image processor (Pillow backend)", "qwen2-vl image processor"):
        if label in res["peers"]:
            print(f"  {label:<46} {res['peers'][label]}")
        else:
            print(f"  {label:<46} {rate[label]:8.1f} img/s   {rate[label] / naive:.2f}x   "
                  f"(patchpack {ours / rate[label]:.2f}x it)")
    what = "Pillow draft() decode only" if SETS[name] == ("JPEG",) else "Pillow decode only (no DCT scale)"
    print(f"  limit: {what:<39} {limit:8.1f} img/s   {limit / naive:.2f}x   "
          f"(decode is {100 * ours / limit:.0f}% of patchpack's time)")
    print(f"  packing + collation share of patchpack time    {100 * res['pack_share']:.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160, help="images per set (default 160)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per pipeline, best kept (default 3)")
    ap.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated sets to run (default {','.join(SETS)}; \"\" for none)")
    ap.add_argument("--no-threads", action="store_true", help="skip the decode_threads comparison")
    ap.add_argument("--no-extras", action="store_true", help="skip the augmentation, threads and RSS rows")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return
    if args.threads_child is not None:
        threads_child(args.threads_child)
        return
    all_cores = sorted(os.sched_getaffinity(0))
    pin_one_core()
    n = 24 if args.quick else args.n
    if args.quick:
        args.repeat = 1
    sets = photos()
    sets["upscaled"] = upscaled(sets["mixed"])
    sets["png-webp"] = sets["mixed"]
    print(f"one core, p={P}, budget {BUDGET} patches, L={SEQ_LEN}; q90 photos from skimage.data")
    print("large set: retina 1411x1411, 8 rotations/flips (shipped photo, not upscaled)")
    print("upscaled set: every mixed photo upscaled to a long side of 1500, 2200, 3000 px")
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.sets.split(",")):
            print_set(name, measure_set(tmp, name, sets[name], n, args.repeat), n, args.repeat)
        if args.no_extras:
            return
        extras(tmp, sets, n, args, all_cores)


def extras(tmp: str, sets: dict, n: int, args: argparse.Namespace, all_cores: list[int]) -> None:
    """The augmentation rows, decode threads against workers, and peak RSS of a 10x longer stream."""
    for name in ("mixed", "large"):
        augment_row(tmp, name, sets[name], n, args.repeat)
    if not args.no_threads and len(all_cores) >= 2:
        threads_row(tmp, sets["mixed"] + sets["upscaled"], 2 * n, args.repeat, all_cores)
    d = os.path.join(tmp, "rss")
    os.makedirs(d)
    short = write_set(d, sets["mixed"], n, "short")
    long_ = write_set(d, sets["mixed"], 10 * n, "long")
    a, b = measure_rss(short), measure_rss(long_)
    print(f"\npeak RSS: {a['images']} images {a['maxrss_mb']:.0f} MB, {b['images']} images "
          f"{b['maxrss_mb']:.0f} MB  (ratio {b['maxrss_mb'] / a['maxrss_mb']:.2f}x for a 10x longer stream)")


if __name__ == "__main__":
    main()

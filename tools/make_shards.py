#!/usr/bin/env python
"""Turn an image/video folder, or a class-folder tree, into webdataset tar shards with ``.cls`` labels.

Every image or video file is one sample, with the files of the same stem beside it as its other
members (``a.jpg`` + ``a.json`` make one sample), read as the loader reads a folder. Its tar key is
the file's path relative to ROOT with ``.`` written ``%2E`` (``cat/2021.05.01.jpg`` ->
``cat/2021%2E05%2E01%2Ejpg``), so dotted names never merge inside the tar. In a class-folder tree
(``ROOT/<class>/...``) each sample gets a ``cls`` member: the index of its top folder in
the sorted class list, written to ``OUT/classes.json``. Members that would need unpickling
are left out (and reported). Samples go to ``OUT/NAME-000000.tar``, ... with at most
``--per-shard`` samples each, in sorted key order or shuffled with ``--shuffle SEED``.

    python tools/make_shards.py ROOT --out OUT [--name shard] [--per-shard 1000] [--shuffle SEED]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchpack.sources import Sample  # noqa: E402
from patchpack.sources.folder import folder_classes, read_folder, tar_key  # noqa: E402


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def make_shards(root: str, out: str, name: str = "shard", per_shard: int = 1000,
                shuffle: int | None = None) -> dict:
    """Write the shards; returns ``{"shards": [...], "samples": n, "skipped": [records], "classes": [...]}``."""
    if per_shard < 1:
        raise ValueError("per_shard must be >= 1")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples, skipped = [], []
    for rec in read_folder(root, 0, lambda i: True):
        (samples if isinstance(rec, Sample) else skipped).append(rec)
    if shuffle is not None:
        random.Random(shuffle).shuffle(samples)
    classes = folder_classes(root)
    if classes:
        (out_dir / "classes.json").write_text(json.dumps({c: i for i, c in enumerate(classes)}, indent=1))
    shards = []
    for start in range(0, len(samples), per_shard):
        path = out_dir / f"{name}-{start // per_shard:06d}.tar"
        tmp = path.with_name(f".{path.name}.tmp")
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for s in samples[start:start + per_shard]:
                for ext, data in sorted(s.members.items()):
                    _add(tar, f"{tar_key(s.key)}.{ext}", data)
        tmp.replace(path)
        shards.append(str(path))
    return {"shards": shards, "samples": len(samples), "skipped": skipped, "classes": classes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a folder of images/videos, or ROOT/<class>/... for labels")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="shard", help="shard name prefix (default shard)")
    ap.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED", help="shuffle samples with this seed")
    args = ap.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"make_shards: {args.root} is not a folder", file=sys.stderr)
        return 2
    r = make_shards(args.root, args.out, args.name, args.per_shard, args.shuffle)
    for rec in r["skipped"]:
        print(f"skipped {rec.key}: {rec.kind}: {rec.message}", file=sys.stderr)
    labels = f", {len(r['classes'])} classes (classes.json)" if r["classes"] else ""
    print(f"{r['samples']} samples -> {len(r['shards'])} shard(s) in {args.out}{labels}")
    return 0 if r["shards"] else 1


if __name__ == "__main__":
    sys.exit(main())

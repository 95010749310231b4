#!/usr/bin/env python
"""Validate webdataset tar shards without packing: every sample's members, unsafe members, end markers.

Each shard is read with patchpack's tar reader (:func:`patchpack.sources.tar.read_tar`),
which reports truncated tars, missing end-of-archive markers, duplicate members and
members that would need unpickling (``unsafe``, never loaded). Every image or video
member's header is then read (no pixels unless ``--pixels``) and the label parsed, so
each problem comes with its error kind (see ``patchpack.errors.ERROR_KINDS``), the
sample key and the member. Prints one line per problem and a per-shard summary; exit
status 1 when any problem is found, 0 when every shard is clean.

    python tools/lint_shards.py SHARDS... [--video] [--pixels] [--label-field cls] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchpack import decode  # noqa: E402
from patchpack.decode.image import IMAGE_EXTS  # noqa: E402
from patchpack.decode.video.config import VIDEO_EXTS, VideoConfig  # noqa: E402
from patchpack.errors import ErrorRecord, SampleError  # noqa: E402
from patchpack.sources import Sample, expand_sources, sample_labels  # noqa: E402
from patchpack.sources.tar import read_tar  # noqa: E402


def lint_sample(sample: Sample, video: VideoConfig | None, pixels: bool, label_field: str) -> list[dict]:
    """Problems of one sample: one dict per bad member (``kind``, ``member``, ``message``)."""
    out = []
    media = [m for m in sample.members if m.rsplit(".", 1)[-1].lower() in IMAGE_EXTS | (VIDEO_EXTS if video else set())]
    if not media:
        names = ", ".join(sorted(sample.members)) or "none"
        out.append({"kind": "no-media", "member": "", "message": f"no image{'/video' if video else ''} member ({names})"})
    for member in media:
        kind = "video" if member.rsplit(".", 1)[-1].lower() in VIDEO_EXTS and video else "image"
        data = sample.members[member]
        try:
            header = decode.read_header(data, kind, None, video, key=sample.key)
            if pixels:
                from patchpack.fit import FitConfig, plan_example

                plan = plan_example(header, FitConfig(max_patches=64), video)
                decode.materialize(data, plan, None, video)
        except SampleError as e:
            out.append({"kind": e.kind, "member": member, "message": e.message})
    try:
        sample_labels(sample, label_field)
    except SampleError as e:
        out.append({"kind": e.kind, "member": label_field.split(":")[0] if label_field != "cls" else "cls",
                    "message": e.message})
    return out


def lint_shard(url: str, video: VideoConfig | None, pixels: bool, label_field: str) -> dict:
    samples, problems = 0, []
    for rec in read_tar(url, 0, lambda i: True):
        if isinstance(rec, ErrorRecord):
            problems.append({"shard": url, "key": rec.key, "member": "", "kind": rec.kind, "message": rec.message})
            continue
        samples += 1
        for p in lint_sample(rec, video, pixels, label_field):
            problems.append({"shard": url, "key": rec.key, **p})
    return {"shard": url, "samples": samples, "problems": problems,
            "kinds": dict(sorted(Counter(p["kind"] for p in problems).items()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", nargs="+", help="tar shards (brace patterns allowed)")
    ap.add_argument("--video", action="store_true", help="also check video members (PyAV)")
    ap.add_argument("--pixels", action="store_true", help="decode pixels too (slower; finds damage past the header)")
    ap.add_argument("--label-field", default="cls", help='"cls" or "json:<key>" (default cls)')
    ap.add_argument("--json", action="store_true", help="one JSON object per shard")
    args = ap.parse_args(argv)
    video = VideoConfig() if args.video else None
    total = 0
    for url in expand_sources(args.shards):
        report = lint_shard(url, video, args.pixels, args.label_field)
        total += len(report["problems"])
        if args.json:
            print(json.dumps(report, sort_keys=True))
            continue
        for p in report["problems"]:
            where = f"{p['key']}" + (f" [{p['member']}]" if p["member"] else "")
            print(f"{url}: {where}: {p['kind']}: {p['message']}")
        kinds = ", ".join(f"{k}={v}" for k, v in report["kinds"].items()) or "clean"
        print(f"{url}: {report['samples']} samples, {len(report['problems'])} problems ({kinds})")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

"""``patchpack stats``: run the pipeline over shards without a model and report packing.

Prints :meth:`PackStats.summary` (or, with ``--json``, one JSON object with at least
``examples`` (packed), ``sequences``, ``padding_fraction``, ``errors`` (count) and
``error_kinds`` (kind -> count)). A progress bar is shown when stderr is a terminal.
``--errors FILE`` writes every error record as JSONL; ``--report DIR`` writes the
figures of :mod:`patchpack.report`. Video options apply when video decoding is
available: giving any of them enables video members.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .pack import PackConfig

__all__ = ["add_arguments", "add_video_arguments", "video_config", "run", "build_config"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="shard urls (brace patterns allowed) or image folders")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per packed sequence L (default 1024)")
    parser.add_argument("--patch-size", type=int, default=16, help="patch side p in pixels (default 16)")
    parser.add_argument("--max-patches", type=int, default=256, help="patch budget per frame (default 256)")
    parser.add_argument("--max-per-seq", type=int, default=None, help="examples per sequence cap Emax")
    parser.add_argument("--buffer-size", type=int, default=PackConfig.buffer_size,
                        help=f"packer buffer in examples (default {PackConfig.buffer_size})")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default 8)")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="constant token drop rate (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="stop after this many batches")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--errors", metavar="FILE", default=None, help="write error records to FILE (JSONL)")
    parser.add_argument("--report", metavar="DIR", default=None, help="write figures and tables to DIR")
    parser.add_argument("--report-format", choices=("png", "html"), default="html",
                        help="png: figures only; html: figures plus index.html and stats.json (default)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_video_arguments(parser)


#: command-line option -> ``VideoConfig`` field
_VIDEO_OPTIONS = {"frames": "frames", "fps": "fps", "tubelet": "tubelet", "video_tokens": "max_tokens"}


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--frames --fps --tubelet --video-tokens``; any of them enables video members."""
    video = parser.add_argument_group("video (any of these enables video members)")
    video.add_argument("--frames", type=int, default=None, help="frames sampled per clip")
    video.add_argument("--fps", type=float, default=None, help="sampling rate in frames per second")
    video.add_argument("--tubelet", type=int, default=None, help="frames per tubelet pt")
    video.add_argument("--video-tokens", type=int, default=None,
                       help="total tokens per video; frames are traded against resolution")


def video_config(args: argparse.Namespace) -> Any | None:
    """The ``VideoConfig`` the video options describe, or ``None`` when none is given."""
    given = {f: getattr(args, o) for o, f in _VIDEO_OPTIONS.items() if getattr(args, o, None) is not None}
    if not given:
        return None
    from .decode.video import VideoConfig  # imported only when video is asked for

    return VideoConfig(**given)


def build_config(args: argparse.Namespace):
    """The :class:`~patchpack.loader.LoaderConfig` the command line describes."""
    from .drop import DropConfig
    from .fit import FitConfig
    from .loader import LoaderConfig

    drop = DropConfig("constant", rate=args.drop_rate) if args.drop_rate else DropConfig()
    return LoaderConfig(
        fit=FitConfig(patch_size=args.patch_size, max_patches=args.max_patches),
        drop=drop,
        pack=PackConfig(seq_len=args.seq_len, max_per_seq=args.max_per_seq, buffer_size=args.buffer_size),
        video=video_config(args),
        batch_size=args.batch_size,
        seed=args.seed,
        errors_path=args.errors,
    )


def run(args: argparse.Namespace) -> int:
    from .loader import make_loader

    if args.errors:
        open(args.errors, "w").close()  # start a fresh file; the loader appends
    try:
        cfg = build_config(args)
    except ValueError as exc:
        print(f"patchpack stats: {exc}", file=sys.stderr)
        return 2
    loader = make_loader(args.urls, cfg, num_workers=args.workers)
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" seq", file=sys.stderr, dynamic_ncols=True)
    try:
        for i, batch in enumerate(loader):
            if bar is not None:
                bar.update(batch.batch_size)
                bar.set_postfix(examples=loader.stats.examples, pad=f"{loader.stats.padding_fraction:.1%}",
                                errors=loader.stats.errors, refresh=False)
            if args.limit is not None and i + 1 >= args.limit:
                break
    finally:
        if bar is not None:
            bar.close()
    stats = loader.stats
    if args.report:
        from .report import write_report

        paths = write_report(stats, args.report, fmt=args.report_format)
        main_page = next((p for p in paths if p.suffix == ".html"), paths[0] if paths else args.report)
        print(f"report: {main_page}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(stats.to_dict(), sort_keys=True))
    else:
        print(stats.summary())
    return 0

"""``patchpack stats``: run the pipeline over shards without a model and report packing.

Prints :meth:`PackStats.summary` (or, with ``--json``, one JSON object with at least
``examples`` (packed), ``sequences``, ``padding_fraction``, ``errors`` (count) and
``error_kinds`` (kind -> count)). A progress bar is shown when stderr is a terminal.
``--errors FILE`` writes every error record as JSONL; ``--report DIR`` writes the
figures of :mod:`patchpack.viz.report`. Video flags (:mod:`patchpack.cli.flags`): giving
any of them enables video members. Exits with 1 when no example came through or a source
could not be opened (see :mod:`patchpack.cli.checks`).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import LoaderConfig
from ..fit.image import FitConfig
from ..pack.config import PackConfig
from . import checks, flags

__all__ = ["add_arguments", "run", "build_config"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="shard urls (brace patterns allowed) or image folders")
    flags.add_seq_len(parser, 1024)
    flags.add_fit(parser, 16, 256)
    flags.add_max_per_seq(parser)
    flags.add_buffer_size(parser)
    parser.add_argument("--batch-size", type=flags.positive_int, default=8, help="sequences per batch (default 8)")
    flags.add_drop(parser)
    parser.add_argument("--workers", type=flags.non_negative_int, default=0,
                        help="DataLoader worker processes (default 0)")
    flags.add_seed(parser)
    parser.add_argument("--limit", type=flags.positive_int, default=None, help="stop after this many batches")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--errors", metavar="FILE", default=None, help="write error records to FILE (JSONL)")
    parser.add_argument("--report", metavar="DIR", default=None, help="write figures and tables to DIR")
    parser.add_argument("--report-format", choices=("png", "html"), default="html",
                        help="png: figures only; html: figures plus index.html and stats.json (default)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    flags.add_video(parser)
    flags.add_reading(parser)


def build_config(args: argparse.Namespace) -> LoaderConfig:
    """The :class:`~patchpack.config.LoaderConfig` the command line describes."""
    return LoaderConfig(
        fit=FitConfig(patch_size=args.patch_size, max_patches=args.max_patches),
        drop=flags.drop_config(args),
        pack=PackConfig(seq_len=args.seq_len, max_per_seq=args.max_per_seq, buffer_size=args.buffer_size),
        video=flags.video_config(args),
        batch_size=args.batch_size,
        seed=args.seed,
        errors_path=args.errors,
    ).with_overrides(**flags.reading_options(args))


def run(args: argparse.Namespace) -> int:
    from ..loader import make_loader

    urls = checks.check_sources(args.urls)
    checks.check_output_folder(args.report, "--report")
    with checks.config_errors():
        cfg = build_config(args)
        loader = make_loader(urls, cfg, num_workers=args.workers)
    if args.errors:
        open(args.errors, "w").close()  # start a fresh file; the loader appends
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
        from ..viz.report import write_report

        paths = write_report(stats, args.report, fmt=args.report_format)
        main_page = next((p for p in paths if p.suffix == ".html"), paths[0] if paths else args.report)
        print(f"report: {main_page}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(stats.to_dict(), sort_keys=True))
    else:
        print(stats.summary())
    return checks.report_outcome("stats", stats.examples, loader.errors, urls=urls, video=cfg.video,
                                 seq_len=cfg.pack.seq_len, label_field=cfg.label_field)

"""``patchpack show URLS... --out F.png``: draw the first packed batches of a loader (see :mod:`patchpack.viz.show`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..viz.show import draw_batch
from . import checks, flags

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="webdataset shards (brace patterns allowed) or patchpack shard folders")
    parser.add_argument("--out", default="show.png", help="output PNG; batch i > 0 goes to STEM-i.png")
    parser.add_argument("--batches", type=flags.positive_int, default=1, help="number of batches to draw")
    parser.add_argument("--rows", type=flags.positive_int, default=None,
                        help="sequences drawn per batch (default: all)")
    flags.add_seq_len(parser, None)
    parser.add_argument("--batch-size", type=flags.positive_int, default=None, help="sequences per batch B")
    flags.add_fit(parser, None, None)
    flags.add_max_per_seq(parser)
    flags.add_buffer_size(parser, None)
    flags.add_drop(parser)
    flags.add_seed(parser, None)
    flags.add_video(parser)


def _out_path(out: Path, i: int) -> Path:
    return out if i == 0 else out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")


def run(args: argparse.Namespace) -> int:
    from ..loader import make_loader  # the loader composes the pipeline; imported only here

    urls = checks.check_sources(args.urls)
    overrides = {
        k: v
        for k, v in dict(
            seq_len=args.seq_len, batch_size=args.batch_size, patch_size=args.patch_size,
            max_patches=args.max_patches, seed=args.seed, max_per_seq=args.max_per_seq,
            buffer_size=args.buffer_size,
        ).items()
        if v is not None
    }
    with checks.config_errors():
        drop = flags.drop_config(args)
        if drop.active:
            overrides["drop"] = drop
        video = flags.video_config(args)
        if video is not None:
            overrides["video"] = video
        loader = make_loader(urls, **overrides)
    p, pt, c = loader.config.patch_size, loader.config.tubelet, 3  # the loader decodes to RGB
    out = Path(args.out)
    n = 0
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        written = draw_batch(batch, p, pt, c, path=_out_path(out, i), rows=args.rows)
        print(f"wrote {written} ({batch.batch_size} sequences, {batch.num_examples} examples, "
              f"padding {100 * batch.padding_fraction:.1f}%)")
        n += 1
    if loader.errors and n:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(loader.stats.error_kinds.items()))
        print(f"{len(loader.errors)} error records, not drawn ({kinds}); first: {loader.errors[0].key}: "
              f"{loader.errors[0].message}")
    cfg = loader.config
    return checks.report_outcome("show", n and loader.stats.examples, loader.errors, urls=urls, video=cfg.video,
                                 seq_len=cfg.pack.seq_len, label_field=cfg.label_field)

"""``patchpack preprocess URLS... --out DIR``: webdataset shards to patchpack Arrow shards (see :mod:`patchpack.offline`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..fit.image import MODES, FitConfig
from ..errors import ErrorRecord
from ..offline.config import ENGINES, PreprocessConfig
from ..pack.config import PackConfig
from . import checks, flags

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="webdataset shards (brace patterns allowed)")
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds a run)")
    parser.add_argument("--workers", type=flags.positive_int, default=1,
                        help="processes (local) or concurrent tasks (ray)")
    parser.add_argument("--engine", choices=ENGINES, default="local")
    parser.add_argument("--packed", action="store_true", help="store packed sequences instead of examples")
    flags.add_seed(parser)
    flags.add_fit(parser, 16, 256)
    parser.add_argument("--fit-mode", choices=MODES, default="native",
                        help="resolution policy (see patchpack.fit.image)")
    flags.add_seq_len(parser, 1024)
    flags.add_max_per_seq(parser)
    flags.add_buffer_size(parser)
    flags.add_drop(parser)
    flags.add_video(parser)
    flags.add_reading(parser, ("buffer_bytes", "max_member_bytes"))
    parser.add_argument("--no-verify", action="store_true", help="on resume, check sizes instead of sha256")
    parser.add_argument("--overwrite", action="store_true", help="replace a run made with another config")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The :class:`PreprocessConfig` the command line describes (``--seq-len``, ``--max-per-seq``,
    ``--buffer-size``, ``--buffer-bytes`` and the drop flags matter only with ``--packed``)."""
    return PreprocessConfig(
        fit=FitConfig(patch_size=args.patch_size, max_patches=args.max_patches or None, mode=args.fit_mode),
        video=flags.video_config(args), seed=args.seed, packed=args.packed,
        pack=PackConfig(seq_len=args.seq_len, max_per_seq=args.max_per_seq, buffer_size=args.buffer_size,
                        buffer_bytes=args.buffer_bytes),
        drop=flags.drop_config(args), max_member_bytes=args.max_member_bytes,
    )


def _records(out: Path, manifest: dict) -> list[ErrorRecord]:
    """The run's error records (``errors.jsonl`` of a finished run)."""
    path = out / (manifest.get("errors_file") or "errors.jsonl")
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ErrorRecord(**json.loads(line)) for line in lines if line.strip()]


def run(args: argparse.Namespace) -> int:
    from ..offline.engines import PreprocessError, preprocess
    from ..storage.manifest import ManifestError

    urls = checks.check_sources(args.urls)  # nothing is written for a path that does not exist
    checks.check_output_folder(args.out, "--out")
    with checks.config_errors():
        cfg = config_from_args(args)
        if cfg.packed:  # packed shards skip oversize examples as the loader does: same trap check
            from ..config import LoaderConfig

            LoaderConfig(fit=cfg.fit, drop=cfg.drop, pack=cfg.pack, video=cfg.video)
    try:
        m = preprocess(
            urls, args.out, cfg, workers=args.workers, engine=args.engine,
            verify=not args.no_verify, overwrite=args.overwrite, progress=not args.quiet,
        )
    except ManifestError as exc:  # another run's folder: a mistake in --out, said in one line
        raise checks.UsageError(str(exc)) from None
    except PermissionError as exc:  # a folder we may not write
        raise checks.UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    except PreprocessError as exc:  # not complete: the first records and a hint, exit 1
        m = exc.manifest
        code = checks.report_outcome("preprocess", m["totals"]["examples"], _records(Path(args.out), m), urls=urls,
                                     video=cfg.video, label_field=cfg.label_field)
        if code == 0:  # a source gave nothing that does not read as unopened (e.g. not a tar)
            print(f"patchpack preprocess: error: {exc}", file=sys.stderr)
        return 1
    t = m["totals"]
    print(
        f"{len(m['shards'])} shard(s) -> {args.out}: {t['examples']:,} examples, {t['rows']:,} rows, "
        f"{t['errors']:,} errors ({t['bytes'] / 2**20:.1f} MiB)"
    )
    return checks.report_outcome("preprocess", t["examples"], _records(Path(args.out), m), urls=urls,
                                 video=cfg.video, label_field=cfg.label_field)

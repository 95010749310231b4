"""``patchpack preprocess URLS... --out DIR``: webdataset shards to patchpack Arrow shards (see :mod:`patchpack.offline`).

The shared flags say what is stored (resolution, video, labels and text fields; with
``--packed`` also the packing and dropping); ``patchpack stats OUT`` and ``patchpack train OUT``
then read the patch size and budget back from the shards. numpy only: torch is never imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import checks, flags, options

__all__ = ["add_arguments", "config_from_args", "run"]

#: shared flags preprocessing has no use for (it runs processes, not decode threads; reads local shards)
_UNUSED = ("--batch-size", "--decode-threads", "--num-classes", "--errors", "--packed-shards")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="webdataset shards (brace patterns allowed) or folders")
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds a run)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local processes, or Ray Data tasks (--workers at a time) (default local)")
    parser.add_argument("--packed", action="store_true",
                        help="store packed sequences (the packing and drop flags then apply) instead of examples")
    parser.add_argument("--overwrite", action="store_true", help="replace a run made with another config")
    flags.add_config(parser)
    flags.add_flags(parser, exclude=_UNUSED)
    flags.add_flags(parser, ("run",), exclude=("--json",))


def config_from_args(args: argparse.Namespace):
    """The :class:`~patchpack.offline.config.PreprocessConfig` the command line describes (packing and
    dropping matter only with ``--packed``; ``--verify`` is how a resumed run checks finished shards)."""
    from ..offline.config import PreprocessConfig

    cfg = options.loader_config(args)
    with checks.config_errors(options.in_user_words):
        return PreprocessConfig.from_loader(cfg, packed=args.packed,
                                            drop=cfg.drop if args.packed else type(cfg.drop)()), cfg


def _records(out: Path, manifest: dict) -> list:
    """The run's error records (``errors.jsonl`` of a finished run)."""
    from ..errors import ErrorRecord

    path = out / (manifest.get("errors_file") or "errors.jsonl")
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ErrorRecord(**json.loads(line)) for line in lines if line.strip()]


def run(args: argparse.Namespace) -> int:
    from ..offline.engines import PreprocessError, preprocess
    from ..storage.manifest import ManifestError

    urls = checks.check_sources(args.urls)  # nothing is written for a path that does not exist
    cfg, loader_cfg = config_from_args(args)
    checks.check_output_folder(args.out, "--out")
    if cfg.fit.mode != "native":  # said before the run, on every run: it decides what the shards hold
        print(f"patchpack preprocess: note: --fit-mode {cfg.fit.mode} draws each example's resolution once, for "
              "epoch 0; the stored shards serve that one resolution in every epoch (raw shards draw a new one "
              "each epoch). Dropping and packing stay random per epoch.", file=sys.stderr)
    progress = getattr(args, "progress", None)
    try:
        m = preprocess(urls, args.out, cfg, workers=max(args.workers, 1 if args.engine == "ray" else 0),
                       engine=args.engine, verify=loader_cfg.verify == "sha256", overwrite=args.overwrite,
                       progress=progress if progress is not None else sys.stderr.isatty())
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
    print(f"{len(m['shards'])} shard(s) -> {args.out}: {t['examples']:,} examples, {t['rows']:,} rows, "
          f"{t['errors']:,} errors ({t['bytes'] / 2**20:.1f} MiB)")
    return checks.report_outcome("preprocess", t["examples"], _records(Path(args.out), m), urls=urls,
                                 video=cfg.video, label_field=cfg.label_field)

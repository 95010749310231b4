"""``patchpack stats``: run the pipeline over shards without a model and report packing.

Prints what packing achieved and what the same data would cost without it
(:func:`patchpack.viz.report.summary_text`), how fast batches came, and the errors; with
``--json``, one JSON object (:meth:`PackStats.to_dict` plus ``cost`` and ``data_wait``).
``--errors FILE`` writes every error record as JSON lines; ``--report DIR`` writes the figures
and ``index.html`` of :mod:`patchpack.viz.report`. Both are checked before any work.

Without ``--workers`` the command runs one worker stream in this process
(:func:`patchpack.pipeline.stream.worker_stream`, numpy only: torch is never imported); with
``--workers N`` it runs the loader's DataLoader, as training would. Both give the same
statistics. Exits with 1 when no example came through or a source could not be opened (see
:mod:`patchpack.cli.checks`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Iterator

from . import checks, flags, options

__all__ = ["add_arguments", "run", "build_config", "Tally"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="shard urls (brace patterns allowed), folders, patchpack shards")
    flags.add_config(parser)
    flags.add_flags(parser)
    flags.add_flags(parser, ("run",))
    parser.add_argument("--limit", type=flags.positive_int, default=None, metavar="N",
                        help="stop after N batches (default: read everything)")
    parser.add_argument("--report", metavar="DIR", default=None, help="write the figures and index.html to DIR")
    parser.add_argument("--report-format", choices=("png", "html"), default="html",
                        help="png: figures only; html: figures, index.html and stats.json (default html)")


def build_config(args: argparse.Namespace, urls: list[str] | None = None):
    """The :class:`~patchpack.config.LoaderConfig` the command line describes (see
    :func:`patchpack.cli.options.loader_config`)."""
    return options.loader_config(args, urls)


class Tally:
    """What a run without a DataLoader keeps: merged stats, error records (also appended to the
    config's errors file) and each batch's delivery time."""

    def __init__(self, cfg) -> None:
        from ..pipeline.wait import DataWait
        from ..stats import PackStats

        self.cfg, self.stats, self.errors, self.waits = cfg, PackStats(), [], DataWait()
        self.loader = None  # the DataLoader, when the run has workers

    def absorb(self, info) -> None:
        self.stats.merge(info.stats)
        if info.errors:
            self.errors.extend(info.errors)
            if self.cfg.errors_path:
                with open(self.cfg.errors_path, "a", encoding="utf-8") as fh:
                    for rec in info.errors:
                        rec.write_jsonl(fh)


def _in_process(urls: list[str], cfg, tally: Tally) -> Iterator[int]:
    """The rows of each batch of one worker stream run here (no torch), as a loader without
    workers gives them."""
    from ..config import check_stored_shards
    from ..pipeline.sources import Sources
    from ..pipeline.stored_rows import check_stored_seq_len, serves_packed
    from ..pipeline.stream import WorkerPosition, worker_stream

    with checks.config_errors(options.in_user_words):
        sources = Sources(urls, cfg)
        check_stored_shards(sources.urls, cfg)
        stored = serves_packed(sources.urls, cfg)
        if stored:
            check_stored_seq_len(sources.urls, cfg)
    last = time.perf_counter()
    for item in worker_stream(sources, WorkerPosition(0, 1, 0), stored=stored):
        tally.absorb(item.info)
        if not item.info.empty:
            now = time.perf_counter()
            tally.waits.add(now - last)
            tally.waits.wall += now - last
            yield len(item.rows)
            last = time.perf_counter()


def _with_workers(urls: list[str], cfg, workers: int, tally: Tally) -> Iterator[int]:
    from ..loader import make_loader

    with checks.config_errors(options.in_user_words):
        loader = make_loader(urls, cfg, num_workers=workers)
    tally.loader = loader
    for batch in loader:
        tally.stats, tally.errors = loader.stats, loader.errors
        yield batch.batch_size
    tally.stats, tally.errors = loader.stats, loader.errors


def _wait(tally: Tally) -> dict:
    """Batch delivery times (:class:`~patchpack.pipeline.wait.DataWait`): the loader's with workers,
    else the time each batch took to make here."""
    return (tally.loader.data_wait if tally.loader is not None else tally.waits).to_dict()


def run(args: argparse.Namespace) -> int:
    from ..viz.summary import PackingCost, summary_text

    urls = checks.check_sources(args.urls)
    cfg = build_config(args, urls)
    checks.check_output_file(cfg.errors_path, "--errors")
    checks.check_output_folder(args.report, "--report", create=True)
    tally = Tally(cfg)
    batches = _with_workers(urls, cfg, args.workers, tally) if args.workers else _in_process(urls, cfg, tally)
    bar = options.progress_bar(args, unit=" seq")
    for i, rows in enumerate(batches):
        if bar is not None:
            bar.update(rows)
            bar.set_postfix(examples=tally.stats.examples, padding=f"{tally.stats.padding_fraction:.1%}",
                            errors=tally.stats.errors, refresh=False)
        if args.limit is not None and i + 1 >= args.limit:
            break
    if bar is not None:
        bar.close()
    stats, wait = tally.stats, _wait(tally)
    cost = PackingCost.of(stats, cfg)
    if args.report:
        from ..viz.report import write_report

        paths = write_report(stats, args.report, fmt=args.report_format, cost=cost, wait=wait)
        main_page = next((p for p in paths if p.suffix == ".html"), paths[-1] if paths else args.report)
        print(f"report: {main_page}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({**stats.to_dict(), "cost": cost.to_dict(), "data_wait": wait}, sort_keys=True))
    else:
        print(summary_text(stats, cost, wait, workers=args.workers))
    return checks.report_outcome("stats", stats.examples, tally.errors, urls=urls, video=cfg.video,
                                 seq_len=cfg.pack.seq_len, label_field=cfg.label_field)

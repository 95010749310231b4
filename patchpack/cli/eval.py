"""``patchpack eval RUN SHARDS... [--max-patches 64,128,256,576]``: a trained run at several patch budgets.

NaViT's flexible inference (arXiv 2307.06304, Figure 1): one model, evaluated with each
example fitted under each patch budget in turn — enlarged to fill a budget larger than the
image (``--no-upsample``: kept at its size) — gives its accuracy (contrastive runs: recall@1/@5
both ways and zero-shot accuracy) against the tokens and the time it spends per example. The
table is printed, and ``eval_curve.json``, ``eval_curve.png`` and a section of ``report.md``
are written into the run folder (``--out DIR`` elsewhere). Nothing is retrained. ``RUN`` is a
run folder ``patchpack train`` wrote, or its ``checkpoint.pt``. Without ``--max-patches`` the
budgets are a quarter, half, one and two times the run's training budget (patchpack shards:
the budget they were made with, which is the only one they can serve).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import checks, flags, options

__all__ = ["add_arguments", "run"]


def _budgets(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated patch budgets such as 64,128,256, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"patch budgets must be integers >= 1, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder written by patchpack train, or its checkpoint.pt")
    p.add_argument("urls", nargs="+", metavar="SHARDS", help="held-out shards (webdataset, folders, patchpack shards)")
    p.add_argument("--max-patches", dest="budgets", type=_budgets, default=None, metavar="N,N,...",
                   help="patch budgets per frame to evaluate at (default: 1/4, 1/2, 1 and 2 times the run's)")
    p.add_argument("--no-upsample", action="store_true",
                   help="keep examples smaller than a budget at their size (default: enlarge them to fill it)")
    p.add_argument("--max-batches", type=flags.positive_int, default=None, metavar="N",
                   help="evaluate at most N batches per budget (default: every batch)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda ...")
    p.add_argument("--out", default=None, metavar="DIR", help="write the curve here (default: the run folder)")
    flags.add_flags(p, only=("--workers", "--json"))


def _stored_budget(urls: list[str]) -> int | None:
    return options.stored_options(urls).get("fit__max_patches")


def run(args: argparse.Namespace) -> int:
    import os

    from ..train.flexible import default_budgets, evaluate_budgets, load_run, write_curve

    if not os.path.exists(args.run):
        raise checks.UsageError(f"{args.run}: no such run folder or checkpoint")
    urls = checks.check_sources(args.urls)
    checks.check_output_folder(args.out, "--out", create=True)
    try:
        spec, _, _ = load_run(args.run)
    except ValueError as exc:
        raise checks.UsageError(str(exc)) from None
    stored = _stored_budget(urls)
    budgets = args.budgets or ([stored] if stored else default_budgets(spec))
    if not budgets:
        raise checks.UsageError("the run has no patch budget to start from: give --max-patches N,N,...")
    log = None if args.json else (lambda line: print(line, file=sys.stderr))
    with checks.config_errors(lambda text: text.replace("max_patches=", "--max-patches ")):
        curve = evaluate_budgets(args.run, urls, budgets, upsample=not args.no_upsample, device=args.device,
                                 num_workers=args.workers, max_batches=args.max_batches, log=log)
    json_path, png_path = write_curve(curve, args.out)
    if args.json:
        print(json.dumps(curve.to_dict()))
    else:
        print(curve.table())
        print(f"curve: {png_path}  figures: {json_path}")
    if not any(p.examples for p in curve.points):
        print("patchpack eval: error: no example came through at any budget", file=sys.stderr)
        return 1
    return 0

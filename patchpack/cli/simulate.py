"""``patchpack simulate``: pack a synthetic NaViT-like stream (see :mod:`patchpack.pack.simulate`).

The stream goes through the loader's own fit, drop and packer under the shared flags, with the
loader's defaults, so its figures hold for a run with the same flags. ``--source-side-min``
and ``--source-side-max`` set the synthetic sources' longer side (not the fit's range, which
``--fit-side-min``/``--fit-side-max`` set). numpy only: torch is never imported.
"""

from __future__ import annotations

import argparse
import json
import math

from . import checks, flags, options

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=flags.positive_int, default=100_000, help="synthetic examples (default 100000)")
    p.add_argument("--source-side-min", type=flags.positive_int, default=64,
                   help="smallest longer side of the synthetic sources in pixels (default 64)")
    p.add_argument("--source-side-max", type=flags.positive_int, default=None,
                   help="largest longer side of the synthetic sources (default p*sqrt(L), a square filling a sequence)")
    flags.add_config(p)
    flags.add_flags(p, ("packing", "fit", "drop"), exclude=("--buffer-bytes",))
    flags.add_flags(p, only=("--seed", "--json"))


def run(args: argparse.Namespace) -> int:
    from ..pack.simulate import SimConfig, simulate
    from ..stats import PackStats
    from ..viz.summary import PackingCost, summary_text

    cfg = options.loader_config(args)  # what the loader would refuse (a batch larger than memory too) is refused
    p, seq_len = cfg.patch_size, cfg.pack.seq_len
    side_max = args.source_side_max or int(p * math.sqrt(seq_len))
    if side_max < args.source_side_min:
        how = "" if args.source_side_max else f" = --patch-size {p} x sqrt(--seq-len {seq_len})"
        raise checks.UsageError(
            f"the largest source side ({side_max} px{how}) is below --source-side-min {args.source_side_min}: "
            "lower --source-side-min or raise --source-side-max" + ("" if args.source_side_max else " / --seq-len"))
    pack = cfg.pack
    with checks.config_errors(options.in_user_words):
        sim = SimConfig(
            examples=args.examples, seq_len=seq_len, patch_size=p, side_min=args.source_side_min,
            side_max=args.source_side_max, fit=cfg.fit, buffer_size=pack.buffer_size, max_wait=pack.max_wait,
            max_per_seq=pack.max_per_seq, max_open=pack.max_open, algorithm=pack.algorithm, drop=cfg.drop,
            seed=cfg.seed,
        )
    result = simulate(sim)
    stats = PackStats.from_dict(result["stats"])
    cost = PackingCost.of(stats, cfg)
    if args.json:
        print(json.dumps({**result, "cost": cost.to_dict()}))
        return 0
    print(f"simulated {sim.examples:,} examples: L={seq_len}, p={p}, budget {cfg.fit.patch_budget} patches, "
          f"packer {sim.algorithm}, buffer {sim.buffer_size}")
    print(summary_text(stats, cost))
    print(f"{'offline packing':<17} {100 * result['offline_padding_fraction']:.3f}% padding (best-fit decreasing "
          f"over all examples at once)")
    print(f"{'packer speed':<17} {result['examples_per_second']:,.0f} examples/s")
    return 0

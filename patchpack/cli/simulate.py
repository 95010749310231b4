"""``patchpack simulate --seq-len L``: pack a synthetic NaViT-like stream (see :mod:`patchpack.pack.simulate`)."""

from __future__ import annotations

import argparse
import json
import math

from ..pack import PACKERS
from ..pack.simulate import SimConfig, simulate
from ..stats import PackStats
from . import checks, flags

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_seq_len(p, None, required=True)
    p.add_argument("--examples", type=flags.positive_int, default=100_000, help="synthetic examples (default 100000)")
    p.add_argument("--patch-size", type=flags.positive_int, default=16, help="patch side p in pixels (default 16)")
    p.add_argument("--side-min", type=flags.positive_int, default=64, help="smallest long side in pixels (default 64)")
    p.add_argument("--side-max", type=flags.positive_int, default=None, help="largest long side (default p*sqrt(L))")
    p.add_argument("--packer", choices=PACKERS.names(), default="bfd", help="packing algorithm (default bfd)")
    flags.add_buffer_size(p, 1024)
    p.add_argument("--max-wait", type=flags.positive_int, default=None,
                   help="age bound in arrivals for open sequences (default 2*buffer size)")
    flags.add_max_per_seq(p)
    p.add_argument("--max-open", type=flags.non_negative_int, default=0, help="bfd sequences carried open with free space (default 0)")
    flags.add_drop(p, kind="none", rate=0.25, legacy="kind", rate_max=True)
    flags.add_seed(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    side_max = args.side_max or int(args.patch_size * math.sqrt(args.seq_len))
    if side_max < args.side_min:
        how = "" if args.side_max else f" = --patch-size {args.patch_size} x sqrt(--seq-len {args.seq_len})"
        raise checks.UsageError(
            f"the largest long side ({side_max} px{how}) is below --side-min {args.side_min}: "
            "lower --side-min or raise --side-max" + ("" if args.side_max else " / --seq-len"))
    with checks.config_errors():
        drop = flags.drop_config(args)
        cfg = SimConfig(
            examples=args.examples, seq_len=args.seq_len, patch_size=args.patch_size, side_min=args.side_min,
            side_max=args.side_max, buffer_size=args.buffer_size, max_wait=args.max_wait,
            max_per_seq=args.max_per_seq, max_open=args.max_open, algorithm=args.packer, drop=drop, seed=args.seed,
        )
        cfg.pack_config  # noqa: B018 - the packing options are checked before the run
    result = simulate(cfg)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"simulated {cfg.examples:,} examples, L={cfg.seq_len}, packer={cfg.algorithm}, buffer={cfg.buffer_size}")
    print(PackStats.from_dict(result["stats"]).summary())
    print(f"offline BFD padding {100 * result['offline_padding_fraction']:.3f}%   "
          f"packer speed {result['examples_per_second']:,.0f} examples/s")
    return 0

"""Pack a synthetic NaViT-like size distribution to choose ``L``, buffer and ``Emax``.

The synthetic stream: the longer side is drawn from ``U(side_min, side_max)``
pixels (``side_max`` defaults to ``p * sqrt(L)``, the square that exactly fills a
sequence), the aspect ratio from common photo/video ratios (15% square, the rest
4:3, 3:2, 16:9, 5:4, 2:1, 21:9 and 3:1, landscape 70% of the time), and each
example is fitted natively under ``max_patches = L`` (:mod:`patchpack.fit`).
Optional per-example dropping (:mod:`patchpack.drop`) shortens examples first.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .drop import KINDS as DROP_KINDS
from .drop import DropConfig, drop_rate, keep_count
from .fit import FitConfig, fit_grid
from .pack import ALGORITHMS, PackConfig, PackedSequence, Packer, pack_offline
from .stats import PackStats

__all__ = ["SimConfig", "synthetic_sizes", "pack_stream", "simulate", "add_arguments", "run"]

#: (long side / short side, probability) of the non-square part of the stream
ASPECTS = ((4 / 3, 0.30), (3 / 2, 0.20), (16 / 9, 0.22), (5 / 4, 0.10), (2.0, 0.10), (21 / 9, 0.05), (3.0, 0.03))
SQUARE_SHARE = 0.15
LANDSCAPE_SHARE = 0.70


@dataclass(frozen=True)
class SimConfig:
    """A simulation run (``side_max=None``: ``patch_size * sqrt(seq_len)``)."""

    examples: int = 100_000
    seq_len: int = 1024
    patch_size: int = 16
    side_min: int = 64
    side_max: int | None = None
    buffer_size: int = 1024
    max_wait: int | None = None
    max_per_seq: int | None = None
    max_open: int = 0
    algorithm: str = "bfd"
    drop: DropConfig = field(default_factory=DropConfig)
    seed: int = 0

    @property
    def pack_config(self) -> PackConfig:
        return PackConfig(
            self.seq_len, self.max_per_seq, self.buffer_size, self.max_wait, self.algorithm, max_open=self.max_open
        )


def synthetic_sizes(
    n: int, seq_len: int, patch_size: int = 16, side_min: int = 64, side_max: int | None = None, seed: int = 0
) -> np.ndarray:
    """int64 ``[n, 2]`` fitted grids ``(gh, gw)`` of a NaViT-like stream (see module doc)."""
    rng = np.random.default_rng(seed)
    side_max = side_max or int(patch_size * math.sqrt(seq_len))
    if side_max < side_min:
        raise ValueError(f"side_max={side_max} is smaller than side_min={side_min}")
    long_side = rng.uniform(side_min, side_max, n)
    ratios, probs = zip(*ASPECTS)
    aspect = np.where(rng.random(n) < SQUARE_SHARE, 1.0, rng.choice(ratios, size=n, p=np.array(probs) / sum(probs)))
    short = np.maximum(1, np.round(long_side / aspect)).astype(int)
    long_ = np.round(long_side).astype(int)
    landscape = rng.random(n) < LANDSCAPE_SHARE
    heights = np.where(landscape, short, long_)
    widths = np.where(landscape, long_, short)
    cfg = FitConfig(patch_size=patch_size, max_patches=seq_len)
    return np.array([fit_grid(int(h), int(w), cfg) for h, w in zip(heights, widths)], dtype=np.int64)


def pack_stream(lengths: list[int], config: PackConfig) -> tuple[list[PackedSequence], float]:
    """Push ``lengths`` (handles are their indices) through a fresh packer, flush it.

    Returns the emitted sequences and the seconds the packer took.
    """
    packer = Packer(config)
    push = packer.push
    t0 = time.perf_counter()
    out: list[PackedSequence] = []
    for i, n in enumerate(lengths):
        out += push(i, n)
    out += packer.flush()
    return out, time.perf_counter() - t0


def simulate(cfg: SimConfig, reference: bool = True) -> dict:
    """Run the packer over a synthetic stream; return a JSON-ready summary.

    Keys: ``padding_fraction``, ``examples``, ``sequences``, ``examples_per_sequence``,
    ``max_wait``, ``mean_wait``, ``examples_per_second`` (packer only),
    ``drop_fraction``, ``stats`` (full :class:`PackStats`) and, with ``reference``,
    ``offline_padding_fraction`` of offline best-fit decreasing on the same lengths.
    """
    grids = synthetic_sizes(cfg.examples, cfg.seq_len, cfg.patch_size, cfg.side_min, cfg.side_max, cfg.seed)
    full = (grids[:, 0] * grids[:, 1]).tolist()
    rng = np.random.default_rng([cfg.seed, 1])
    lengths = [keep_count(n, drop_rate(cfg.drop, n, rng)) for n in full] if cfg.drop.active else full
    stats = PackStats()
    for n, k, g in zip(full, lengths, grids):
        stats.add_example(n, k, (int(g[0]), int(g[1])))
    out, elapsed = pack_stream(lengths, cfg.pack_config)
    for seq in out:
        stats.add_sequence(seq, cfg.seq_len)
    result = {
        "padding_fraction": stats.padding_fraction,
        "examples": stats.examples,
        "sequences": stats.sequences,
        "examples_per_sequence": stats.mean_examples_per_seq,
        "max_wait": stats.max_wait,
        "mean_wait": stats.mean_wait,
        "examples_per_second": len(lengths) / elapsed if elapsed > 0 else float("inf"),
        "drop_fraction": stats.drop_fraction,
    }
    if reference:
        ref = pack_offline(lengths, cfg.seq_len, cfg.max_per_seq)
        result["offline_padding_fraction"] = 1.0 - sum(lengths) / (len(ref) * cfg.seq_len) if ref else 0.0
    result["stats"] = stats.to_dict()
    return result


# -- CLI ------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq-len", type=int, required=True, help="tokens per packed sequence L")
    p.add_argument("--examples", type=int, default=100_000, help="synthetic examples (default 100000)")
    p.add_argument("--patch-size", type=int, default=16, help="patch side p in pixels (default 16)")
    p.add_argument("--side-min", type=int, default=64, help="smallest long side in pixels (default 64)")
    p.add_argument("--side-max", type=int, default=None, help="largest long side (default p*sqrt(L))")
    p.add_argument("--packer", choices=ALGORITHMS, default="bfd", help="packing algorithm (default bfd)")
    p.add_argument("--buffer", type=int, default=1024, help="bfd buffer size in examples (default 1024)")
    p.add_argument("--max-wait", type=int, default=None, help="age bound in arrivals for open sequences (default 2*buffer)")
    p.add_argument("--max-per-seq", type=int, default=None, help="Emax, examples per sequence (default no cap)")
    p.add_argument("--max-open", type=int, default=0, help="bfd sequences carried open with free space (default 0)")
    p.add_argument("--drop", choices=DROP_KINDS, default="none", help="token dropping (default none)")
    p.add_argument("--drop-rate", type=float, default=0.25, help="constant drop rate (default 0.25)")
    p.add_argument("--drop-max", type=float, default=0.5, help="max rate for beta/resolution (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    drop = DropConfig(kind=args.drop, rate=args.drop_rate if args.drop == "constant" else 0.0, rate_max=args.drop_max)
    cfg = SimConfig(
        examples=args.examples, seq_len=args.seq_len, patch_size=args.patch_size, side_min=args.side_min,
        side_max=args.side_max, buffer_size=args.buffer, max_wait=args.max_wait, max_per_seq=args.max_per_seq,
        max_open=args.max_open,
        algorithm=args.packer, drop=drop, seed=args.seed,
    )
    result = simulate(cfg)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"simulated {cfg.examples:,} examples, L={cfg.seq_len}, packer={cfg.algorithm}, buffer={cfg.buffer_size}")
    print(PackStats.from_dict(result["stats"]).summary())
    print(f"offline BFD padding {100 * result['offline_padding_fraction']:.3f}%   "
          f"packer speed {result['examples_per_second']:,.0f} examples/s")
    return 0

"""Padding and speed of the packers on a NaViT-like stream and on other size distributions,
next to offline best-fit decreasing.

For L in {256, 1024, 4096}, without dropping and with Beta dropping, prints for each
packer (streaming bfd with default settings, first-fit, next-fit) the padding
fraction, its gap to the offline BFD reference on the same lengths, examples/s of
the packer alone (one core) and the maximum wait. Goals (defaults): padding <= 1.0% at
L=256 and <= 0.25% at L=1024 without dropping, <= 0.1% with Beta dropping; within
0.05 points of offline BFD; >= 250k examples/s.

A second table holds the streaming bfd packer to the same +0.05-point gap on size
distributions it was not tuned on (held-out seed): half the NaViT-like stream
Beta-dropped, many thumbnails plus a few large photos, video clips of 1-8 tubelets, and
heavy-tailed (lognormal) token counts.

    python benchmarks/packing.py [--examples 100000] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from patchpack.drop import DropConfig, drop_rate, keep_count
from patchpack.fit.image import FitConfig, fit_grid
from patchpack.pack import PackConfig, pack_offline
from patchpack.pack.simulate import SimConfig, pack_stream, simulated_examples

GOAL_PAD = {(256, False): 0.010, (1024, False): 0.0025}
GOAL_PAD_DROP = 0.001
GOAL_GAP = 0.0005
GOAL_SPEED = 250_000


def lengths_for(n: int, seq_len: int, beta: bool, seed: int) -> list[int]:
    g, _ = simulated_examples(SimConfig(examples=n, seq_len=seq_len, seed=seed))  # native fit, no drop
    full = (g[:, 0] * g[:, 1]).tolist()
    if not beta:
        return full
    cfg, rng = DropConfig(kind="beta", rate_max=0.5), np.random.default_rng([seed, 7])
    return [keep_count(k, drop_rate(cfg, k, rng)) for k in full]


def half_beta(n: int, seq_len: int, seed: int) -> list[int]:
    """NaViT-like sizes, every other example (at random) Beta-dropped."""
    full = lengths_for(n, seq_len, False, seed)
    cfg, rng = DropConfig(kind="beta", rate_max=0.5), np.random.default_rng([seed, 7])
    dropped = np.random.default_rng([seed, 9]).random(n) < 0.5
    return [keep_count(k, drop_rate(cfg, k, rng)) if d else k for k, d in zip(full, dropped)]


def thumbs_and_photos(n: int, seq_len: int, seed: int, p: int = 16) -> list[int]:
    """90% thumbnails (long side 48-160 px), 10% photos (1000-4000 px) fitted natively under L."""
    rng = np.random.default_rng([seed, 3])
    big = rng.random(n) < 0.10
    long_side = np.where(big, rng.uniform(1000, 4000, n), rng.uniform(48, 160, n))
    short = np.maximum(1, np.round(long_side / rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9], size=n)))
    landscape = rng.random(n) < 0.7
    cfg = FitConfig(patch_size=p, max_patches=seq_len)
    out = []
    for lg, sh, land in zip(long_side, short, landscape):
        h, w = (sh, lg) if land else (lg, sh)
        gh, gw = fit_grid(int(h), int(w), cfg)
        out.append(gh * gw)
    return out


def video_clips(n: int, seq_len: int, seed: int, p: int = 16) -> list[int]:
    """Clips of T = 1..8 tubelets, each frame fitted under L / T (most sequences hold one clip)."""
    rng = np.random.default_rng([seed, 5])
    out = []
    for t in rng.integers(1, 9, n):
        per = max(1, seq_len // int(t))
        side = rng.uniform(0.5, 1.0) * p * math.sqrt(per) * 1.2
        aspect = rng.choice([16 / 9, 4 / 3, 1.0, 9 / 16])
        h, w = side / math.sqrt(aspect), side * math.sqrt(aspect)
        gh, gw = fit_grid(max(1, int(h)), max(1, int(w)), FitConfig(patch_size=p, max_patches=per))
        out.append(int(t) * gh * gw)
    return out


def lognormal(n: int, seq_len: int, seed: int) -> list[int]:
    """Heavy-tailed token counts: lognormal around L/8 (sigma 1), clipped to [1, L]."""
    x = np.exp(np.random.default_rng([seed, 11]).normal(math.log(seq_len / 8), 1.0, n))
    return np.clip(np.round(x), 1, seq_len).astype(int).tolist()


#: the held-out distributions of the second table
DISTRIBUTIONS = {"half-beta": half_beta, "thumbs+photos": thumbs_and_photos, "video": video_clips,
                 "lognormal": lognormal}


def run_packer(lengths: list[int], cfg: PackConfig, repeats: int) -> tuple[float, float, int]:
    best, out = float("inf"), []
    for _ in range(repeats):
        out, seconds = pack_stream(lengths, cfg)
        best = min(best, seconds)
    pad = 1.0 - sum(lengths) / (len(out) * cfg.seq_len)
    wait = max(s.emitted_at - 1 - a for s in out for a in s.arrivals)
    return pad, len(lengths) / best, wait


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    ap.add_argument("--quick", action="store_true", help="10,000 examples, one repeat: a smoke run for CI")
    args = ap.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
        args.examples, args.repeats = min(args.examples, 10_000), 1

    print(f"{args.examples:,} examples per row; padding in %; gap = padding - offline BFD padding (points)")
    header = f"{'L':>5} {'drop':>5} {'packer':>10} {'padding%':>9} {'offline%':>9} {'gap':>7} {'ex/s':>10} {'max wait':>9}"
    print(header)
    print("-" * len(header))
    failures = []
    for seq_len in (256, 1024, 4096):
        for beta in (False, True):
            lengths = lengths_for(args.examples, seq_len, beta, args.seed)
            ref = pack_offline(lengths, seq_len)
            ref_pad = 1.0 - sum(lengths) / (len(ref) * seq_len)
            for algo in ("bfd", "first-fit", "next-fit"):
                repeats = args.repeats if algo != "first-fit" else 1
                pad, speed, wait = run_packer(lengths, PackConfig(seq_len=seq_len, algorithm=algo), repeats)
                gap = pad - ref_pad
                drop = "beta" if beta else "none"
                print(f"{seq_len:>5} {drop:>5} {algo:>10} {100 * pad:>9.3f} {100 * ref_pad:>9.3f} "
                      f"{100 * gap:>+7.3f} {speed:>10,.0f} {wait:>9}")
                if algo != "bfd":
                    continue
                goal = GOAL_PAD_DROP if beta else GOAL_PAD.get((seq_len, False))
                if goal is not None and pad > goal:
                    failures.append(f"L={seq_len} drop={drop}: padding {100 * pad:.3f}% > {100 * goal:.2f}%")
                if gap > GOAL_GAP:
                    failures.append(f"L={seq_len} drop={drop}: {100 * gap:.3f} points above offline BFD")
                if speed < GOAL_SPEED:
                    failures.append(f"L={seq_len} drop={drop}: {speed:,.0f} examples/s < {GOAL_SPEED:,}")
    print()
    print(f"held-out distributions (seed {args.seed + 1}), streaming bfd with default settings:")
    header = f"{'distribution':>14} {'L':>5} {'padding%':>9} {'offline%':>9} {'gap':>7} {'ex/s':>10} {'max wait':>9}"
    print(header)
    print("-" * len(header))
    for name, make in DISTRIBUTIONS.items():
        for seq_len in (256, 1024, 4096):
            lengths = make(args.examples, seq_len, args.seed + 1)
            ref = pack_offline(lengths, seq_len)
            ref_pad = 1.0 - sum(lengths) / (len(ref) * seq_len)
            pad, speed, wait = run_packer(lengths, PackConfig(seq_len=seq_len), args.repeats)
            gap = pad - ref_pad
            print(f"{name:>14} {seq_len:>5} {100 * pad:>9.3f} {100 * ref_pad:>9.3f} {100 * gap:>+7.3f} "
                  f"{speed:>10,.0f} {wait:>9}")
            if gap > GOAL_GAP:
                failures.append(f"{name} L={seq_len}: {100 * gap:.3f} points above offline BFD")
    print()
    print("goals met" if not failures else "goals missed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()

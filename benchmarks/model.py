"""NaViT on packed batches against a padded ViT, TokenLearner savings, and attention memory (CPU).

Every figure is a ratio against a baseline measured in the same run.

1. **Packed vs padded.** Images follow the demo's size distribution (geometric-mean
   side log-uniform in 32..256 px, aspect 1:3..3:1), fitted to a 16 px grid under a
   64-patch budget; every strategy gets the same token budget per step
   (``batch * seq_len``): ``vit-square`` (each image shrunk into the 8 x 8 grid and
   padded; the baseline), ``navit-nextfit`` (arrival-order grouping), ``navit-packed``
   (the streaming BFD packer). Real (non-padding) tokens/s and images/s.
2. **TokenLearner vs none** (K=8 after half of the blocks) on *uniform* rows (every
   example 8 x 8 patches), *mixed* rows (each row: a few large examples of 12..16
   patches a side and small ones of 3..4 up to ``max_per_seq = L / 32``) and batches of a
   real packed stream (BFD packer, ``max_per_seq`` 16 and 32). FLOPs per training step
   include attention (block-diagonal work only, counted analytically; see
   :mod:`patchpack.model.flops`). The learned sequence's padding is reported for the
   static layout (``K * max_per_seq`` places per row) and the default per-batch layout
   (goal <= 10% on the stream), and time saving / FLOP saving (goal >= 0.8).
3. **Peak memory** of one training step at ``B=8, L=4096`` (examples of 16..256
   tokens), each configuration in a fresh process (peak RSS over the resident size before the step): the
   linear-memory ``window`` attention against the dense ``sdpa`` mask.

Step times are the fastest of ``--steps`` timed steps after two warm-up steps (robust
to other work on a shared machine; step shapes are fixed).

    python benchmarks/model.py [--quick] [--steps 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch

from patchpack.fit import FitConfig, fit_grid
from patchpack.loader.batch import collate
from patchpack.model import NaViT, NaViTConfig, TokenLearnerConfig, train_flops
from patchpack.model.learned_layout import learned_layout, slots_for
from patchpack.pack import PackConfig, make_packer
from patchpack.tokenize import Tokens, grid_positions

P, BUDGET, NC = 16, 64, 10


def _tokens(key: int, grid: tuple[int, int], rng: np.random.Generator) -> Tokens:
    gh, gw = grid
    return Tokens(str(key), rng.integers(0, 256, (gh * gw, P * P * 3), dtype=np.uint8), grid_positions(1, gh, gw),
                  (1, gh, gw), int(rng.integers(0, NC)))


def image_grids(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    cfg = FitConfig(patch_size=P, max_patches=BUDGET)
    out = []
    for _ in range(n):
        side = math.exp(rng.uniform(math.log(32), math.log(256)))
        aspect = math.exp(rng.uniform(-math.log(3), math.log(3)))
        out.append(fit_grid(max(8, round(side / math.sqrt(aspect))), max(8, round(side * math.sqrt(aspect))), cfg))
    return out


def pack_rows(grids, seq_len: int, max_per_seq: int, algorithm: str = "bfd") -> list[list[int]]:
    packer = make_packer(PackConfig(seq_len=seq_len, algorithm=algorithm, buffer_size=128, max_per_seq=max_per_seq))
    rows = []
    for i, g in enumerate(grids):
        rows += [list(s.handles) for s in packer.push(i, g[0] * g[1])]
    return rows


def batches_of(rows, grids, batch: int, seq_len: int, e: int, limit: int):
    rng = np.random.default_rng(1)
    out = []
    for s in range(0, min(len(rows), limit * batch) - batch + 1, batch):
        b = collate([[_tokens(h, grids[h], rng) for h in r] for r in rows[s : s + batch]], seq_len, e)
        out.append((b, b.num_tokens))
    return out


def square_batches(grids, batch: int, seq_len: int, limit: int):
    """Each image shrunk into the square budget grid (aspect kept) and padded with zero pixels,
    which a plain ViT attends like any other token: ``[(batch, real tokens)]``."""
    side = math.isqrt(BUDGET)
    per_step = batch * seq_len // BUDGET
    rng = np.random.default_rng(2)
    out = []
    for start in range(0, len(grids) - per_step + 1, per_step):
        rows, real = [], 0
        for i in range(start, start + per_step):
            gh, gw = grids[i]
            scale = min(1.0, side / max(gh, gw))
            t = _tokens(i, (max(1, round(gh * scale)), max(1, round(gw * scale))), rng)
            real += len(t)
            canvas = np.zeros((side, side, P * P * 3), np.uint8)
            canvas[t.positions[:, 1], t.positions[:, 2]] = t.patches
            rows.append([Tokens(t.key, canvas.reshape(BUDGET, -1), grid_positions(1, side, side), (1, side, side),
                                t.label)])
        out.append((collate(rows, BUDGET, 1), real))
        if len(out) >= limit:
            break
    return out


def time_training(model: NaViT, batches, steps: int) -> float:
    """Fastest training-step time in seconds (AdamW, fwd + bwd + update)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(b):
        loss = NaViT.loss(model(b), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:2]:
        step(b)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def make_model(args, tl=None, bound=None, attention="auto") -> NaViT:
    torch.manual_seed(0)
    return NaViT(NaViTConfig(patch_size=P, dim=args.dim, depth=args.depth, heads=args.heads, num_classes=NC,
                             attention=attention, max_example_tokens=bound, token_learner=tl))


def packed_vs_padded(args) -> None:
    grids = image_grids(1500 if args.quick else 4000)
    l, b = args.seq_len, args.batch
    n = 10_000
    sets = {
        "vit-square": square_batches(grids, b, l, n),
        "navit-nextfit": batches_of(pack_rows(grids, l, 64, "next-fit"), grids, b, l, 64, n),
        "navit-packed": batches_of(pack_rows(grids, l, 64), grids, b, l, 64, n),
    }
    print(f"\n== packed NaViT vs padded ViT: {b} x {l} tokens per step, dim {args.dim} depth {args.depth}, "
          f"attention auto (examples <= {BUDGET} tokens) ==")
    print(f"{'strategy':<15} {'img/step':>8} {'pad':>6} {'img/s':>9} {'tok/s':>9} {'img/s vs vit':>13} {'tok/s vs vit':>13}")
    base = None
    for name, pairs in sets.items():
        bs = [x for x, _ in pairs]
        dt = time_training(make_model(args, bound=BUDGET), bs[: args.steps + 2], args.steps)
        per_step = float(np.mean([int((x.labels >= 0).sum()) for x in bs]))
        real = float(np.mean([n for _, n in pairs]))
        pad = 1 - real / (bs[0].batch_size * bs[0].seq_len)
        r = (per_step / dt, real / dt)
        base = base or r
        print(f"{name:<15} {per_step:>8.1f} {pad:>6.1%} {r[0]:>9.1f} {r[1]:>9.0f} "
              f"{r[0] / base[0]:>12.2f}x {r[1] / base[1]:>12.2f}x")


def uniform_rows(b: int, l: int, rng) -> tuple[list, int]:
    per_row = l // 64
    return [[_tokens(i * per_row + j, (8, 8), rng) for j in range(per_row)] for i in range(b)], per_row


def mixed_rows(b: int, l: int, rng, large: int, e: int) -> tuple[list, int]:
    rows, key = [], 0
    for _ in range(b):
        row, used = [], 0
        for _ in range(large):
            g = tuple(int(s) for s in rng.integers(12, 17, 2))
            row.append(_tokens(key, g, rng))
            used, key = used + g[0] * g[1], key + 1
        while len(row) < e:
            g = tuple(int(s) for s in rng.integers(3, 5, 2))
            if used + g[0] * g[1] > l:
                break
            row.append(_tokens(key, g, rng))
            used, key = used + g[0] * g[1], key + 1
        rows.append(row)
    return rows, e


def learned_padding(batch, k: int, slots: int | None = None) -> float:
    """Padding share of the learned sequence: per batch (``slots=None``, the default layout) or static."""
    b = batch.batch_size
    r = slots or slots_for(batch.num_examples, b)
    lay = learned_layout(batch.segment_ids, batch.positions, batch.grids, num_tokens=k, frames=1, slots=r)
    return float(lay.padding_fraction)


def tl_row(name: str, batches, args, k: int) -> dict:
    """FLOPs and fastest step time with and without TokenLearner over ``batches`` (per-batch learned layout)."""
    tl = TokenLearnerConfig(num_tokens=k)
    plain, learned = make_model(args, bound=256), make_model(args, tl, bound=256)
    f0 = np.mean([train_flops(plain, b)["total"] for b in batches])
    f1 = np.mean([train_flops(learned, b)["total"] for b in batches])
    t0, t1 = time_training(plain, batches, args.steps), time_training(learned, batches, args.steps)
    fs, ts = 1 - f1 / f0, 1 - t1 / t0
    b0 = batches[0]
    return {"name": name, "ex": float(np.mean([b.num_examples / b.batch_size for b in batches])),
            "tok_pad": float(np.mean([b.padding_fraction for b in batches])),
            "static": float(np.mean([learned_padding(b, k, b.max_per_seq) for b in batches])),
            "learned": float(np.mean([learned_padding(b, k) for b in batches])), "e": b0.max_per_seq,
            "f0": f0, "f1": f1, "fs": fs, "t0": t0, "t1": t1, "ts": ts}


def print_tl_rows(rows: list[dict]) -> None:
    print(f"{'rows':<12} {'ex/row':>6} {'tok pad':>7} {'lrn pad K*E':>11} {'lrn pad':>7} {'GFLOP none':>10} "
          f"{'GFLOP TL':>9} {'FLOP saved':>10} {'ms none':>8} {'ms TL':>7} {'time saved':>10} {'time/FLOP':>9}")
    for r in rows:
        print(f"{r['name']:<12} {r['ex']:>6.1f} {r['tok_pad']:>7.1%} {r['static']:>11.1%} {r['learned']:>7.1%} "
              f"{r['f0'] / 1e9:>10.2f} {r['f1'] / 1e9:>9.2f} {r['fs']:>10.1%} {r['t0'] * 1e3:>8.0f} "
              f"{r['t1'] * 1e3:>7.0f} {r['ts']:>10.1%} {r['ts'] / r['fs']:>9.2f}")


def stream_sizes(n: int, rng) -> list[tuple[int, int]]:
    """A real packed stream's example sizes: 12% large (12..16 patches a side), the rest 2..5."""
    return [(int(s), int(s)) if rng.random() < 0.12 else (int(t), int(t)) for s, t in
            zip(rng.integers(12, 17, n), rng.integers(2, 6, n))]


def token_learner_savings(args) -> None:
    k, l, b = 8, args.tl_seq_len, args.batch
    rng = np.random.default_rng(3)
    kinds = {"uniform": uniform_rows(b, l, rng), "mixed": mixed_rows(b, l, rng, max(1, l // 512), l // 32)}
    print(f"\n== TokenLearner (K={k} after {args.depth // 2} of {args.depth} blocks) vs none: {b} x {l} tokens, "
          f"attention auto (examples <= 256 tokens); learned padding with K * max_per_seq places per row "
          f"('K*E', the static layout) and with the per-batch layout (default) ==")
    print_tl_rows([tl_row(name, [collate(rows, l, e)] * 3, args, k) for name, (rows, e) in kinds.items()])
    # rows of a realistic packed stream (mixed sizes, BFD, max_per_seq caps), several distinct batches
    sizes = stream_sizes(3000, rng)
    stream = []
    for e in (16, 32):
        prow = pack_rows(sizes, l, e)
        prow = prow[len(prow) // 4 :]  # the steady state: past the packer's first, fullest rows
        nb = 2 if args.quick else 4
        batches = [collate([[_tokens(h, sizes[h], rng) for h in r] for r in prow[i * b : (i + 1) * b]], l, e)
                   for i in range(nb)]
        stream.append(tl_row(f"stream E={e}", batches, args, k))
    print(f"\n== the same on a real packed stream ({b} x {l}; goals: learned padding <= 10%, time/FLOP >= 0.8) ==")
    print_tl_rows(stream)
    for r in stream:
        ok = r["learned"] <= 0.10 and r["ts"] / r["fs"] >= 0.8
        print(f"  max_per_seq={r['e']}: learned padding {r['static']:.1%} -> {r['learned']:.1%}; TokenLearner saves "
              f"{r['fs']:.1%} of FLOPs and {r['ts']:.1%} of step time, time saving / FLOP saving "
              f"{r['ts'] / r['fs']:.2f} ({'goals met' if ok else 'goal missed'})")


PROBE = r"""
import json, resource, sys, time, gc
import numpy as np, torch
from patchpack.model import NaViT, NaViTConfig, TokenLearnerConfig
attention, tl, b, l, threads = sys.argv[1], sys.argv[2] == "tl", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
e, p = 64, 16
seg = torch.zeros(b, l, dtype=torch.int32); pos = torch.zeros(b, l, 3, dtype=torch.int32)
grids = torch.zeros(b, e, 3, dtype=torch.int32); labels = torch.full((b, e), -1)
for r in range(b):
    o = j = 0
    while j < e:
        h, w = (int(v) for v in rng.integers(4, 17, 2))
        if o + h * w > l:
            break
        seg[r, o:o + h * w] = j + 1
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pos[r, o:o + h * w, 1] = torch.from_numpy(yy.ravel()); pos[r, o:o + h * w, 2] = torch.from_numpy(xx.ravel())
        grids[r, j] = torch.tensor([1, h, w]); labels[r, j] = int(rng.integers(0, 10)); o += h * w; j += 1
patches = torch.from_numpy(rng.integers(0, 256, (b, l, p * p * 3), dtype=np.uint8))
torch.manual_seed(0)
model = NaViT(NaViTConfig(patch_size=p, dim=128, depth=4, heads=4, num_classes=10, attention=attention,
                          max_example_tokens=256, token_learner=TokenLearnerConfig(num_tokens=8) if tl else None)).train()
gc.collect()
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024  # resident now, KiB
t0 = time.perf_counter()
NaViT.loss(model(patches, seg, pos, grids), labels).backward()
dt = time.perf_counter() - t0
print(json.dumps({"mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, "s": dt}))
"""


def peak_memory(args) -> None:
    b, l = (4, 2048) if args.quick else (8, 4096)
    learners = ("none",) if args.quick else ("none", "tl")
    print(f"\n== peak memory of one training step (fwd + bwd), B={b}, L={l}, dim 128 depth 4, fresh process each ==")
    res = {}
    for attention in ("sdpa", "window"):
        for tl in learners:
            out = subprocess.run([sys.executable, "-c", PROBE, attention, tl, str(b), str(l), str(args.threads)],
                                 capture_output=True, text=True, check=True)
            res[attention, tl] = json.loads(out.stdout.strip().splitlines()[-1])
    for tl in learners:
        d, w = res["sdpa", tl], res["window", tl]
        print(f"  {'TokenLearner' if tl == 'tl' else 'no learner':<13} dense sdpa mask: +{d['mb']:.0f} MB {d['s']:.1f} s"
              f"   window: +{w['mb']:.0f} MB {w['s']:.1f} s   memory {w['mb'] / max(1.0, d['mb']):.2f}x, time {w['s'] / d['s']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes for CI (well under a minute on 2 cores)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 6; 2 with --quick)")
    p.add_argument("--batch", type=int, default=4, help="rows per step")
    p.add_argument("--seq-len", type=int, default=256, help="L for packed vs padded")
    p.add_argument("--tl-seq-len", type=int, default=None, help="L for the TokenLearner rows (default 1024; 512 quick)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared machine)")
    args = p.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
    args.steps = args.steps or (2 if args.quick else 6)
    args.tl_seq_len = args.tl_seq_len or (512 if args.quick else 1024)
    torch.set_num_threads(args.threads)
    packed_vs_padded(args)
    token_learner_savings(args)
    peak_memory(args)


if __name__ == "__main__":
    main()

"""Training throughput of NaViT on packed batches against padded baselines, and TokenLearner savings.

Images follow the demo's size distribution (geometric-mean side log-uniform in
32..256 px, aspect 1:3..3:1), fitted to a 16 px patch grid under a 64-patch
budget. Every strategy gets the same token budget per step (``batch * seq_len``):

* ``vit-square``: a plain ViT; every image is padded to the square budget grid
  (8 x 8 = 64 tokens), ``batch * seq_len / 64`` images per step (the baseline);
* ``navit-nextfit``: per-image grouping without packing: images in arrival order go
  into a sequence until the next does not fit (next-fit), the rest is padding;
* ``navit-packed``: patchpack's best-fit-decreasing streaming packer.

Figures are training images/s and tokens/s (real, non-padding tokens per step
averaged over the whole stream, divided by the fastest measured step time) as ratios
against ``vit-square`` measured in the same run; then the FLOPs (fwd + bwd, from
``torch.utils.flop_counter``) and step time of NaViT with a TokenLearner half-way
against without. On CUDA the same table is measured with FlexAttention and bf16.

    python benchmarks/model.py [--steps 8] [--dim 128] [--depth 4]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from patchpack.batch import collate
from patchpack.fit import FitConfig, fit_grid
from patchpack.model import NaViT, NaViTConfig, TokenLearnerConfig
from patchpack.pack import PackConfig, Packer
from patchpack.tokenize import Tokens, grid_positions

P, BUDGET = 16, 64


def image_grids(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    cfg = FitConfig(patch_size=P, max_patches=BUDGET)
    out = []
    for _ in range(n):
        side = math.exp(rng.uniform(math.log(32), math.log(256)))
        aspect = math.exp(rng.uniform(-math.log(3), math.log(3)))
        out.append(fit_grid(max(8, round(side / math.sqrt(aspect))), max(8, round(side * math.sqrt(aspect))), cfg))
    return out


def _tokens(i: int, grid: tuple[int, int], rng: np.random.Generator, num_classes: int) -> Tokens:
    gh, gw = grid
    n = gh * gw
    return Tokens(str(i), rng.integers(0, 256, (n, P * P * 3), dtype=np.uint8), grid_positions(1, gh, gw),
                  (1, gh, gw), int(rng.integers(0, num_classes)))


def packed_batches(grids, batch: int, seq_len: int, algorithm: str, num_classes: int, max_batches: int):
    rng = np.random.default_rng(1)
    packer = Packer(PackConfig(seq_len=seq_len, algorithm=algorithm, buffer_size=128, max_per_seq=64))
    rows, out = [], []
    for i, g in enumerate(grids):
        for seq in packer.push(i, g[0] * g[1]):
            rows.append([_tokens(h, grids[h], rng, num_classes) for h in seq.handles])
        while len(rows) >= batch and len(out) < max_batches:
            out.append(collate(rows[:batch], seq_len, 64))
            rows = rows[batch:]
    return out


def square_batches(grids, batch: int, seq_len: int, num_classes: int, max_batches: int):
    """Each image shrunk to fit the square budget grid (aspect kept) and padded with zero pixels,
    which a plain ViT attends like any other token."""
    side = int(math.isqrt(BUDGET))
    per_step = batch * seq_len // BUDGET
    rng = np.random.default_rng(2)
    out = []
    for start in range(0, len(grids) - per_step + 1, per_step):
        rows = []
        real = 0
        for i in range(start, start + per_step):
            gh, gw = grids[i]
            scale = min(1.0, side / max(gh, gw))
            t = _tokens(i, (max(1, round(gh * scale)), max(1, round(gw * scale))), rng, num_classes)
            real += len(t)
            canvas = np.zeros((side, side, P * P * 3), np.uint8)
            pos = t.positions
            canvas[pos[:, 1], pos[:, 2]] = t.patches
            rows.append([Tokens(t.key, canvas.reshape(BUDGET, -1), grid_positions(1, side, side), (1, side, side),
                                t.label, {"real_tokens": len(t)})])
        b = collate(rows, BUDGET, 1)
        b.info["real_tokens"] = real
        out.append(b)
        if len(out) >= max_batches:
            break
    return out


def time_training(model: NaViT, batches, steps: int, device: torch.device, bf16: bool) -> dict:
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [b.to(device) for b in batches]
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and bf16 else None

    def step(b):
        if ctx:
            with ctx():
                logits = model(b)
        else:
            logits = model(b)
        loss = NaViT.loss(logits, b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:2]:  # warm-up (and compilation on CUDA)
        step(b)
    times, images, tokens = [], [], []
    for i in range(steps):
        b = batches[i % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        images.append(int((b.labels >= 0).sum()))
        tokens.append(int(b.info.get("real_tokens", b.num_tokens)))
    # the fastest step: robust to other work on a shared machine (the step shape is fixed)
    dt = float(np.min(times))
    return {"images_per_s": np.mean(images) / dt, "tokens_per_s": np.mean(tokens) / dt, "step_s": dt}


def train_flops(model: NaViT, batch) -> int:
    model.train()
    with FlopCounterMode(display=False) as fc:
        NaViT.loss(model(batch), batch.labels).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def run(device: torch.device, args) -> None:
    attention = "flex" if device.type == "cuda" else "sdpa"
    batch = args.batch if device.type == "cpu" else args.batch * 8
    grids = image_grids(20000 if device.type == "cuda" else 4000)
    nc = 10

    def model(tl=None):
        torch.manual_seed(0)
        return NaViT(NaViTConfig(patch_size=P, dim=args.dim, depth=args.depth, heads=args.heads, num_classes=nc,
                                 attention=attention, token_learner=tl))

    n = 10_000  # every batch of the stream: images and tokens per step are averaged over all of them
    sets = {
        "vit-square": square_batches(grids, batch, args.seq_len, nc, n),
        "navit-nextfit": packed_batches(grids, batch, args.seq_len, "next-fit", nc, n),
        "navit-packed": packed_batches(grids, batch, args.seq_len, "bfd", nc, n),
    }
    print(f"\n== {device.type}: {attention} attention, {batch} x {args.seq_len} tokens per step, "
          f"dim {args.dim} depth {args.depth} ==")
    print(f"{'strategy':<15} {'img/step':>8} {'pad':>6} {'img/s':>9} {'tok/s':>9} {'img/s vs vit':>13} {'tok/s vs vit':>13}")
    base = None
    for name, bs in sets.items():
        r = time_training(model(), bs[: args.steps + 2], args.steps, device, bf16=True)
        per_step = float(np.mean([int((b.labels >= 0).sum()) for b in bs]))
        real = float(np.mean([b.info.get("real_tokens", b.num_tokens) for b in bs]))
        pad = 1 - real / (bs[0].batch_size * bs[0].seq_len)
        r = {"images_per_s": per_step / r["step_s"], "tokens_per_s": real / r["step_s"]}
        base = base or r
        print(f"{name:<15} {per_step:>8.1f} {pad:>6.1%} {r['images_per_s']:>9.1f} {r['tokens_per_s']:>9.0f} "
              f"{r['images_per_s'] / base['images_per_s']:>12.2f}x {r['tokens_per_s'] / base['tokens_per_s']:>12.2f}x")

    packed = sets["navit-packed"]
    plain, learned = model(), model(TokenLearnerConfig(num_tokens=8))
    f0, f1 = train_flops(plain.to(device), packed[0].to(device)), train_flops(learned.to(device), packed[0].to(device))
    t0 = time_training(plain, packed[: args.steps + 2], args.steps, device, bf16=True)
    t1 = time_training(learned, packed[: args.steps + 2], args.steps, device, bf16=True)
    print(f"TokenLearner (K=8 after {args.depth // 2} of {args.depth} blocks) on packed batches:")
    print(f"  train FLOPs/step {f1 / 1e9:.2f} G vs {f0 / 1e9:.2f} G without: {f1 / f0:.2f}x "
          f"({1 - f1 / f0:.0%} saved)")
    print(f"  step time {t1['step_s'] * 1e3:.0f} ms vs {t0['step_s'] * 1e3:.0f} ms without: "
          f"{t1['step_s'] / t0['step_s']:.2f}x ({1 - t1['step_s'] / t0['step_s']:.0%} saved)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4, help="rows per step on CPU (x8 on CUDA)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args()
    run(torch.device("cpu"), args)
    if torch.cuda.is_available():
        run(torch.device("cuda"), args)
    else:
        print("\n== cuda: skipped: no CUDA ==")


if __name__ == "__main__":
    main()

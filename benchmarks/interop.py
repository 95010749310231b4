"""SigLIP2 vision training on packed rows vs HF's padded layout: real tokens per second.

The same images, fitted by patchpack's native fit (16 px patches, at most 256 patches, aspect
kept, never enlarged; sizes like the demo's: geometric-mean side log-uniform in 64..512 px,
aspect 1:3..3:1), train one randomly initialised ``transformers`` ``Siglip2VisionModel`` plus a
linear classifier on its pooled output (AdamW, cross-entropy), with the same token budget per
step (``batch x 256``):

* ``padded``: HF's layout, what ``Siglip2ImageProcessor`` emits: one image per row, padded to
  ``max_num_patches = 256`` with ``pixel_attention_mask``; ``batch`` images per step.
* ``padded-longest``: the same, padded only to the step's longest image (a smarter collate).
* ``packed``: patchpack's streaming best-fit packer fills rows of 256 tokens; the unchanged
  model runs on them through :class:`patchpack.interop.PackedSiglip2Vision`.

Each layout trains on every image once (after two warm-up steps), the layouts' steps taking
turns so that load from other work on the machine falls on all alike; real tokens/s is the
images' tokens divided by the layout's total step time, each step's time the best of
``--repeats`` passes. The last line is packed vs padded real tokens/s.

    python benchmarks/interop.py [--quick] [--images 160] [--dim 192] [--depth 4] [--batch 4] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import patchpack
from patchpack.interop import PackedSiglip2Vision, normalize, to_siglip2
from patchpack.tokenize import grid_positions

P, BUDGET, CLASSES = 16, 256, 10


def image_grids(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    cfg = patchpack.FitConfig(patch_size=P, max_patches=BUDGET)
    out = []
    for _ in range(n):
        side = math.exp(rng.uniform(math.log(64), math.log(512)))
        aspect = math.exp(rng.uniform(-math.log(3), math.log(3)))
        out.append(patchpack.fit_grid(round(side / math.sqrt(aspect)), round(side * math.sqrt(aspect)), cfg))
    return out


def example(i: int, grid: tuple[int, int]) -> "patchpack.Tokens":
    rng = np.random.default_rng(1000 + i)
    gh, gw = grid
    return patchpack.Tokens(str(i), rng.integers(0, 256, (gh * gw, P * P * 3), dtype=np.uint8),
                            grid_positions(1, gh, gw), (1, gh, gw), int(rng.integers(0, CLASSES)))


def packed_batches(grids, batch: int, max_per_seq: int) -> list:
    packer = patchpack.make_packer(patchpack.PackConfig(seq_len=BUDGET, buffer_size=64, max_per_seq=max_per_seq))
    rows, out = [], []
    sequences = [s for i, g in enumerate(grids) for s in packer.push(i, g[0] * g[1])] + list(packer.flush())
    for seq in sequences:
        rows.append([example(h, grids[h]) for h in seq.handles])
        if len(rows) == batch:
            out.append(patchpack.collate(rows, BUDGET, max_per_seq=max_per_seq))
            rows = []
    if rows:
        out.append(patchpack.collate(rows, BUDGET, max_per_seq=max_per_seq))
    return out


def padded_batches(grids, batch: int, width: int | None) -> list:
    """HF layout per step: ``batch`` images, one per row, padded to ``width`` (None: the longest)."""
    out = []
    for start in range(0, len(grids), batch):
        rows = [[example(i, grids[i])] for i in range(start, min(len(grids), start + batch))]
        b = patchpack.collate(rows, BUDGET, max_per_seq=1)
        inputs = to_siglip2(b, P, max_num_patches=width)
        out.append((inputs, b.labels[:, 0]))
    return out


def build(dim: int, depth: int, heads: int):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    cfg = Siglip2VisionConfig(hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=depth,
                              num_attention_heads=heads, patch_size=P, num_patches=BUDGET)
    model = Siglip2VisionModel._from_config(cfg, attn_implementation="sdpa")
    return model, torch.nn.Linear(dim, CLASSES)


def padded_step(model, head, opt):
    def step(item):
        inputs, labels = item
        x = dict(inputs, pixel_values=normalize(inputs["pixel_values"], "siglip2"))
        loss = F.cross_entropy(head(model(**x).pooler_output), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def packed_step(model, head, opt):
    tower = PackedSiglip2Vision(model)

    def step(b):
        out = tower.encode(b)
        loss = F.cross_entropy(head(out.pooled()), b.labels[out.slot_mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def train_interleaved(sets: dict, args) -> dict[str, list[float]]:
    """Seconds of each training step per layout, the layouts' steps taking turns (so load from
    other work on a shared machine falls on all alike); two warm-up steps each first."""
    steps, times = {}, {name: [] for name in sets}
    for name, (kind, batches) in sets.items():
        model, head = build(args.dim, args.depth, args.heads)
        model, head = model.to(args.device).train(), head.to(args.device)
        opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-4)
        steps[name] = (padded_step if kind == "padded" else packed_step)(model, head, opt)
        for item in batches[:2]:
            steps[name](item)
    sync = torch.cuda.synchronize if args.device.type == "cuda" else (lambda: None)
    for i in range(max(len(b) for _, b in sets.values())):
        for name, (_, batches) in sets.items():
            if i < len(batches):
                sync()
                t0 = time.perf_counter()
                steps[name](batches[i])
                sync()
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small run for CI")
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--batch", type=int, default=4, help="rows per step")
    p.add_argument("--max-per-seq", type=int, default=16)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    args = p.parse_args()
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
        args.images, args.dim, args.depth, args.heads, args.repeats = 40, 64, 2, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    grids = image_grids(args.images)
    real = sum(h * w for h, w in grids)
    dev = args.device
    sets = {
        "padded": ("padded", [({k: v.to(dev) for k, v in x.items()}, y.to(dev))
                              for x, y in padded_batches(grids, args.batch, BUDGET)]),
        "padded-longest": ("padded", [({k: v.to(dev) for k, v in x.items()}, y.to(dev))
                                      for x, y in padded_batches(grids, args.batch, None)]),
        "packed": ("packed", [b.to(dev) for b in packed_batches(grids, args.batch, args.max_per_seq)]),
    }
    print(f"SigLIP2 vision dim {args.dim} depth {args.depth}, {args.images} images ({real} tokens, "
          f"{real / len(grids):.0f} per image), {args.batch} x {BUDGET} tokens per step, "
          + (f"{torch.get_num_threads()} threads, CPU" if dev.type == "cpu" else str(dev)))
    print(f"{'layout':<15} {'steps':>5} {'fill':>6} {'seconds':>8} {'real tok/s':>11}")
    step_times = {name: np.full(len(batches), np.inf) for name, (_, batches) in sets.items()}
    for _ in range(args.repeats):
        for name, seconds in train_interleaved(sets, args).items():
            step_times[name] = np.minimum(step_times[name], seconds)
    best = {name: float(t.sum()) for name, t in step_times.items()}
    rates = {}
    for name, (kind, batches) in sets.items():
        slots = sum(int(np.prod(x[0]["pixel_values"].shape[:2])) for x in batches) if kind == "padded" else \
            sum(b.batch_size * b.seq_len for b in batches)
        rates[name] = real / best[name]
        print(f"{name:<15} {len(batches):>5} {real / slots:>6.1%} {best[name]:>8.2f} {rates[name]:>11.0f}")
    print(f"packed vs padded-longest: {rates['packed'] / rates['padded-longest']:.2f}x")
    print(f"packed vs padded: {rates['packed'] / rates['padded']:.2f}x")


if __name__ == "__main__":
    main()

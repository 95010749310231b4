"""Packed vs padded contrastive image-text training, and the chunked loss's memory (CPU).

Every figure is a ratio against a baseline measured in the same run.

1. **Packed vs padded, same token budget.** Captioned images from :mod:`patchpack.synth`
   (geometric-mean side log-uniform in 32..256 px, aspect 1:3..3:1, the demo's draw), each
   fitted at native resolution to a 16 px grid under a patch budget (``patchpack.fit``; 256
   patches, SigLIP2 NaFlex's default ``max_num_patches``, and the demo's 64), cut into
   patches (``patchpack.tokenize``), captions tokenized to ``--text-len`` by a word-level
   ``tokenizers`` tokenizer trained on them. Both layouts train the same two-tower model
   (NaViT image tower with MAP pooling, a small text tower, SigLIP's sigmoid loss) on rows of
   the budget's length, as many rows a step: ``padded`` (the standard layout, as HF's
   SigLIP2 processor: one image per row, padded to the budget; the baseline) and ``packed``
   (the streaming BFD packer, ``patchpack.pack``, up to ``--max-per-seq`` images a row,
   ``patchpack.loader.batch.collate``). Same tokens per step and the same attention length,
   so the difference is what packing buys. Real image tokens/s and examples (image-text
   pairs)/s; the goal is >= 1.5x examples/s at the 256-patch budget.
2. **Loss memory.** Peak memory of the sigmoid (and softmax) loss's forward + backward over
   ``N`` pairs of 256-d embeddings, full (``N x N`` logits) against chunked (blocks of
   ``--chunk`` rows recomputed in backward), each in a fresh process (peak resident
   memory over the resident size before the loss, glibc's mmap threshold fixed so that freed
   blocks leave the resident set).

Step times are the fastest of ``--steps`` timed steps after two warm-up steps (robust to
other work on a shared machine; step shapes are fixed).

    python benchmarks/contrastive.py [--quick] [--steps 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

from patchpack.fit import FitConfig, fit
from patchpack.loader.batch import collate
from patchpack.model import NaViTConfig
from patchpack.model.contrastive import TwoTower, TwoTowerConfig, contrastive_step
from patchpack.text import tokenize_texts
from patchpack.model.text import TextConfig
from patchpack.pack import PackConfig, make_packer
from patchpack.synth import IMAGE_CLASSES, SynthConfig, caption, draw_image_scene
from patchpack.tokenize import Tokens, patchify

P = 16


def captioned_images(n: int, budget: int, seed: int = 0) -> tuple[list[Tokens], list[str]]:
    """``n`` synthetic images fitted under ``budget`` patches and tokenized, and their captions."""
    synth, fit_cfg = SynthConfig(), FitConfig(patch_size=P, max_patches=budget)
    lo, hi, aspect = math.log(synth.min_side), math.log(synth.max_side), math.log(synth.max_aspect)
    examples, captions = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        side, ratio = math.exp(rng.uniform(lo, hi)), math.exp(rng.uniform(-aspect, aspect))
        h, w = fit(max(8, round(side / math.sqrt(ratio))), max(8, round(side * math.sqrt(ratio))), fit_cfg)
        name = IMAGE_CLASSES[i % len(IMAGE_CLASSES)]
        pixels, scene = draw_image_scene(name, h, w, rng)  # drawn at the fitted size: no resize needed
        patches, positions = patchify(pixels, P)
        examples.append(Tokens(str(i), patches, positions, (1, h // P, w // P), i % len(IMAGE_CLASSES)))
        captions.append(caption(scene, rng))
    return examples, captions


def word_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return tok


def with_texts(batch, rows: list[list[int]], ids: np.ndarray, mask: np.ndarray):
    """Attach ``text_ids`` / ``text_mask`` ``[B, E, T]`` aligned with the batch's slots."""
    b, e, t = len(rows), batch.max_per_seq, ids.shape[1]
    text_ids, text_mask = np.zeros((b, e, t), np.int32), np.zeros((b, e, t), bool)
    for r, handles in enumerate(rows):
        text_ids[r, : len(handles)], text_mask[r, : len(handles)] = ids[handles], mask[handles]
    batch.text_ids, batch.text_mask = torch.from_numpy(text_ids), torch.from_numpy(text_mask)
    return batch


def packed_batches(examples, ids, mask, rows_per_step: int, seq_len: int, e: int, limit: int) -> list:
    """``limit`` steps of packed rows, taken evenly from the packer's steady state: its first quarter
    of rows (emitted as its buffer first fills: the large examples) and the flush at the end (the small
    leftovers) are left out."""
    packer = make_packer(PackConfig(seq_len=seq_len, max_per_seq=e, buffer_size=128))
    rows = []
    for i, ex in enumerate(examples):
        rows += [list(s.handles) for s in packer.push(i, len(ex))]
    rows = rows[len(rows) // 4 :]
    starts = np.linspace(0, len(rows) - rows_per_step, limit).astype(int)
    steps = [rows[s : s + rows_per_step] for s in starts]
    return [with_texts(collate([[examples[h] for h in r] for r in step], seq_len, e), step, ids, mask)
            for step in steps]


def padded_batches(examples, ids, mask, rows_per_step: int, budget: int, limit: int) -> list:
    out = []
    for s in range(0, min(len(examples), limit * rows_per_step) - rows_per_step + 1, rows_per_step):
        step = [[i] for i in range(s, s + rows_per_step)]
        out.append(with_texts(collate([[examples[i]] for i, in step], budget, 1), step, ids, mask))
    return out


def make_model(args, vocab: int, budget: int) -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(TwoTowerConfig(
        image=NaViTConfig(patch_size=P, dim=args.dim, depth=args.depth, heads=args.heads, pool="map",
                          max_example_tokens=budget),
        text=TextConfig(vocab_size=vocab, text_len=args.text_len, dim=args.dim, depth=args.text_depth,
                        heads=args.heads),
        embed_dim=args.dim,
    ))


def time_training(model: TwoTower, batches, steps: int) -> float:
    """Fastest of ``steps`` training steps in seconds (sigmoid loss, AdamW: fwd + bwd + update), after two
    warm-up steps."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(b) -> float:
        t0 = time.perf_counter()
        loss = contrastive_step(model, b, loss="sigmoid")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return min([step(b) for b in itertools.islice(itertools.cycle(batches), steps + 2)][2:])


def packed_vs_padded(args, budget: int) -> float:
    """Print the table for one budget; return packed pairs/s over padded pairs/s."""
    rows, limit = args.batch, args.steps + 2
    examples, captions = captioned_images(600 if args.quick else 3000, budget)
    tok = word_tokenizer(captions)
    ids, mask, _, _ = tokenize_texts([captions], lambda text: tok.encode(text).ids, args.text_len)
    ids, mask = ids[0], mask[0]
    sets = {
        "padded": padded_batches(examples, ids, mask, rows, budget, limit),
        "packed": packed_batches(examples, ids, mask, rows, budget, args.max_per_seq, limit),
    }
    print(f"\n== packed vs padded contrastive training, {budget}-patch budget: {rows} rows of {budget} tokens per "
          f"step, dim {args.dim}, image depth {args.depth}, text depth {args.text_depth}, text_len {args.text_len}, "
          "sigmoid loss ==")
    print(f"{'layout':<8} {'rows x L':>9} {'pairs/step':>10} {'pad':>6} {'pairs/s':>8} {'img tok/s':>10} "
          f"{'pairs/s vs padded':>18} {'tok/s vs padded':>16}")
    base = None
    for name, bs in sets.items():
        dt = time_training(make_model(args, tok.get_vocab_size(), budget), bs, args.steps)
        pairs = float(np.mean([int((b.text_mask.any(-1)).sum()) for b in bs]))
        real = float(np.mean([b.num_tokens for b in bs]))
        pad = 1 - real / (bs[0].batch_size * bs[0].seq_len)
        r = (pairs / dt, real / dt)
        base = base or r
        print(f"{name:<8} {bs[0].batch_size:>4} x {bs[0].seq_len:<4}{pairs:>10.1f} {pad:>6.1%} {r[0]:>8.1f} "
              f"{r[1]:>10.0f} {r[0] / base[0]:>17.2f}x {r[1] / base[1]:>15.2f}x")
    return r[0] / base[0]


PROBE = r"""
import json, sys, time
import torch, torch.nn.functional as F
from patchpack.model.losses import contrastive_loss
name, n, chunk, k, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = F.normalize(torch.randn(n, k, generator=g), dim=-1).requires_grad_(True)
y = F.normalize(torch.randn(n, k, generator=g), dim=-1).requires_grad_(True)
scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])  # KiB
warm = [t[:8].detach().requires_grad_(True) for t in (x, y)]  # first-call costs (kernels, autograd) out of the way
contrastive_loss(name, *warm, scale, bias, 2 if chunk else None).backward()
open("/proc/self/clear_refs", "w").write("5")  # the peak resident size starts again from now
base = status("VmRSS")
t0 = time.perf_counter()
contrastive_loss(name, x, y, scale, bias, chunk or None).backward()
dt = time.perf_counter() - t0
print(json.dumps({"mb": (status("VmHWM") - base) / 1024, "s": dt}))
"""


def loss_memory(args) -> None:
    sizes = (2048,) if args.quick else (2048, 4096, 8192)
    names = ("sigmoid",) if args.quick else ("sigmoid", "softmax")
    k = 256
    # glibc raises its mmap threshold after the first large frees and then keeps freed blocks resident,
    # so peak RSS would count memory that is free; a fixed threshold makes the resident size the live size
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    print(f"\n== contrastive loss, fwd + bwd over N pairs of {k}-d embeddings: peak memory, full vs chunked "
          f"(blocks of {args.chunk} rows), fresh process each ==")
    print(f"{'loss':<8} {'N':>6} {'N x N fp32':>11} {'full MB':>8} {'full s':>7} {'chunked MB':>10} {'chunked s':>9} "
          f"{'memory':>7} {'time':>6}")
    for name in names:
        for n in sizes:
            res = {}
            for chunk in (0, args.chunk):
                out = subprocess.run([sys.executable, "-c", PROBE, name, str(n), str(chunk), str(k), str(args.threads)],
                                     capture_output=True, text=True, check=True, env=env)
                res[chunk] = json.loads(out.stdout.strip().splitlines()[-1])
            full, ch = res[0], res[args.chunk]
            print(f"{name:<8} {n:>6} {n * n * 4 / 2**20:>9.0f}MB {full['mb']:>8.0f} {full['s']:>7.2f} "
                  f"{ch['mb']:>10.0f} {ch['s']:>9.2f} {ch['mb'] / max(1.0, full['mb']):>6.2f}x "
                  f"{ch['s'] / full['s']:>5.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes for CI (under 30 s on 2 cores)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per layout (default 6; 2 with --quick)")
    p.add_argument("--batch", type=int, default=None, help="rows per step, both layouts (default 8; 4 with --quick)")
    p.add_argument("--max-per-seq", type=int, default=32, help="E, images per packed row")
    p.add_argument("--text-len", type=int, default=32, help="T, tokens per caption")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4, help="image tower blocks")
    p.add_argument("--text-depth", type=int, default=2, help="text tower blocks")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=256, help="rows per block of the chunked loss")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared machine)")
    args = p.parse_args()
    if args.quick:
        print("--quick: a smoke run on fewer, smaller inputs for CI; the goals are judged on a full run")
    args.steps = args.steps or (2 if args.quick else 6)
    args.batch = args.batch or (4 if args.quick else 8)
    torch.set_num_threads(args.threads)
    gains = {budget: packed_vs_padded(args, budget) for budget in ((256,) if args.quick else (256, 64))}
    print(f"goal: packed >= 1.5x the padded pairs/s at the 256-patch budget: {gains[256]:.2f}x, "
          f"{'met' if gains[256] >= 1.5 else 'NOT met'}")
    loss_memory(args)


if __name__ == "__main__":
    main()

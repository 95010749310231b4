"""GPU checks and figures for the packed NaViT (written for one H100; one process, every part guarded).

1. **Leakage on the device.** For the ``flex`` and ``varlen`` backends, in fp32 where the
   kernel takes it and in bf16 (autocast): the attention kernel against a per-segment
   fp32 reference and its gradients outside the probed segment (must be exactly 0); and
   the model (plain, TokenLearner V1.1 with the per-batch layout, V1.0 static): each
   example's logits alone vs inside a packed row, and zero gradient on other examples'
   pixels.
2. **Compile counter.** ``torch.compile`` of the training step's model over 50 batches of
   varying content (same ``B, L, E``) after warm-up: new graphs, frames and graph breaks
   from ``torch._dynamo.utils.counters`` (plain; TokenLearner per-batch and static layouts).
3. **Packed NaViT vs padded ViT** at the same real tokens (the same images per step), bf16,
   ViT-S (384 wide, 6 heads) and ViT-B (768, 12), depth 12, rows of ``L`` in {1024, 4096}:
   every backend that can train on the packed rows; the padded baseline is each image alone
   in a 256-token row with a dense SDPA mask. Real tokens/s, MFU of the useful work
   (dense FLOPs scaled to the real tokens + block-diagonal attention, from
   :mod:`patchpack.model.flops`, over the H100 bf16 dense peak of 989 TFLOP/s) and peak memory.
4. **Training fed by the loader** with workers (synthetic demo images, endless loader,
   ``patchpack.train.train``): the share of step time spent waiting for the next batch.

Every figure goes to ``$OUT/gpu.json`` (``OUT`` from the environment, default ``./out``) and a
table is printed. A part that fails records its traceback in the JSON and the run goes on.

    python benchmarks/gpu.py             # the full run (needs CUDA)
    python benchmarks/gpu.py --quick     # smaller sizes; without CUDA: says it is skipped, exits 0
    python benchmarks/gpu.py --cpu-smoke # every part on the CPU at tiny sizes (proves the script runs)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from patchpack.fit import FitConfig, fit_grid
from patchpack.loader.batch import collate
from patchpack.model import H100_BF16_PEAK_FLOPS, NaViT, NaViTConfig, TokenLearnerConfig, mfu, train_flops
from patchpack.model.attention import AttentionRequest, available_backends, explain_backend, segment_attention
from patchpack.model.learned_layout import slots_for
from patchpack.pack import PackConfig, make_packer
from patchpack.tokenize import Tokens, grid_positions


@dataclass(frozen=True)
class Settings:
    device: str = "cuda"
    widths: tuple = (("ViT-S", 384, 6), ("ViT-B", 768, 12))
    depth: int = 12
    lengths: tuple = (1024, 4096)
    tokens_per_step: int = 32768
    steps: int = 5
    compile_batches: int = 50
    compile_backend: str = "inductor"
    compile_variants: tuple = ("plain", "tl-per-batch", "tl-static")
    leak_backends: tuple = ("flex", "varlen")
    leak_dtypes: tuple = ("float32", "bfloat16")
    train_images: int = 1200
    train_steps: int = 300
    train_workers: int = 6
    train_rows: tuple = (16, 512)  # batch rows, tokens per row


FULL = Settings()
QUICK = replace(FULL, widths=FULL.widths[:1], lengths=(1024,), tokens_per_step=16384, compile_batches=20,
                train_images=600, train_steps=100)
SMOKE = Settings(device="cpu", widths=(("tiny", 32, 2),), depth=2, lengths=(64, 128), tokens_per_step=256, steps=2,
                 compile_batches=3, compile_backend="eager", leak_backends=("sdpa", "window", "flex"),
                 leak_dtypes=("float32", "bfloat16"), train_images=24, train_steps=4, train_workers=1,
                 train_rows=(2, 128))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------- data


def example(key: int, grid: tuple[int, int], rng: np.random.Generator, p: int) -> Tokens:
    gh, gw = grid
    return Tokens(str(key), rng.integers(0, 256, (gh * gw, p * p * 3), dtype=np.uint8), grid_positions(1, gh, gw),
                  (1, gh, gw), int(rng.integers(0, 10)))


def image_grids(n: int, budget: int, seed: int) -> list[tuple[int, int]]:
    """Sides log-uniform over 1/8..1 of ``32 sqrt(budget)`` px (64..512 px at 256 patches), aspect
    1:3..3:1, fitted to 16 px patches under ``budget``."""
    rng = np.random.default_rng(seed)
    cfg = FitConfig(patch_size=16, max_patches=budget)
    top = 32 * math.sqrt(budget)
    out = []
    for _ in range(n):
        side, aspect = math.exp(rng.uniform(math.log(top / 8), math.log(top))), math.exp(rng.uniform(-1.1, 1.1))
        out.append(fit_grid(max(16, round(side / math.sqrt(aspect))), max(16, round(side * math.sqrt(aspect))), cfg))
    return out


def packed_rows(grids, seq_len: int, max_per_seq: int) -> list[list[int]]:
    packer = make_packer(PackConfig(seq_len=seq_len, buffer_size=256, max_per_seq=max_per_seq))
    rows = []
    for i, g in enumerate(grids):
        rows += [list(s.handles) for s in packer.push(i, g[0] * g[1])]
    return rows + [list(s.handles) for s in packer.flush()]


def stream(grids, seq_len: int, rows: int, count: int, p: int, seed: int = 0):
    """``count`` packed batches of ``rows`` rows and the images in each (keys index ``grids``)."""
    rng = np.random.default_rng(seed)
    e = max(2, seq_len // 16)
    allrows = packed_rows(grids, seq_len, e)
    out = []
    for i in range(count):
        chunk = allrows[i * rows : (i + 1) * rows]
        if len(chunk) < rows:
            break
        out.append(collate([[example(h, grids[h], rng, p) for h in r] for r in chunk], seq_len, e))
    return out


def padded(batch, grids, budget: int, p: int):
    """The same images, each alone in a ``budget``-token row (a padded ViT's batch)."""
    rng = np.random.default_rng(1)
    keys = [int(k) for row in batch.sample_keys for k in row]
    return collate([[example(k, grids[k], rng, p)] for k in keys], budget, 1)


# ----------------------------------------------------------------------------- helpers


def model_for(s: Settings, dim: int, heads: int, depth: int, attention: str, tl=None, p: int = 16, bound=256):
    torch.manual_seed(0)
    cfg = NaViTConfig(patch_size=p, dim=dim, depth=depth, heads=heads, num_classes=10, attention=attention,
                      max_example_tokens=bound, token_learner=tl, save_memory=False)
    return NaViT(cfg).to(s.device)


def autocast(device: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def available_backends_cpu() -> list[str]:
    return available_backends("cpu")


def cannot(backend: str, device: str, dtype: torch.dtype, grad: bool, head_dim: int) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    try:
        explain_backend(backend, AttentionRequest(torch.device(device), dtype, grad, head_dim, None, 256))
    except ValueError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- 1. leakage


def kernel_leakage(s: Settings, backend: str, dtype: torch.dtype) -> dict:
    """The kernel against a per-segment fp32 reference; gradients outside one segment."""
    why = cannot(backend, s.device, dtype, True, 64) or None
    forward_only = why is not None and cannot(backend, s.device, dtype, False, 64) is None
    if why is not None and not forward_only:
        return {"skipped": why}
    lengths = [[5, 300, 7, 60], [130, 1, 0, 2]]
    seg = torch.zeros(2, 512, dtype=torch.int32)
    for r, row in enumerate(lengths):
        o = 0
        for j, n in enumerate(row):
            seg[r, o : o + n], o = j + 1, o + n
    seg = seg.to(s.device)
    g = torch.Generator(device=s.device).manual_seed(0)
    q, k, v = (torch.randn(2, 4, 512, 64, device=s.device, generator=g, dtype=dtype) for _ in range(3))
    ref = segment_attention(q.float(), k.float(), v.float(), seg, "math")
    for t in (q, k, v):
        t.requires_grad_(not forward_only)
    with torch.no_grad() if forward_only else nullcontext():
        out = segment_attention(q, k, v, seg, backend, max_segment_len=300)
    real = (seg > 0)[:, None, :, None].expand_as(out)
    res = {"max_err_vs_fp32_ref": float((out.detach().float() - ref)[real].abs().max())}
    if forward_only:
        return {**res, "gradients": f"skipped: {why}"}
    probe = (seg == 2) & (torch.arange(2, device=s.device)[:, None] == 0)
    (out * probe[:, None, :, None]).float().sum().backward()
    grads = torch.stack([t.grad.float().abs().sum((1, 3)) for t in (q, k, v)]).amax(0)  # [B, L]
    return {**res, "cross_grad_max": float(grads[~probe].max()), "own_grad_sum": float(grads[probe].sum())}


LEAK_VARIANTS = {
    "plain": None,
    "tl-v1.1-per-batch": TokenLearnerConfig(num_tokens=3, bottleneck=8, at_layer=1),
    "tl-v1.0-static": TokenLearnerConfig(num_tokens=3, at_layer=1, version="1.0", learned_slots=4),
}


def model_leakage(s: Settings, backend: str, dtype: torch.dtype, variant: str) -> dict:
    """Each example alone vs packed (max |logit difference|); gradient on other examples' pixels."""
    why = cannot(backend, s.device, dtype, False, 32)
    if why is not None:
        return {"skipped": why}
    model = model_for(s, 64, 2, 2, backend, LEAK_VARIANTS[variant], p=4, bound=36).eval()
    rng = np.random.default_rng(0)
    exs = [example(i, g, rng, 4) for i, g in enumerate([(3, 5), (6, 1), (4, 4), (1, 1), (5, 7), (2, 3)])]
    batch = collate([exs[:4], exs[4:]], 64, 4).to(s.device)
    with torch.no_grad(), autocast(s.device, dtype):
        packed_logits = model(batch).float()
        diffs = []
        for b, row in enumerate((exs[:4], exs[4:])):
            for j, ex in enumerate(row):  # alone in a row of the same shape (one kernel compile for flex)
                alone = model(collate([[ex], []], 64, 4).to(s.device)).float()
                diffs.append(float((alone[0, 0] - packed_logits[b, j]).abs().max()))
    res = {"max_alone_vs_packed": max(diffs), "logit_scale": float(packed_logits.abs().max())}
    why = cannot(backend, s.device, dtype, True, 32)
    if why is not None:
        return {**res, "gradients": f"skipped: {why}"}
    model.train()
    pixels = batch.patches.float().requires_grad_(True)
    with autocast(s.device, dtype):
        logits = model(pixels, batch.segment_ids, batch.positions, batch.grids)
    logits[0, 1].float().sum().backward()
    grad = pixels.grad.abs().sum(-1)
    mine = (batch.segment_ids == 2) & (torch.arange(2, device=s.device)[:, None] == 0)
    return {**res, "cross_grad_max": float(grad[~mine].max()), "own_grad_sum": float(grad[mine].sum())}


def leakage(s: Settings) -> dict:
    if s.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
        torch.backends.cudnn.allow_tf32 = False
    out = {}
    for backend in s.leak_backends:
        for dname in s.leak_dtypes:
            dtype = DTYPES[dname]
            key = f"{backend}/{dname}"
            out[f"kernel/{key}"] = guarded(kernel_leakage, s, backend, dtype)
            for variant in LEAK_VARIANTS:
                out[f"model-{variant}/{key}"] = guarded(model_leakage, s, backend, dtype, variant)
    for key, r in out.items():  # pass/fail against the dtype's tolerance
        tol = 1e-4 if key.endswith("float32") else 5e-2
        err = r.get("max_alone_vs_packed", r.get("max_err_vs_fp32_ref"))
        if err is not None:
            r["ok"] = bool(err <= tol * max(1.0, r.get("logit_scale", 1.0)) and r.get("cross_grad_max", 0.0) == 0.0)
    return out


# ----------------------------------------------------------------------------- 2. compile counter


def counter_snapshot() -> dict:
    from torch._dynamo.utils import counters

    return {f"{k}/{n}": int(c) for k, v in counters.items() for n, c in v.items()}


def compile_counts(s: Settings) -> dict:
    """New graphs / frames / graph breaks over ``compile_batches`` batches after 3 warm-up batches."""
    dim, heads = s.widths[0][1] // 2, s.widths[0][2] // 2  # counting compiles needs no big model
    l = s.lengths[0]
    rows = max(1, s.tokens_per_step // l // 4)
    budget = 256 if l >= 256 else 16
    grids = image_grids(2 * (s.compile_batches + 3) * rows * l // (budget // 2), budget, seed=2)
    batches = stream(grids, l, rows, s.compile_batches + 3, 16 if budget == 256 else 4)
    out = {"batches": len(batches), "rows": rows, "seq_len": l}
    variants = {"plain": None, "tl-per-batch": TokenLearnerConfig(), "tl-static": TokenLearnerConfig(learned_slots=l // 16)}
    dtype = torch.bfloat16 if s.device.startswith("cuda") else torch.float32
    for name, tl in ((n, variants[n]) for n in s.compile_variants):
        torch.compiler.reset()
        model = model_for(s, dim, heads, 2, "auto", tl, p=16 if budget == 256 else 4).train()
        step_model = torch.compile(model, backend=s.compile_backend)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(b):
            b = b.to(s.device)
            with autocast(s.device, dtype):
                loss = NaViT.loss(step_model(b), b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        start = counter_snapshot()
        for b in batches[:3]:
            step(b)
        before, t0 = counter_snapshot(), time.perf_counter()
        for b in batches[3:]:
            step(b)
        sync(s.device)
        after = counter_snapshot()
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        out[name] = {"new_graphs": diff.get("stats/unique_graphs", 0), "frames": diff.get("frames/total", 0),
                     "graph_breaks": sum(v for k, v in diff.items() if k.startswith("graph_break")),
                     "warmup_graphs": before.get("stats/unique_graphs", 0) - start.get("stats/unique_graphs", 0),
                     "warmup_graph_breaks": sum(before[k] - start.get(k, 0) for k in before if k.startswith("graph_break")),
                     "counters": diff, "seconds": time.perf_counter() - t0,
                     "learned_slots": sorted({slots_for(b.num_examples, b.batch_size) for b in batches[3:]})
                     if tl is not None and tl.learned_slots is None else (tl and tl.learned_slots)}
    return out


# ----------------------------------------------------------------------------- 3. throughput


def time_steps(model, batches, s: Settings, dtype) -> tuple[float, float | None]:
    """Median training-step seconds (AdamW, fwd + bwd + update) and peak memory in GiB (CUDA)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dev = [b.to(s.device, non_blocking=True) for b in batches]

    def step(b):
        with autocast(s.device, dtype):
            loss = NaViT.loss(model(b), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in dev[:2]:
        step(b)
    sync(s.device)
    cuda = s.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(s.steps):
        t0 = time.perf_counter()
        step(dev[i % len(dev)])
        sync(s.device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return float(np.median(times)), peak


def throughput_case(s: Settings, width: tuple, l: int, backend: str, batches, layout: str) -> dict:
    name, dim, heads = width
    p = math.isqrt(batches[0].patches.shape[-1] // 3)
    model = model_for(s, dim, heads, s.depth, backend, p=p).train()
    dtype = torch.bfloat16 if s.device.startswith("cuda") else torch.float32
    dt, peak = time_steps(model, batches, s, dtype)
    del model
    b0 = batches[0]
    real = float(np.mean([b.num_tokens for b in batches]))
    # FLOPs do not depend on the kernel (attention is counted from the segments): count them on an sdpa twin
    flops = train_flops(model_for(s, dim, heads, s.depth, "sdpa", p=p).train(), b0.to(s.device))
    useful = flops["dense"] * b0.num_tokens / (b0.batch_size * b0.seq_len) + flops["attention"]
    return {"model": name, "seq_len": l, "backend": backend, "layout": layout, "rows": b0.batch_size,
            "row_len": b0.seq_len, "real_tokens_per_step": real, "padding": float(np.mean([b.padding_fraction
                                                                                     for b in batches])),
            "step_s": dt, "real_tokens_per_s": real / dt, "mfu": mfu(useful, dt, H100_BF16_PEAK_FLOPS),
            "peak_gib": peak}


def throughput(s: Settings) -> dict:
    out = {}
    dtype = torch.bfloat16 if s.device.startswith("cuda") else torch.float32
    budget = 256 if min(s.lengths) >= 256 else 16
    for width in s.widths:
        backends = [b for b in ("varlen", "flex", "window", "sdpa") if cannot(b, s.device, dtype, True, width[1] // width[2]) is None]
        for l in s.lengths:
            rows = max(1, s.tokens_per_step // l)
            grids = image_grids(4 * rows * l // (budget // 2), budget, seed=l)  # ~4 batches of images
            batches = stream(grids, l, rows, 2, 16 if budget == 256 else 4)
            base = [padded(b, grids, budget, 16 if budget == 256 else 4) for b in batches]
            key = f"{width[0]}/L{l}"
            out[f"{key}/padded-sdpa"] = padded_run = guarded(throughput_case, s, width, l, "sdpa", base, "padded")
            for backend in backends:
                r = out[f"{key}/packed-{backend}"] = guarded(throughput_case, s, width, l, backend, batches, "packed")
                if "real_tokens_per_s" in r and "real_tokens_per_s" in padded_run:
                    r["vs_padded"] = r["real_tokens_per_s"] / padded_run["real_tokens_per_s"]
            if s.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- 4. loader-fed training


class TimedLoader:
    """Iterates a loader, adding the time spent waiting in ``next()`` to :attr:`waits` (one per batch)."""

    def __init__(self, loader) -> None:
        self.loader, self.waits = loader, []

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t0)
            yield batch


def _make_part(args: tuple) -> list[str]:
    from patchpack.synth import make_dataset

    folder, n, seed = args
    return make_dataset(folder, n, 0, classes=6, seed=seed, shard_size=max(1, n // 2))["urls"]


def loader_training(s: Settings, folder: Path) -> dict:
    from patchpack import make_loader
    from patchpack.train import TrainConfig, train

    parts = max(1, min(8, s.train_images // 50))
    t0 = time.perf_counter()
    jobs = [(str(folder / f"part{i}"), s.train_images // parts, i) for i in range(parts)]
    with ProcessPoolExecutor(parts) as pool:
        urls = [u for us in pool.map(_make_part, jobs) for u in us]
    made = time.perf_counter() - t0
    rows, l = s.train_rows
    loader = make_loader(urls, num_workers=s.train_workers, persistent_workers=True, pin_memory=s.device != "cpu",
                         batch_size=rows, seq_len=l, patch_size=16, max_patches=64, max_per_seq=l // 16,
                         epochs=None, seed=0)
    timed = TimedLoader(loader)
    dim, heads = s.widths[0][1:]
    cfg = TrainConfig(model=NaViTConfig(patch_size=16, dim=dim, depth=min(s.depth, 6), heads=heads, num_classes=6,
                                        max_example_tokens=64, token_learner=TokenLearnerConfig()),
                      steps=s.train_steps, warmup_steps=max(1, s.train_steps // 10), device=s.device,
                      bf16=s.device != "cpu", log_every=0)
    result = train(cfg, timed, log=None)
    secs = [h.seconds for h in result.history]
    waits = timed.waits[: len(secs)]
    skip = min(10, len(secs) // 2)  # the first steps include CUDA and worker start-up
    return {"images": s.train_images, "dataset_seconds": made, "steps": len(secs), "workers": s.train_workers,
            "rows": rows, "seq_len": l, "wait_share": sum(waits) / max(1e-9, sum(secs)),
            "wait_share_after_warmup": sum(waits[skip:]) / max(1e-9, sum(secs[skip:])),
            "step_ms_median": 1e3 * float(np.median(secs)),
            "images_per_s": float(np.mean([h.examples_per_s for h in result.history[skip:]] or [0]))}


# ----------------------------------------------------------------------------- driver


def guarded(fn, *args) -> dict:
    """``fn(*args)``, or ``{"error": traceback}`` (printed in one line) when it raises."""
    try:
        return fn(*args)
    except Exception as exc:  # a part that fails must not stop the others
        print(f"  ! {fn.__name__}{tuple(a for a in args if isinstance(a, (str, int)))}: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
        return {"error": traceback.format_exc(limit=8)}


def table(results: dict) -> None:
    for part, rows in results.items():
        if not isinstance(rows, dict):
            continue
        print(f"\n== {part} ==")
        for key, r in rows.items():
            if isinstance(r, dict):
                shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()
                         if k not in ("counters",) and not (k == "error")}
                line = "ERROR (see JSON)" if "error" in r else ", ".join(f"{k}={v}" for k, v in shown.items())
                print(f"  {key:<42} {line}")
            else:
                print(f"  {key:<42} {r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes; without CUDA: print that it is skipped")
    p.add_argument("--cpu-smoke", action="store_true", help="every part on the CPU at tiny sizes")
    p.add_argument("--parts", default="1,2,3,4", help="which parts to run (default all)")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device, skipped (run it on a GPU machine; --cpu-smoke runs it on the CPU)")
        return 0
    s = SMOKE if args.cpu_smoke else (QUICK if args.quick else FULL)
    out_dir = Path(os.environ.get("OUT") or "out")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": asdict(s), "torch": torch.__version__,
                     "device": torch.cuda.get_device_name() if s.device == "cuda" else "cpu"}
    wanted = set(args.parts.split(","))
    parts = {"1": ("leakage", leakage), "2": ("compile", compile_counts), "3": ("throughput", throughput)}
    for num, (name, fn) in parts.items():
        if num in wanted:
            print(f"part {num}: {name} ...", flush=True)
            results[name] = guarded(fn, s)
            (out_dir / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    if "4" in wanted:
        print("part 4: loader-fed training ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="patchpack-gpu-") as tmp:
            results["loader_training"] = {"run": guarded(loader_training, s, Path(tmp))}
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    table({k: v for k, v in results.items() if k not in ("settings",)})
    print(f"\nwrote {out_dir / 'gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

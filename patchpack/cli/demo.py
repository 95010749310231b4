"""``patchpack demo``: make a small dataset, show its packing, train a tiny NaViT + TokenLearner.

1. :func:`patchpack.synth.make_dataset` draws a labelled train and held-out set
   (images 32..256 px with aspect ratios 1:3..3:1, and short videos of drifting gratings) as
   webdataset shards in a temporary folder (or ``--out``).
2. The training stream is packed once without a model and its packing stats are
   printed (padding, examples per sequence, token counts).
3. A tiny NaViT with a TokenLearner half-way trains on the CPU for ``--steps``
   steps; held-out accuracy at two resolutions is printed against chance.
4. The packing report (PNGs + HTML) and the training log are written under the
   output folder, whose path is printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["add_arguments", "run", "run_demo"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--images", type=int, default=1500, help="training images (default 1500)")
    p.add_argument("--videos", type=int, default=900, help="training videos (0: images only; default 900)")
    p.add_argument("--eval-images", type=int, default=400, help="held-out images")
    p.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    p.add_argument("--classes", type=int, default=6, help="image classes (1..6)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run_demo(
    out: str | Path | None = None,
    *,
    images: int = 1500,
    videos: int = 900,
    eval_images: int = 400,
    steps: int = 400,
    classes: int = 6,
    workers: int = 0,
    seed: int = 0,
    log=print,
) -> dict:
    """Run the demo; returns ``{"out", "accuracy" {name: acc}, "chance", "report", "stats", "seconds"}``."""
    from ..model import NaViT, NaViTConfig, PosEmbConfig, TokenLearnerConfig
    from ..synth import make_dataset
    from ..train import TrainConfig, make_loaders, train

    t0 = time.perf_counter()
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="patchpack-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    train_set = make_dataset(out / "data" / "train", images, videos, classes=classes, seed=seed, shard_size=500)
    eval_set = make_dataset(out / "data" / "eval", eval_images, videos // 5, classes=classes, seed=seed + 10_000,
                            shard_size=500)
    num_classes = train_set["num_classes"]
    log(f"dataset: {images} images + {videos} videos for training, {eval_images} + {videos // 5} held out, "
        f"{num_classes} classes, in {out / 'data'} ({time.perf_counter() - t0:.1f}s)")

    patch, budget, frames, tubelet = 16, 64, (4 if videos else 0), 2
    loaders = dict(batch_size=8, seq_len=256, max_per_seq=32, patch_size=patch, max_patches=budget,
                   video_frames=frames, tubelet=tubelet, seed=seed)
    train_loader, evals = make_loaders(
        train_set["urls"], eval_urls=eval_set["urls"], eval_max_patches=[budget // 4, budget], workers=workers,
        **loaders,
    )

    # packing stats of one pass over the training stream (no model)
    probe_loader, _ = make_loaders(train_set["urls"], workers=workers, **loaders)
    for _ in probe_loader:
        pass
    stats = probe_loader.stats
    log("packing (one epoch of the training stream):")
    log("  " + stats.summary().replace("\n", "\n  "))

    model_cfg = NaViTConfig(
        patch_size=patch,
        tubelet=tubelet if videos else 1,
        dim=64,
        depth=4,
        heads=4,
        mlp_ratio=2.0,
        num_classes=num_classes,
        posemb=PosEmbConfig(kind="learned", coords="fractional", fractional_scale=16),
        token_learner=TokenLearnerConfig(num_tokens=4, bottleneck=32, max_frames=max(1, frames // tubelet)),
    )
    cfg = TrainConfig(model=model_cfg, steps=steps, lr=2e-3, warmup_steps=max(1, steps // 20), weight_decay=0.05,
                      device="cpu", log_every=max(1, steps // 10), out_dir=str(out / "train"), resume=False,
                      seed=seed, deterministic=True)
    torch.manual_seed(seed)
    model = NaViT(model_cfg)
    log(f"training a {sum(p.numel() for p in model.parameters()):,}-parameter NaViT + TokenLearner (K={model_cfg.token_learner.num_tokens} after "
        f"{model_cfg.learner_layer} of {model_cfg.depth} blocks) for {steps} steps on the CPU")
    result = train(cfg, train_loader, evals, model=model, log=log)

    chance = 1.0 / num_classes
    accuracy = {name: result.final_eval(name)["accuracy"] for name in evals}
    for name, acc in accuracy.items():
        kinds = result.final_eval(name).get("by_kind", {})
        split = ", ".join(f"{k}s {v['accuracy']:.1%} of {v['examples']}" for k, v in kinds.items())
        log(f"held-out accuracy at {name[:-1]} patches per frame: {acc:.1%} ({split}; chance {chance:.1%}, "
            f"{acc / chance:.1f}x chance)")

    report_dir = out / "report"
    from ..viz.report import write_report

    written = write_report(stats, report_dir, fmt="html")
    (out / "train" / "summary.json").write_text(json.dumps(
        {"accuracy": accuracy, "chance": chance, "steps": result.step, "evals": result.evals}, indent=1))
    seconds = time.perf_counter() - t0
    log(f"report: {report_dir / 'index.html' if written else report_dir}")
    log(f"training log: {out / 'train' / 'train_log.jsonl'}  (done in {seconds:.0f}s)")
    return {"out": str(out), "accuracy": accuracy, "chance": chance, "report": str(report_dir),
            "stats": stats, "seconds": seconds, "result": result}


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run_demo(args.out, images=args.images, videos=args.videos, eval_images=args.eval_images, steps=args.steps,
                 classes=args.classes, workers=args.workers, seed=args.seed)
    best = max(r["accuracy"].values()) if r["accuracy"] else 0.0
    return 0 if best >= 2 * r["chance"] else 1

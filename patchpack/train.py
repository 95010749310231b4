"""Train the reference NaViT (+ TokenLearner) on packed batches.

:func:`train` works on any iterable of :class:`patchpack.batch.PackedBatch`
(e.g. ``patchpack.make_loader(...)``): AdamW, linear warm-up then cosine decay,
bf16 autocast on CUDA, per-step logs (loss, images/s, tokens/s, padding),
evaluation on named loaders (e.g. the same shards at several resolutions),
checkpoint and resume (model, optimizer, scheduler, step and the loader's
``state_dict()`` when it has one). Checkpoints hold only tensors and plain
values and are read with ``torch.load(weights_only=True)``.

``patchpack train`` is the command-line front end over ``make_loader``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .batch import PackedBatch
from .model import NaViT, NaViTConfig, PosEmbConfig, TokenLearnerConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate",
    "lr_factor",
    "save_checkpoint",
    "load_checkpoint",
    "add_arguments",
    "run",
]

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        model: the NaViT to build (ignored when :func:`train` gets ``model=``).
        steps: optimizer steps in total (a resumed run continues up to it).
        lr: peak learning rate after warm-up.
        min_lr: final learning rate of the cosine decay.
        warmup_steps: linear warm-up from 0 to ``lr``.
        weight_decay: AdamW decay of weight matrices (not of biases, norms, tables).
        betas: AdamW betas.
        grad_clip: max global gradient norm; ``None`` to skip clipping.
        label_smoothing: cross-entropy label smoothing.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        bf16: autocast to bfloat16 on CUDA (CPU runs in fp32).
        log_every: print a log line every this many steps (each step is recorded).
        eval_every: evaluate every this many steps; ``None``: only at the end.
        out_dir: folder for ``checkpoint.pt`` and ``train_log.jsonl``; ``None`` for none.
        checkpoint_every: save every this many steps (and at the end) when ``out_dir`` is set.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        seed: torch seed for the initialisation.
        eval_batches: cap on batches per evaluation; ``None`` for the whole loader.
        run_steps: stop this invocation after this many steps (a checkpoint is
            written; a later call with ``resume`` continues to ``steps``); ``None``:
            run to ``steps``. The schedule always follows ``steps``.
    """

    model: NaViTConfig = field(default_factory=NaViTConfig)
    steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    label_smoothing: float = 0.0
    device: str = "auto"
    bf16: bool = True
    log_every: int = 10
    eval_every: int | None = None
    out_dir: str | None = None
    checkpoint_every: int | None = None
    resume: bool = True
    seed: int = 0
    eval_batches: int | None = None
    run_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = NaViTConfig.from_dict(self.model)
        if self.steps < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("need steps >= 1, warmup_steps >= 0 and lr > 0")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (on its training device, in eval mode).
        step: optimizer steps done in total (including resumed ones).
        history: one dict per step of this run: step, loss, lr, images_per_s,
            tokens_per_s, padding, examples, tokens, seconds.
        evals: one dict per evaluation: step, name, accuracy, loss, examples, tokens.
        checkpoint: path of the last checkpoint written, if any.
    """

    model: NaViT
    step: int
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    checkpoint: str | None = None

    def final_eval(self, name: str | None = None) -> dict | None:
        """The last evaluation (of loader ``name`` when given)."""
        rows = [e for e in self.evals if name is None or e["name"] == name]
        return rows[-1] if rows else None


# ----------------------------------------------------------------------------- pieces


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then cosine to ``min_lr / lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "table" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


@torch.no_grad()
def evaluate(
    model: NaViT,
    loader: Iterable[PackedBatch],
    device: torch.device | str = "cpu",
    bf16: bool = True,
    max_batches: int | None = None,
) -> dict:
    """Accuracy and mean loss over the filled slots of ``loader`` (model in eval mode).

    Returns ``{"accuracy", "loss", "examples", "tokens", "batches", "by_kind"}``;
    ``by_kind`` splits accuracy and example counts into ``"image"`` (grid ``T = 1``)
    and ``"video"`` (``T > 1``). Accuracy is ``nan`` without labelled examples.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = total = tokens = batches = 0
    loss_sum = 0.0
    kind_correct = {"image": 0, "video": 0}
    kind_total = {"image": 0, "video": 0}
    for batch in loader:
        if max_batches is not None and batches >= max_batches:
            break
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(batch)
        valid = batch.labels >= 0
        n = int(valid.sum())
        if n:
            loss_sum += float(NaViT.loss(logits, batch.labels)) * n
            hit = logits.argmax(-1) == batch.labels
            correct += int(hit[valid].sum())
            is_video = batch.grids[..., 0] > 1
            for kind, sel in (("image", valid & ~is_video), ("video", valid & is_video)):
                kind_correct[kind] += int(hit[sel].sum())
                kind_total[kind] += int(sel.sum())
        total += n
        tokens += batch.num_tokens
        batches += 1
    model.train(was_training)
    return {
        "accuracy": correct / total if total else float("nan"),
        "loss": loss_sum / total if total else float("nan"),
        "examples": total,
        "tokens": tokens,
        "batches": batches,
        "by_kind": {
            k: {"accuracy": kind_correct[k] / kind_total[k], "examples": kind_total[k]}
            for k in kind_total if kind_total[k]
        },
    }


def _plain(state: Any) -> Any:
    """Loader state as a JSON string when possible (always loadable with weights_only)."""
    try:
        return {"json": json.dumps(state)}
    except (TypeError, ValueError):
        return {"raw": state}


def _unplain(state: Any) -> Any:
    if state is None:
        return None
    return json.loads(state["json"]) if "json" in state else state["raw"]


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    loader_state: Any = None,
    config: TrainConfig | None = None,
) -> str:
    """Write a checkpoint atomically (temp file + rename); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": int(step),
        "loader": _plain(loader_state) if loader_state is not None else None,
        "config": json.dumps(asdict(config)) if config is not None else None,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint without unpickling code: ``{"model", "optimizer", "scheduler", "step", "loader", "config"}``.

    ``config`` is a :class:`TrainConfig` (or ``None``) and ``loader`` the loader state.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    payload["loader"] = _unplain(payload.get("loader"))
    cfg = payload.get("config")
    payload["config"] = TrainConfig(**json.loads(cfg)) if cfg else None
    return payload


def _loader_state(loader: Any) -> Any:
    fn = getattr(loader, "state_dict", None)
    return fn() if callable(fn) else None


# ----------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    train_loader: Iterable[PackedBatch],
    eval_loaders: Mapping[str, Iterable[PackedBatch]] | None = None,
    *,
    model: NaViT | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train for ``config.steps`` optimizer steps over ``train_loader`` (re-iterated per epoch).

    Args:
        config: :class:`TrainConfig`.
        train_loader: any iterable of :class:`PackedBatch` (labels -1 are ignored).
        eval_loaders: ``name -> iterable`` evaluated every ``eval_every`` steps
            and at the end (e.g. ``{"64px": ..., "128px": ...}``).
        model: a model to train instead of building ``config.model``.
        log: where log lines go (``None`` for silence).

    Raises:
        ValueError: the loader yields no batch.
    """
    cfg = config
    say = log or (lambda s: None)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = (model or NaViT(cfg.model)).to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    out = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_path = out / CHECKPOINT if out else None
    step = 0
    result = TrainResult(model=model, step=0)
    if out is not None and cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        if state["loader"] is not None and hasattr(train_loader, "load_state_dict"):
            train_loader.load_state_dict(state["loader"])
        say(f"resumed from {ckpt_path} at step {step}")
    log_file = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_file = open(out / LOG, "a")

    def run_evals() -> None:
        for name, loader in (eval_loaders or {}).items():
            r = evaluate(model, loader, device, cfg.bf16, cfg.eval_batches)
            row = {"step": step, "name": name, **r}
            result.evals.append(row)
            say(f"eval {name} @ step {step}: accuracy {r['accuracy']:.3f} loss {r['loss']:.4f} "
                f"({r['examples']} examples)")
            if log_file:
                log_file.write(json.dumps({"eval": row}) + "\n")
        model.train()

    def checkpoint() -> None:
        if ckpt_path is not None:
            result.checkpoint = save_checkpoint(
                ckpt_path, model, optimizer, scheduler, step, _loader_state(train_loader), cfg
            )

    stop = cfg.steps if cfg.run_steps is None else min(cfg.steps, step + cfg.run_steps)
    model.train()
    it = iter(train_loader)
    fresh = True  # whether `it` has yielded nothing yet
    tick = time.perf_counter()
    try:
        while step < stop:
            try:
                batch = next(it)
                fresh = False
            except StopIteration:
                if fresh:
                    raise ValueError("the training loader yielded no batch") from None
                it, fresh = iter(train_loader), True
                continue
            batch = batch.to(device, non_blocking=True)
            with _autocast(device, cfg.bf16):
                logits = model(batch)
            loss = NaViT.loss(logits, batch.labels, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            now = time.perf_counter()
            dt, tick = max(now - tick, 1e-9), now
            examples, tokens = int((batch.labels >= 0).sum()), batch.num_tokens
            row = {
                "step": step,
                "loss": float(loss.detach()),
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": examples / dt,
                "tokens_per_s": tokens / dt,
                "padding": batch.padding_fraction,
                "examples": examples,
                "tokens": tokens,
                "seconds": dt,
            }
            result.history.append(row)
            if log_file:
                log_file.write(json.dumps(row) + "\n")
            if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps):
                say(f"step {step}/{cfg.steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                    f"img/s {row['images_per_s']:.1f} tok/s {row['tokens_per_s']:.0f} pad {row['padding']:.1%}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                checkpoint()
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                run_evals()
                tick = time.perf_counter()
        checkpoint()
        if step == cfg.steps:
            run_evals()
    finally:
        if log_file:
            log_file.close()
    model.eval()
    result.step = step
    return result


# ----------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="+", help="training shards (webdataset urls or brace patterns)")
    p.add_argument("--eval-urls", nargs="*", default=None, help="held-out shards (default: none)")
    p.add_argument("--eval-max-patches", type=int, nargs="*", default=None,
                   help="evaluate at these patch budgets (default: max-patches/4 and max-patches)")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="packed sequences per batch")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed sequence")
    p.add_argument("--max-examples", type=int, default=None, help="examples per sequence at most")
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--max-patches", type=int, default=64, help="patch budget per image when training")
    p.add_argument("--drop-rate", type=float, default=0.0, help="constant token-drop rate when training")
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--pool", choices=("mean", "attention"), default="mean")
    p.add_argument("--posemb", default="learned", help="learned | fractional | sinusoidal | fourier | none")
    p.add_argument("--token-learner", type=int, default=0, metavar="K", help="learned tokens per example (0: off)")
    p.add_argument("--token-fuser", action="store_true")
    p.add_argument("--attention", default="auto", help="auto | sdpa | math | flex | varlen")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 5%% of steps)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for checkpoints and logs")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--video-frames", type=int, default=0, help="accept videos, sampling this many frames (0: images only)")
    p.add_argument("--tubelet", type=int, default=2, help="frames per token when videos are accepted")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0)


def make_loaders(
    urls: list[str],
    *,
    eval_urls: list[str] | None = None,
    eval_max_patches: list[int] | None = None,
    batch_size: int = 8,
    seq_len: int = 256,
    max_examples: int | None = None,
    patch_size: int = 16,
    max_patches: int = 64,
    drop_rate: float = 0.0,
    video_frames: int = 0,
    tubelet: int = 2,
    workers: int = 0,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """``(train_loader, {name: eval_loader})`` over :func:`patchpack.make_loader`.

    ``video_frames > 0`` accepts videos (that many frames, ``tubelet`` frames per
    token; images become one tubelet). Eval loaders run one epoch in a fixed
    shard order without token dropping, one per patch budget (named ``"<budget>p"``).
    """
    from .decode.video import VideoConfig
    from .drop import DropConfig
    from .loader import make_loader

    def build(u: list[str], budget: int, training: bool):
        return make_loader(
            u,
            num_workers=workers,
            patch_size=patch_size,
            max_patches=budget,
            drop=DropConfig(kind="constant", rate=drop_rate) if training and drop_rate > 0 else DropConfig(),
            seq_len=max(seq_len, budget * (video_frames // tubelet if video_frames else 1)),
            max_per_seq=max_examples,
            video=VideoConfig(frames=video_frames, tubelet=tubelet) if video_frames else None,
            batch_size=batch_size,
            seed=seed,
            training=training,
            shuffle_shards=training,
            epochs=1,
        )

    train_loader = build(list(urls), max_patches, True)
    evals: dict[str, Any] = {}
    if eval_urls:
        budgets = eval_max_patches or sorted({max(1, max_patches // 4), max_patches})
        for b in budgets:
            evals[f"{b}p"] = build(list(eval_urls), b, False)
    return train_loader, evals


def run(args: argparse.Namespace) -> int:
    model_cfg = NaViTConfig(
        patch_size=args.patch_size,
        tubelet=args.tubelet if args.video_frames else 1,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        num_classes=args.num_classes,
        pool=args.pool,
        posemb=PosEmbConfig(kind=args.posemb),
        attention=args.attention,
        token_learner=TokenLearnerConfig(num_tokens=args.token_learner, fuser=args.token_fuser)
        if args.token_learner > 0
        else None,
    )
    cfg = TrainConfig(
        model=model_cfg,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup if args.warmup is not None else max(1, args.steps // 20),
        weight_decay=args.weight_decay,
        device=args.device,
        log_every=args.log_every,
        eval_every=args.eval_every,
        out_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        resume=not args.no_resume,
        seed=args.seed,
    )
    train_loader, evals = make_loaders(
        args.urls,
        eval_urls=args.eval_urls,
        eval_max_patches=args.eval_max_patches,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        max_examples=args.max_examples,
        patch_size=args.patch_size,
        max_patches=args.max_patches,
        drop_rate=args.drop_rate,
        video_frames=args.video_frames,
        tubelet=args.tubelet,
        workers=args.workers,
        seed=args.seed,
    )
    result = train(cfg, train_loader, evals)
    for name in evals:
        r = result.final_eval(name)
        if r is not None:
            print(f"final {name}: accuracy {r['accuracy']:.3f} over {r['examples']} examples")
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return 0

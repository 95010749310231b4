"""The training loop over packed batches (any registered model; the reference NaViT by default).

:func:`train` works on any iterable of :class:`patchpack.loader.batch.PackedBatch`
(e.g. ``patchpack.make_loader(...)``): AdamW, linear warm-up then cosine decay,
bf16 autocast on CUDA, per-step logs (loss, images/s, tokens/s, padding),
evaluation on named loaders (e.g. the same shards at several resolutions),
checkpoint and resume (model, optimizer, scheduler, step and the loader's
``state_dict()`` when it has one). Checkpoints hold only tensors and plain
values and are read with ``torch.load(weights_only=True)``.

``patchpack train`` (:mod:`patchpack.cli.train`) is the command-line front end.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from ..loader.batch import PackedBatch
from .checkpoint import CHECKPOINT, load_checkpoint, loader_state, save_checkpoint
from .config import TrainConfig, TrainResult
from .models import build_model, model_loss

__all__ = ["train", "evaluate", "lr_factor", "check_labels", "LOG"]

LOG = "train_log.jsonl"


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


def check_labels(batch: PackedBatch, num_classes: int) -> None:
    """Refuse a label outside ``0..num_classes-1`` (``-1`` marks empty slots) with its sample key.

    Reads ``batch.labels`` where they are: :func:`train` and :func:`evaluate` pass the batch as
    the loader yielded it (on the host, not the ``.to(device)`` copy), so the check costs no
    device sync. Batches whose labels are already on an accelerator are not checked.

    Raises:
        ValueError: naming the first bad label's sample key, row and slot.
    """
    labels = batch.labels
    if labels.device.type != "cpu" or not labels.numel():
        return
    if int(labels.max()) < num_classes and int(labels.min()) >= -1:
        return
    r, j = (int(v) for v in ((labels >= num_classes) | (labels < -1)).nonzero()[0])
    raise ValueError(
        f"label {int(labels[r, j])} of sample {batch.sample_keys[r][j]!r} (row {r}, slot {j}) is out of range for "
        f"num_classes={num_classes} (labels must lie in 0..{num_classes - 1}, -1 for empty slots): fix the labels "
        "or raise the model's num_classes"
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
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
        host, batch = batch, batch.to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(batch)
        check_labels(host, logits.shape[-1])
        valid = batch.labels >= 0
        n = int(valid.sum())
        if n:
            loss_sum += float(model_loss(model, logits, batch.labels)) * n
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


# ----------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    train_loader: Iterable[PackedBatch],
    eval_loaders: Mapping[str, Iterable[PackedBatch]] | None = None,
    *,
    model: torch.nn.Module | None = None,
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
        ValueError: the loader yields no batch, or a label is ``>= num_classes``
            (:func:`check_labels`, naming the sample key).
    """
    before = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        return _train(config, train_loader, eval_loaders, model, log)
    finally:
        torch.use_deterministic_algorithms(before)


def _train(config: TrainConfig, train_loader: Iterable[PackedBatch], eval_loaders, model, log) -> TrainResult:
    cfg = config
    say = log or (lambda s: None)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = (model or build_model(cfg.model)).to(device)
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
                ckpt_path, model, optimizer, scheduler, step, loader_state(train_loader), cfg
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
            host, batch = batch, batch.to(device, non_blocking=True)
            with _autocast(device, cfg.bf16):
                logits = model(batch)
            check_labels(host, logits.shape[-1])  # logits [B, E, classes]; labels read on the host
            loss = model_loss(model, logits, batch.labels, cfg.label_smoothing)
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



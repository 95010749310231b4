"""The training loop over packed batches (any registered model and task; NaViT classification by default).

:func:`train` works on any iterable of :class:`patchpack.loader.batch.PackedBatch`
(e.g. ``patchpack.make_loader(...)``): AdamW, linear warm-up then cosine decay,
bf16 autocast on CUDA, the task's loss (:mod:`patchpack.train.tasks`), a header before the
first step, a progress bar with the ETA, per-step rows (loss, throughput, padding, time
waiting for data) in ``train_log.jsonl``, evaluation on named loaders, checkpoint and
resume (model, optimizer, scheduler, step and the loader's ``state_dict()`` when it has
one). Checkpoints hold only tensors and plain values and are read with
``torch.load(weights_only=True)``.

``patchpack train`` (:mod:`patchpack.cli.train`) is the command-line front end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch

from ..loader.batch import PackedBatch
from .checkpoint import CHECKPOINT, load_checkpoint, loader_state, save_checkpoint
from .config import EvalRow, StepRow, TrainConfig, TrainResult
from .models import build_model
from .progress import Progress, format_seconds, header
from .report import write_report
from .run import RunLog, RunSpec
from .tasks import EvalFeed, Task, make_task

__all__ = ["train", "evaluate", "lr_factor"]


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


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "table" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[PackedBatch], task: Task | str = "classify", *,
             config: TrainConfig | None = None, name: str = "eval", step: int = 0) -> EvalRow:
    """``task``'s figures of ``model`` over ``loader`` (model in eval mode meanwhile), as an :class:`EvalRow`.

    ``config`` gives the device, bf16 and ``eval_batches`` (default: a :class:`TrainConfig`'s);
    the row also counts the examples and tokens and the time spent (waiting for data apart).
    """
    cfg = config or TrainConfig()
    task = make_task(task) if isinstance(task, str) else task
    device = next(model.parameters()).device
    feed = EvalFeed(loader, device, cfg.eval_batches)
    was_training = model.training
    model.eval()
    tick = time.perf_counter()
    try:
        metrics = task.evaluate(model, feed, cfg)
    finally:
        model.train(was_training)
    return EvalRow(step, name, feed.examples, feed.tokens, time.perf_counter() - tick, feed.wait_seconds, metrics)


@dataclass
class _Run:
    """What one invocation of :func:`train` carries between its steps."""

    cfg: TrainConfig
    model: torch.nn.Module
    task: Task
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    spec: RunSpec | None
    out: Path | None
    result: TrainResult
    step: int = 0
    waited: float = 0.0
    stepped: float = 0.0

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out / CHECKPOINT if self.out is not None else None


def _start(cfg: TrainConfig, model: torch.nn.Module | None, task: Task | None, spec: RunSpec | None) -> _Run:
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = (model or build_model(cfg.model)).to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    out = Path(cfg.out_dir) if cfg.out_dir else None
    return _Run(cfg, model, task or make_task(cfg.task), device, optimizer, scheduler, spec, out,
                TrainResult(model=model, step=0))


def _resume(run: _Run, train_loader: Any, say: Callable[[str], None]) -> int | None:
    """Load the run folder's checkpoint when asked and present; the step it was at (``None``: fresh)."""
    path = run.checkpoint_path
    if path is None or not run.cfg.resume or not path.exists():
        return None
    state = load_checkpoint(path, map_location=run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step = state["step"]
    if state["loader"] is not None and hasattr(train_loader, "load_state_dict"):
        train_loader.load_state_dict(state["loader"])
    say(f"resumed from {path} at step {run.step}")
    return run.step


def _checkpoint(run: _Run, train_loader: Any) -> None:
    if run.checkpoint_path is not None:
        run.result.checkpoint = save_checkpoint(run.checkpoint_path, run.model, run.optimizer, run.scheduler,
                                                run.step, loader_state(train_loader), run.cfg, run.spec)


def _batches(loader: Iterable[PackedBatch]) -> Iterator[tuple[PackedBatch, float]]:
    """``(batch, seconds waited for it)`` forever, passing over ``loader`` again at each end.

    The wait is the loader's own (``batch.info.wait_seconds``) where it says, else ``next()``'s time.
    One empty pass is allowed (a loader resumed at the very end of its pass has nothing left of it).

    Raises:
        ValueError: two passes in a row yield no batch.
    """
    empty = 0
    while empty < 2:
        it = iter(loader)
        empty += 1
        while True:
            tick = time.perf_counter()
            batch = next(it, None)
            took = time.perf_counter() - tick
            if batch is None:
                break
            empty = 0
            wait = getattr(getattr(batch, "info", None), "wait_seconds", None)
            yield batch, took if wait is None else float(wait)
    raise ValueError("the training loader yielded no batch")


def _step(run: _Run, host: PackedBatch) -> float:
    """One optimizer step on ``host`` (moved to the device); the loss."""
    batch = host.to(run.device, non_blocking=True)
    loss = run.task.loss(run.model, batch, host, run.cfg)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    return float(loss.detach())


def _row(run: _Run, host: PackedBatch, loss: float, seconds: float, wait: float) -> StepRow:
    seconds = max(seconds, 1e-9)
    examples, tokens = host.num_examples, host.num_tokens
    run.waited += wait
    run.stepped += seconds
    return StepRow(run.step, loss, run.optimizer.param_groups[0]["lr"], examples, tokens, host.padding_fraction,
                   seconds, wait, examples / seconds, tokens / seconds)


def _log_line(row: StepRow, total: int, eta: float) -> str:
    return (f"step {row.step}/{total} loss {row.loss:.4f} lr {row.lr:.2e} img/s {row.examples_per_s:.1f} "
            f"tok/s {row.tokens_per_s:.0f} pad {row.padding:.1%} data {row.wait_seconds / row.seconds:.0%} "
            f"eta {format_seconds(eta) if math.isfinite(eta) else '?'}")


def _evaluate_all(run: _Run, eval_loaders: Mapping[str, Iterable[PackedBatch]], log: RunLog, p: Progress) -> None:
    for name, loader in eval_loaders.items():
        row = evaluate(run.model, loader, run.task, config=run.cfg, name=name, step=run.step)
        run.result.evals.append(row)
        log.write(row)
        p.say(f"eval {name} @ step {run.step}: {run.task.describe(row.metrics)} ({row.examples} examples)")
    run.model.train()


def _loop(run: _Run, train_loader: Any, eval_loaders: Mapping[str, Any], log: RunLog, p: Progress) -> None:
    cfg = run.cfg
    stop = cfg.steps if cfg.run_steps is None else min(cfg.steps, run.step + cfg.run_steps)
    run.model.train()
    tick = time.perf_counter()
    batches = _batches(train_loader)
    while run.step < stop:
        host, wait = next(batches)
        loss = _step(run, host)
        now = time.perf_counter()
        row = _row(run, host, loss, now - tick, wait)
        run.result.history.append(row)
        log.write(row)
        p.advance(run.step, loss=f"{loss:.3f}", data=f"{run.waited / max(run.stepped, 1e-9):.0%}")
        if cfg.log_every and (run.step % cfg.log_every == 0 or run.step == cfg.steps):
            p.say(_log_line(row, cfg.steps, p.eta(run.step)))
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
            _checkpoint(run, train_loader)
        if cfg.eval_every and run.step % cfg.eval_every == 0 and run.step < cfg.steps:
            _evaluate_all(run, eval_loaders, log, p)
        tick = time.perf_counter()
    _checkpoint(run, train_loader)
    if run.step == cfg.steps:
        _evaluate_all(run, eval_loaders, log, p)


def train(
    config: TrainConfig,
    train_loader: Iterable[PackedBatch],
    eval_loaders: Mapping[str, Iterable[PackedBatch]] | None = None,
    *,
    model: torch.nn.Module | None = None,
    task: Task | None = None,
    run: RunSpec | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train for ``config.steps`` optimizer steps over ``train_loader`` (re-iterated per pass).

    Args:
        config: :class:`TrainConfig`.
        train_loader: any iterable of :class:`PackedBatch` (labels -1 are ignored).
        eval_loaders: ``name -> iterable`` evaluated every ``eval_every`` steps and at the end.
        model: a model to train instead of building ``config.model``.
        task: the :class:`~patchpack.train.tasks.Task` (default: ``make_task(config.task)``;
            pass one to give it options, e.g. zero-shot prompts).
        run: the :class:`RunSpec` written to ``config.out_dir`` (``run.json``, ``loader.toml``)
            and into each checkpoint, so ``patchpack eval`` can rebuild the model and loader.
        log: where the header and log lines go (``None`` for silence).

    Raises:
        ValueError: the loader yields no batch, or a batch does not fit the task (a label
            ``>= num_classes``, naming the sample key; no targets or captions).
    """
    before = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        return _train(config, train_loader, eval_loaders or {}, model, task, run, log)
    finally:
        torch.use_deterministic_algorithms(before)


def _train(cfg: TrainConfig, train_loader: Any, eval_loaders: Mapping[str, Any], model: Any, task: Any,
           spec: RunSpec | None, log: Callable[[str], None] | None) -> TrainResult:
    run = _start(cfg, model, task, spec)
    with Progress(cfg.steps, 0, log, bar=cfg.progress) as p:
        resumed = _resume(run, train_loader, p.say)
        p.start = run.step
        if run.out is not None and spec is not None:
            spec.write(run.out)
        lines = header(run.model, cfg, train_loader, str(run.out) if run.out else None)
        for line in lines:
            p.say(line)
        with RunLog(run.out, resumed) as runlog:
            _loop(run, train_loader, eval_loaders, runlog, p)
        run.result.wait_share = run.waited / run.stepped if run.stepped else 0.0
        p.say(f"trained to step {run.step} in {format_seconds(run.stepped)}; waiting for data: "
              f"{run.result.wait_share:.1%} of the step time")
    run.model.eval()
    run.result.step = run.step
    if run.out is not None:
        write_report(run.out, run.result, run.task, lines)
    return run.result

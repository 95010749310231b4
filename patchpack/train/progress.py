"""What a training run tells while it runs: the header, a progress bar with the ETA, log lines.

The bar is tqdm's, on stderr (``TrainConfig.progress``); the log lines (every ``log_every``
steps) carry the ETA too, so a log file without the bar still says when the run ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

__all__ = ["Progress", "format_seconds", "header"]


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The bar (when ``bar``) and the log lines of one run of ``total`` steps, starting at ``start``."""

    def __init__(self, total: int, start: int, log: Callable[[str], None] | None, bar: bool = False) -> None:
        self.total, self.start, self.log = total, start, log
        self.began = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)

    def eta(self, step: int) -> float:
        """Seconds left at ``step``, from the mean step time of this run so far."""
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.began) / done * (self.total - step)

    def say(self, line: str) -> None:
        """Print ``line`` above the bar."""
        if self.log is None:
            return
        if self.bar is None:
            self.log(line)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):
            self.log(line)

    def advance(self, step: int, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _batches_per_epoch(loader: Any) -> int | None:
    try:
        return len(loader) // max(1, loader.config.epochs or 1)
    except (TypeError, AttributeError):
        return None


def header(model: Any, config: Any, loader: Any, out: str | None) -> list[str]:
    """The lines printed before the first step: model size, batch shape L, budget, steps, task, folder."""
    params = sum(p.numel() for p in model.parameters())
    lines = [f"task {config.task}: {config.model_name} with {params:,} parameters"]
    cfg = getattr(loader, "config", None)
    if cfg is not None:
        budget = f"{cfg.fit.max_patches} patches of {cfg.patch_size} px" if cfg.fit.max_patches else "no patch budget"
        video = "" if cfg.video is None else f"; video {cfg.video.frames} frames, tubelet {cfg.video.tubelet}"
        lines.append(f"batches: {cfg.batch_size} rows x L={cfg.pack.seq_len} tokens, budget {budget} per frame{video}")
    per_epoch = _batches_per_epoch(loader)
    epochs = f" ({config.steps / per_epoch:.1f} epochs of {per_epoch} batches)" if per_epoch else ""
    lines.append(f"steps: {config.steps}{epochs}, lr {config.lr:g}, warm-up {config.warmup_steps}")
    lines.append(f"writes: {out}" if out else "writes: nothing (no out_dir)")
    return lines

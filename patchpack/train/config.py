"""Training configuration and result: :class:`TrainConfig`, :class:`TrainResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import NaViTConfig
from .models import model_config

__all__ = ["TrainConfig", "TrainResult"]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        model: the configuration of the model to build (ignored when :func:`train` gets
            ``model=``); its class picks the registered model (:mod:`patchpack.train.models`).
        model_name: registered model name used to read ``model`` back from a dict
            (checkpoints); default ``"navit"``.
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
        deterministic: train under ``torch.use_deterministic_algorithms(True)`` (restored
            afterwards), so the same seed, data and thread count give the same weights run
            after run (measured on CPU: without it, two 2-thread demo runs drifted apart after
            ~150 steps). On CUDA torch then needs ``CUBLAS_WORKSPACE_CONFIG`` set.
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
    model_name: str = "navit"
    deterministic: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = model_config(self.model_name, self.model)
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

    model: Any
    step: int
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    checkpoint: str | None = None

    def final_eval(self, name: str | None = None) -> dict | None:
        """The last evaluation (of loader ``name`` when given)."""
        rows = [e for e in self.evals if name is None or e["name"] == name]
        return rows[-1] if rows else None


"""Training configuration, the rows of the training log and the result: :class:`TrainConfig`,
:class:`StepRow`, :class:`EvalRow`, :class:`TrainResult`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..model import NaViTConfig
from .models import model_config, model_name

__all__ = ["TrainConfig", "TrainResult", "StepRow", "EvalRow"]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        model: the configuration of the model to build (ignored when :func:`train` gets
            ``model=``); its class picks the registered model (:mod:`patchpack.train.models`).
        task: the training objective, a name in :data:`patchpack.train.tasks.TASKS`:
            ``"classify"`` (cross-entropy on ``labels``), ``"multilabel"`` (sigmoid
            binary cross-entropy on the loader's multi-hot ``targets``) or ``"contrastive"``
            (a two-tower model on the loader's tokenized captions).
        contrastive_loss: ``"sigmoid"`` (SigLIP) or ``"softmax"`` (CLIP), a name in
            :data:`patchpack.model.losses.LOSSES` (``task="contrastive"`` only).
        loss_chunk: compute the contrastive loss in blocks of this many rows (same value and
            gradients, memory ``N * chunk`` instead of ``N^2``); ``None``: the full loss.
        steps: optimizer steps in total (a resumed run continues up to it).
        lr: peak learning rate after warm-up.
        min_lr: final learning rate of the cosine decay.
        warmup_steps: linear warm-up from 0 to ``lr``.
        weight_decay: AdamW decay of weight matrices (not of biases, norms, tables).
        betas: AdamW betas.
        grad_clip: max global gradient norm; ``None`` to skip clipping.
        label_smoothing: cross-entropy label smoothing (``task="classify"``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        bf16: autocast to bfloat16 on CUDA (CPU runs in fp32).
        log_every: print a log line every this many steps (0: none; each step is recorded).
        progress: show a progress bar with the ETA (tqdm, on stderr).
        eval_every: evaluate every this many steps; ``None``: only at the end.
        out_dir: the run folder (:mod:`patchpack.train.run`): ``checkpoint.pt``,
            ``train_log.jsonl``; ``None`` for none.
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
        model_name: the registered name of ``model``'s class (set from ``model``; used to
            read ``model`` back from a dict, as in checkpoints).
    """

    model: Any = field(default_factory=NaViTConfig)
    task: str = "classify"
    contrastive_loss: str = "sigmoid"
    loss_chunk: int | None = None
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
    progress: bool = False
    eval_every: int | None = None
    out_dir: str | None = None
    checkpoint_every: int | None = None
    resume: bool = True
    seed: int = 0
    eval_batches: int | None = None
    run_steps: int | None = None
    deterministic: bool = False
    model_name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = model_config(self.model_name or "navit", self.model)
        self.model_name = model_name(self.model)
        self.betas = tuple(self.betas)
        if self.steps < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("need steps >= 1, warmup_steps >= 0 and lr > 0")
        if self.loss_chunk is not None and self.loss_chunk < 1:
            raise ValueError(f"loss_chunk must be >= 1 (or None), got {self.loss_chunk}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``TrainConfig(**d)`` reads it back)."""
        return asdict(self)


def _plain(value: float | None) -> float | None:
    """A JSON-safe number: ``None`` for NaN and infinities (strict JSON has neither)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class StepRow:
    """One optimizer step, as ``train_log.jsonl`` records it (``"kind": "step"``).

    Attributes:
        step: steps done after this one (1-based).
        loss: the step's training loss.
        lr: learning rate of the step.
        examples: real examples in the batch; ``tokens``: real tokens.
        padding: share of the batch's token slots that are padding.
        seconds: wall time of the step, waiting for data included.
        wait_seconds: of which waiting for the batch (the loader's ``batch.info.wait_seconds``,
            else the time ``next()`` took).
        examples_per_s, tokens_per_s: throughput over ``seconds``.
    """

    step: int
    loss: float
    lr: float
    examples: int
    tokens: int
    padding: float
    seconds: float
    wait_seconds: float
    examples_per_s: float
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "step", **{k: _plain(v) if isinstance(v, float) else v for k, v in asdict(self).items()}}


@dataclass
class EvalRow:
    """One evaluation of one loader (``"kind": "eval"`` in ``train_log.jsonl``).

    Attributes:
        step: the step it was taken at.
        name: the evaluation loader's name.
        examples, tokens: real examples and tokens evaluated.
        seconds: wall time of the evaluation; ``wait_seconds`` of which waiting for data.
        metrics: the task's figures (the same names in every row of a task,
            :attr:`patchpack.train.tasks.Task.metric_names`); ``None`` where a figure has no value.
    """

    step: int
    name: str
    examples: int
    tokens: int
    seconds: float
    wait_seconds: float
    metrics: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        head = {"kind": "eval", "step": self.step, "name": self.name, "examples": self.examples,
                "tokens": self.tokens, "seconds": _plain(self.seconds), "wait_seconds": _plain(self.wait_seconds)}
        return {**head, **{k: _plain(v) for k, v in self.metrics.items()}}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (on its training device, in eval mode).
        step: optimizer steps done in total (including resumed ones).
        history: one :class:`StepRow` per step of this run.
        evals: one :class:`EvalRow` per evaluation.
        checkpoint: path of the last checkpoint written, if any.
        wait_share: share of this run's step time spent waiting for data.
    """

    model: Any
    step: int
    history: list[StepRow] = field(default_factory=list)
    evals: list[EvalRow] = field(default_factory=list)
    checkpoint: str | None = None
    wait_share: float = 0.0

    def final_eval(self, name: str | None = None) -> EvalRow | None:
        """The last evaluation (of loader ``name`` when given)."""
        rows = [e for e in self.evals if name is None or e.name == name]
        return rows[-1] if rows else None

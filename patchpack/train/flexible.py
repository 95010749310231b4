"""Flexible inference: a trained run evaluated at several patch budgets, without retraining.

NaViT (arXiv 2307.06304, §3.1 and Figure 1, "flexible inference") evaluates one model at many
resolutions and plots its accuracy against the inference cost. :func:`evaluate_budgets`
does that for a run folder (or a checkpoint): for each patch budget per frame, the held-out
shards are fitted under that budget — every example enlarged or shrunk to fill it
(``FitConfig.allow_upsample``; ``upsample=False`` keeps small examples at their size) — and
packed into rows long enough for the largest example (:func:`~patchpack.train.loaders.eval_config`);
the run's task gives its figures (accuracy; recall@k and zero-shot accuracy for contrastive
runs). Each :class:`CurvePoint` also has the tokens per example and the model's time per
example (the evaluation's time less the time spent waiting for data).

:func:`write_curve` writes ``eval_curve.json`` and ``eval_curve.png`` (the headline figure
against tokens per example, matplotlib) into the run folder and adds the table and the
picture to its ``report.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import check_stored_shards
from ..loader import make_loader
from .checkpoint import load_checkpoint
from .loaders import eval_config
from .loop import evaluate
from .models import build_model
from .run import CHECKPOINT, RunSpec, atomic_write
from .tasks import build_task

__all__ = ["CurvePoint", "Curve", "load_run", "evaluate_budgets", "write_curve", "default_budgets", "CURVE_JSON",
           "CURVE_PNG"]

CURVE_JSON, CURVE_PNG = "eval_curve.json", "eval_curve.png"


@dataclass
class CurvePoint:
    """The figures at one patch budget.

    Attributes:
        max_patches: the patch budget per frame.
        seq_len: ``L`` of the evaluation rows.
        examples: examples evaluated.
        tokens_per_example: mean real tokens per example.
        seconds_per_example: the model's time per example (data loading not counted).
        metrics: the task's figures (:attr:`~patchpack.train.tasks.Task.metric_names`).
    """

    max_patches: int
    seq_len: int
    examples: int
    tokens_per_example: float
    seconds_per_example: float
    metrics: dict[str, float | None]


@dataclass
class Curve:
    """A run's figures against the patch budget."""

    run: str
    task: str
    headline: str
    shards: list[str]
    upsample: bool
    points: list[CurvePoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The points as a Markdown table (budget, L, tokens and ms per example, the task's main figures)."""
        names = [self.headline] + [n for n in _SHOWN.get(self.task, ()) if n != self.headline]
        head = ["max patches", "L", "examples", "tokens / example", "ms / example", *names]
        rows = [[str(p.max_patches), str(p.seq_len), str(p.examples), f"{p.tokens_per_example:.1f}",
                 f"{1e3 * p.seconds_per_example:.2f}", *(_cell(p.metrics.get(n)) for n in names)]
                for p in self.points]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


#: figures shown in the table besides the headline, per task
_SHOWN = {"classify": ("accuracy_images", "accuracy_videos"), "multilabel": ("f1",),
          "contrastive": ("text_to_image_r1", "chance_r1", "zero_shot_accuracy", "zero_shot_chance")}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def load_run(path: str | Path, device: str = "cpu") -> tuple[RunSpec, torch.nn.Module, Path]:
    """``(run, model in eval mode, run folder)`` of a run folder or of a checkpoint file.

    Raises:
        ValueError: no checkpoint there, or one written without its run (one line).
    """
    path = Path(path)
    ckpt = path / CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise ValueError(f"{path}: no {CHECKPOINT} (give a run folder written by patchpack train, or a checkpoint)")
    state = load_checkpoint(ckpt, map_location=device)
    spec = state["run"]
    if spec is None:
        raise ValueError(f"{ckpt}: this checkpoint was written without its run (loader config, task); "
                         "evaluate it with patchpack.train.flexible and your own loader")
    model = build_model(spec.train.model).to(device)
    model.load_state_dict(state["model"])
    return spec, model.eval(), ckpt.parent


def _budget_point(spec: RunSpec, model: torch.nn.Module, task: Any, shards: Sequence[str], budget: int,
                  options: dict[str, Any]) -> CurvePoint:
    cfg = eval_config(spec.loader, budget, upsample=options["upsample"])
    check_stored_shards(shards, cfg)
    loader = make_loader(list(shards), cfg, num_workers=options["num_workers"])
    tcfg = replace(spec.train, device=str(next(model.parameters()).device), eval_batches=options["max_batches"])
    row = evaluate(model, loader, task, config=tcfg, name=f"{budget}p")
    n = max(row.examples, 1)
    return CurvePoint(budget, cfg.pack.seq_len, row.examples, row.tokens / n,
                      max(row.seconds - row.wait_seconds, 0.0) / n, row.metrics)


def evaluate_budgets(path: str | Path, shards: Sequence[str], budgets: Sequence[int], *, upsample: bool = True,
                     device: str = "auto", num_workers: int = 0, max_batches: int | None = None,
                     log: Callable[[str], None] | None = print) -> Curve:
    """The run at ``path`` (folder or checkpoint) evaluated on ``shards`` at each patch budget of ``budgets``.

    Raises:
        ValueError: not a run (:func:`load_run`); patchpack shards made at a budget above one
            asked for (:func:`~patchpack.config.check_stored_shards`).
    """
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    spec, model, folder = load_run(path, dev)
    task = build_task(spec.train.task, spec.loader, spec.class_words)
    curve = Curve(str(folder), task.name, task.headline, [str(s) for s in shards], upsample)
    options = {"upsample": upsample, "num_workers": num_workers, "max_batches": 1}
    _budget_point(spec, model, task, shards, min(budgets), options)  # warm-up: first-call costs stay out of the times
    options["max_batches"] = max_batches
    for budget in sorted(set(budgets)):
        point = _budget_point(spec, model, task, shards, budget, options)
        curve.points.append(point)
        if log is not None:
            log(f"{budget} patches: {task.describe(point.metrics)} ({point.examples} examples, "
                f"{point.tokens_per_example:.1f} tokens and {1e3 * point.seconds_per_example:.2f} ms each)")
    return curve


def _plot(curve: Curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in curve.points if p.metrics.get(curve.headline) is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot([p.tokens_per_example for p in pts], [p.metrics[curve.headline] for p in pts], "o-", color="C0")
    for p in pts:
        ax.annotate(f"{p.max_patches}", (p.tokens_per_example, p.metrics[curve.headline]), fontsize=8,
                    textcoords="offset points", xytext=(4, -10))
    if curve.task == "contrastive" and pts and pts[0].metrics.get("chance_r1") is not None:
        ax.axhline(pts[0].metrics["chance_r1"], color="grey", ls="--", lw=1, label="chance")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens per example (patch budget labelled)")
    ax.set_ylabel(curve.headline.replace("_", " "))
    ax.set_title(f"flexible inference: {'/'.join(Path(curve.run).parts[-2:])}", fontsize=9)
    ax.margins(x=0.1, y=0.12)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _report_section(curve: Curve) -> str:
    return ("## Flexible inference (patchpack eval)\n\n"
            f"Shards: {', '.join(curve.shards[:3])}{' ...' if len(curve.shards) > 3 else ''}; examples "
            f"{'enlarged or shrunk to fill' if curve.upsample else 'shrunk to fit'} each patch budget.\n\n"
            f"{curve.table()}\n\n![{curve.headline} against tokens per example]({CURVE_PNG})\n")


def write_curve(curve: Curve, folder: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``eval_curve.json`` and ``eval_curve.png`` into ``folder`` (default: the run folder) and put the
    table and the picture in its ``report.md`` (replacing an earlier curve's section)."""
    from .report import replace_section

    folder = Path(folder or curve.run)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / CURVE_JSON, folder / CURVE_PNG
    atomic_write(json_path, json.dumps(curve.to_dict(), indent=1))
    _plot(curve, png_path)
    replace_section(folder, "## Flexible inference", _report_section(curve))
    return json_path, png_path


def default_budgets(spec: RunSpec) -> list[int]:
    """A quarter, a half, one and two times the run's training budget (its budget alone when it has none)."""
    base = spec.loader.fit.max_patches
    if not base:
        return []
    return sorted({max(1, base // 4), max(1, base // 2), base, 2 * base})


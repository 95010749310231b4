"""Training objectives: the loss of a batch, the checks on it and the evaluation, per task.

:data:`TASKS` (a :class:`patchpack.registry.Registry`) maps a name to a :class:`Task` class;
:func:`make_task` builds one. Built in:

* ``"classify"`` (:class:`Classify`): cross-entropy on ``labels`` (``-1`` marks empty
  slots); evaluation: accuracy (also split into images and videos) and loss.
* ``"multilabel"`` (:class:`MultiLabel`): sigmoid binary cross-entropy on the loader's
  multi-hot ``targets [B, E, C]`` (``LoaderConfig.num_classes``), the JFT setting of NaViT
  (arXiv 2307.06304, §3); evaluation: mAP, micro F1 and loss.
* ``"contrastive"`` (:class:`Contrastive`): a two-tower model
  (:class:`~patchpack.model.contrastive.TwoTower`) on the loader's tokenized captions, with
  the sigmoid (SigLIP) or softmax (CLIP) loss, chunked when asked; evaluation:
  image->text and text->image recall@1/@5 with their chance levels and, given class
  prompts, zero-shot accuracy (:func:`~patchpack.model.retrieval.evaluate_contrastive`).

Every evaluation of one task gives the same figure names (:attr:`Task.metric_names`), so the
rows of ``train_log.jsonl`` of one kind all have the same keys.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F

from ..loader.batch import PackedBatch
from ..model.segments import real_slots
from ..registry import Registry
from .metrics import mean_average_precision, micro_f1
from .models import model_loss

__all__ = ["Task", "Classify", "MultiLabel", "Contrastive", "TASKS", "make_task", "build_task", "check_labels", "autocast",
           "EvalFeed"]


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; nothing elsewhere (CPU runs in fp32)."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def check_labels(batch: PackedBatch, num_classes: int) -> None:
    """Refuse a label outside ``0..num_classes-1`` (``-1`` marks empty slots) with its sample key.

    Reads ``batch.labels`` where they are: the loop passes the batch as the loader yielded it
    (on the host, not the ``.to(device)`` copy), so the check costs no device sync. Batches
    whose labels are already on an accelerator are not checked.

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


class EvalFeed:
    """An evaluation loader's batches as ``(host, device)`` pairs, counted on the host.

    Attributes:
        examples, tokens: real examples and tokens fed.
        wait_seconds: time spent waiting for the loader.
    """

    def __init__(self, loader: Iterable[PackedBatch], device: torch.device, max_batches: int | None = None) -> None:
        self.loader, self.device, self.max_batches = loader, device, max_batches
        self.examples = self.tokens = self.batches = 0
        self.wait_seconds = 0.0

    def __iter__(self) -> Iterator[tuple[PackedBatch, PackedBatch]]:
        import time

        it = iter(self.loader)
        while self.max_batches is None or self.batches < self.max_batches:
            tick = time.perf_counter()
            host = next(it, None)
            self.wait_seconds += time.perf_counter() - tick
            if host is None:
                return
            self.batches += 1
            self.examples += host.num_examples
            self.tokens += host.num_tokens
            yield host, host.to(self.device, non_blocking=True)


class Task:
    """A training objective (subclass it and register it in :data:`TASKS`).

    Attributes:
        name: the registered name.
        metric_names: the figures :meth:`evaluate` returns, always all of them.
        headline: the figure summaries lead with.
    """

    name: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()
    headline: ClassVar[str] = ""

    def loss(self, model: torch.nn.Module, batch: PackedBatch, host: PackedBatch, cfg: Any) -> torch.Tensor:
        """The training loss of ``batch`` (on the device); ``host`` is the loader's copy, for checks."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, feed: EvalFeed, cfg: Any) -> dict[str, float | None]:
        """Every figure of :attr:`metric_names` over the batches of ``feed`` (model in eval mode)."""
        raise NotImplementedError

    def describe(self, metrics: dict[str, float | None]) -> str:
        """One line of the main figures."""
        return ", ".join(f"{k} {_fmt(metrics.get(k))}" for k in self.metric_names[:3])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


#: name -> :class:`Task` subclass.
TASKS: Registry[type] = Registry("task", hint="patchpack.train.tasks.TASKS.register")


def make_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, built with ``options`` (e.g. ``prompts=`` for ``"contrastive"``).

    Raises:
        RegistryError: no task has that name (the message names the close ones).
    """
    return TASKS.get(name)(**options)


@TASKS.register("classify")
class Classify(Task):
    """Cross-entropy on ``labels`` (the model's ``loss`` when it has one); accuracy at evaluation."""

    name = "classify"
    metric_names = ("accuracy", "loss", "accuracy_images", "accuracy_videos", "images", "videos")
    headline = "accuracy"

    def loss(self, model, batch, host, cfg):
        with autocast(batch.patches.device, cfg.bf16):
            logits = model(batch)
        check_labels(host, logits.shape[-1])  # logits [B, E, classes]; labels read on the host
        return model_loss(model, logits, batch.labels, cfg.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model, feed, cfg):
        hits = {"all": 0, "images": 0, "videos": 0}
        counts = dict(hits)
        loss_sum = 0.0
        for host, batch in feed:
            with autocast(batch.patches.device, cfg.bf16):
                logits = model(batch)
            check_labels(host, logits.shape[-1])
            valid = batch.labels >= 0
            hit = logits.argmax(-1) == batch.labels
            video = batch.grids[..., 0] > 1
            loss_sum += float(model_loss(model, logits, batch.labels)) * int(valid.sum())
            for kind, sel in (("all", valid), ("images", valid & ~video), ("videos", valid & video)):
                hits[kind] += int(hit[sel].sum())
                counts[kind] += int(sel.sum())
        share = {k: hits[k] / counts[k] if counts[k] else None for k in hits}
        return {"accuracy": share["all"], "loss": loss_sum / counts["all"] if counts["all"] else None,
                "accuracy_images": share["images"], "accuracy_videos": share["videos"],
                "images": counts["images"], "videos": counts["videos"]}

    def describe(self, metrics):
        parts = [f"accuracy {_fmt(metrics['accuracy'])}"]
        for kind in ("images", "videos"):
            if metrics[kind]:
                parts.append(f"{kind} {_fmt(metrics[f'accuracy_{kind}'])} of {metrics[kind]}")
        return ", ".join(parts) + f", loss {_fmt(metrics['loss'])}"


def _targets(batch: PackedBatch, classes: int) -> torch.Tensor:
    if batch.targets is None:
        raise ValueError("task 'multilabel' needs multi-hot targets in the batch: build the loader with "
                         "num_classes=C (--num-classes)")
    if batch.targets.shape[-1] != classes:
        raise ValueError(f"the batch's targets have {batch.targets.shape[-1]} classes, the model {classes}: "
                         "give the loader and the model the same num_classes")
    return batch.targets


@TASKS.register("multilabel")
class MultiLabel(Task):
    """Sigmoid binary cross-entropy on each real slot's multi-hot ``targets``; mAP and F1 at evaluation."""

    name = "multilabel"
    metric_names = ("map", "f1", "loss")
    headline = "map"

    @staticmethod
    def _loss(logits: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        real = real_slots(batch.grids)
        targets = _targets(batch, logits.shape[-1])
        per_slot = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(-1)
        return (per_slot * real).sum() / real.sum().clamp(min=1)

    def loss(self, model, batch, host, cfg):
        with autocast(batch.patches.device, cfg.bf16):
            logits = model(batch)
        return self._loss(logits, batch)

    @torch.no_grad()
    def evaluate(self, model, feed, cfg):
        scores, targets, loss_sum, n = [], [], 0.0, 0
        for _, batch in feed:
            with autocast(batch.patches.device, cfg.bf16):
                logits = model(batch).float()
            real = real_slots(batch.grids)
            scores.append(logits[real].cpu())
            targets.append(_targets(batch, logits.shape[-1])[real].cpu())
            loss_sum += float(self._loss(logits, batch)) * int(real.sum())
            n += int(real.sum())
        if not n:
            return {"map": None, "f1": None, "loss": None}
        s, t = torch.cat(scores), torch.cat(targets)
        return {"map": mean_average_precision(s, t), "f1": micro_f1(s, t), "loss": loss_sum / n}


@TASKS.register("contrastive")
class Contrastive(Task):
    """A two-tower model's contrastive loss over the batch's image-text pairs; retrieval and zero-shot
    figures at evaluation.

    Args:
        prompts: tokenized class prompts (:class:`~patchpack.model.retrieval.ClassPrompts`) for
            zero-shot accuracy; ``None``: zero-shot figures are ``None``.
    """

    name = "contrastive"
    metric_names = ("image_to_text_r1", "text_to_image_r1", "chance_r1", "image_to_text_r5", "text_to_image_r5",
                    "chance_r5", "zero_shot_accuracy", "zero_shot_chance", "pairs")
    headline = "image_to_text_r1"

    def __init__(self, prompts: Any = None) -> None:
        self.prompts = prompts

    def loss(self, model, batch, host, cfg):
        from ..model.contrastive import contrastive_step

        with autocast(batch.patches.device, cfg.bf16):
            return contrastive_step(model, batch, loss=cfg.contrastive_loss, chunk=cfg.loss_chunk)

    @torch.no_grad()
    def evaluate(self, model, feed, cfg):
        from ..model.retrieval import evaluate_contrastive

        with autocast(feed.device, cfg.bf16):
            got = evaluate_contrastive(model, (batch for _, batch in feed), self.prompts, ks=(1, 5))
        return {k: got.get(k) for k in self.metric_names}

    def describe(self, metrics):
        line = (f"image->text R@1 {_fmt(metrics['image_to_text_r1'])}, text->image R@1 "
                f"{_fmt(metrics['text_to_image_r1'])} (chance {_fmt(metrics['chance_r1'])})")
        if metrics["zero_shot_accuracy"] is not None:
            line += (f", zero-shot accuracy {_fmt(metrics['zero_shot_accuracy'])} "
                     f"(chance {_fmt(metrics['zero_shot_chance'])})")
        return line


def build_task(name: str, loader: Any = None, class_words: list[list[str]] | None = None) -> Task:
    """The task ``name`` of a run: for ``"contrastive"``, with zero-shot prompts made from
    ``class_words`` (per class id, its phrasings) tokenized as ``loader`` (a
    :class:`~patchpack.config.LoaderConfig`) tokenizes captions; other tasks take no options."""
    if name != "contrastive" or not class_words or loader is None or loader.tokenizer is None:
        return make_task(name)
    from ..model.retrieval import ClassPrompts, class_prompts

    prompts = ClassPrompts.build(class_prompts(class_words), loader.tokenizer, loader.text_len)
    return make_task(name, prompts=prompts)

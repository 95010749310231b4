"""Evaluation figures over the real example slots of packed batches (torch, on the host).

* :func:`average_precision`: per class, the mean of the precision at the rank of each
  positive when examples are sorted by score (non-interpolated AP, as the multi-label
  literature and ``sklearn.metrics.average_precision_score`` compute it);
  :func:`mean_average_precision` averages it over the classes that have a positive.
* :func:`micro_f1`: ``2 TP / (2 TP + FP + FN)`` over every (example, class) decision.
"""

from __future__ import annotations

import torch

__all__ = ["average_precision", "mean_average_precision", "micro_f1"]


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP per class: ``scores``, ``targets`` ``[N, C]`` (targets 0/1) -> ``[C]``, NaN for a class without
    a positive.

    ``AP_c = (1 / P_c) * sum_k prec_c(k) * rel_c(k)``, ``k`` running over the ranks of the
    examples sorted by descending score, ``prec_c(k)`` the share of positives in the top ``k``
    and ``rel_c(k)`` 1 where rank ``k`` holds a positive. Ties are broken by example order.
    """
    order = torch.argsort(scores.float(), dim=0, descending=True, stable=True)
    rel = targets.float().gather(0, order)
    ranks = torch.arange(1, rel.shape[0] + 1, dtype=torch.float32, device=rel.device)[:, None]
    precision = rel.cumsum(0) / ranks
    positives = rel.sum(0)
    return (precision * rel).sum(0) / positives.where(positives > 0, torch.full_like(positives, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean of :func:`average_precision` over the classes with at least one positive (NaN when none has)."""
    ap = average_precision(scores, targets)
    ap = ap[~ap.isnan()]
    return float(ap.mean()) if ap.numel() else float("nan")


def micro_f1(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> float:
    """Micro-averaged F1 of the decisions ``logits > threshold`` (0: probability 0.5) against 0/1 ``targets``."""
    pred, true = logits > threshold, targets > 0.5
    tp = int((pred & true).sum())
    wrong = int((pred ^ true).sum())
    return 2 * tp / (2 * tp + wrong) if tp or wrong else float("nan")

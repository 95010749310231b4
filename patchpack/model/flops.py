"""Training FLOPs of a model over a packed batch, with attention counted analytically.

``torch.utils.flop_counter.FlopCounterMode`` counts the linear layers, but not
the fused CPU SDPA / FlexAttention kernels (it reports 0 for them). This module
adds attention analytically from each attention call's segment layout:

* ``useful`` (what :func:`train_flops` adds): the block-diagonal work only,
  ``4 * H * Dh * sum(n_i^2)`` per forward over the real examples ``n_i`` of every
  row (``Q K^T`` and ``P V``, 2 FLOPs per multiply-add), times 3 for forward +
  backward. Padding and cross-example pairs are not counted.
* ``executed``: what the kernel computes including masked-out pairs: ``B * L^2``
  pairs for dense ``sdpa`` (and, as an upper bound, ``flex``), ``B * L_pad * W`` for
  ``window``, the segments' own blocks (padding included) for ``varlen``.

The ``math`` backend runs plain matmuls that ``FlopCounterMode`` already counts
(densely), so nothing is added for it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .attention import observe_attention

__all__ = ["attention_flops", "train_flops", "mfu", "H100_BF16_PEAK_FLOPS"]


def attention_flops(segment_ids: torch.Tensor, heads: int, head_dim: int, backend: str = "sdpa",
                    window: tuple[int, int] | None = None) -> dict[str, int]:
    """Forward attention FLOPs of one layer: ``{"useful", "executed"}``.

    Args:
        segment_ids: int ``[B, L]`` (read on the host).
        window: ``(chunk C, window W)`` for the ``window`` backend.
    """
    seg = segment_ids.detach().cpu().numpy().astype(np.int64)
    b, l = seg.shape
    per_pair = 4 * heads * head_dim
    useful = every = 0
    for row in seg:
        counts = np.bincount(row).astype(np.int64)  # bin 0: the row's padding, a segment of its own
        useful += int((counts[1:] ** 2).sum())
        every += int((counts**2).sum())
    if backend == "window" and window is not None:
        c, w = window
        executed = b * (-(-l // c) * c) * w
    elif backend == "varlen":
        executed = every  # only the segments' own blocks (padding attends to padding)
    else:
        executed = b * l * l
    return {"useful": useful * per_pair, "executed": executed * per_pair}


def train_flops(model: torch.nn.Module, batch: Any, loss: Callable | None = None) -> dict[str, int]:
    """FLOPs of one forward + backward of ``model`` on ``batch``.

    Returns ``{"total", "dense", "attention", "attention_executed"}``: ``dense`` from
    ``FlopCounterMode`` (it includes matmuls recomputed in backward under
    ``save_memory``); ``attention`` the block-diagonal attention work (x3 for
    fwd + bwd), ``total = dense + attention``; ``attention_executed`` what the
    kernels compute including masked pairs (for reference, not in ``total``).
    Gradients are cleared afterwards.
    """
    calls: list[tuple[torch.Tensor, Any, int, int]] = []

    def observe(q: torch.Tensor, mask: Any) -> None:
        calls.append((mask.segment_ids, mask, q.shape[1], q.shape[3]))

    loss = loss or getattr(model, "loss")
    with FlopCounterMode(display=False) as fc:
        with observe_attention(observe):
            value = loss(model(batch), batch.labels)
        value.backward()  # outside the observer: recomputation in backward is not new attention
    model.zero_grad(set_to_none=True)
    useful = executed = 0
    for seg, mask, h, dh in calls:
        if mask.backend == "math":
            continue
        window = None
        if mask.backend == "window":
            c, _, w, _ = mask.window_layout()
            window = (c, w)
        f = attention_flops(seg, h, dh, mask.backend, window)
        useful += 3 * f["useful"]
        executed += 3 * f["executed"]
    dense = int(fc.get_total_flops())
    return {"total": dense + useful, "dense": dense, "attention": useful, "attention_executed": executed}


#: NVIDIA H100 SXM dense bf16 tensor-core peak (no sparsity), FLOP/s.
H100_BF16_PEAK_FLOPS = 989e12


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops: float = H100_BF16_PEAK_FLOPS) -> float:
    """Model FLOPs utilisation: ``flops_per_step / seconds_per_step / peak_flops`` (count only useful
    FLOPs, e.g. :func:`train_flops`'s ``total``)."""
    return float(flops_per_step) / max(float(seconds_per_step), 1e-12) / float(peak_flops)

"""Attention restricted to each example's segment of a packed sequence.

Build the mask once per sequence layout with :func:`build_mask` (it picks the backend
from :data:`~.backends.BACKENDS`, see :mod:`.backends` for the choice and its reasons) and
reuse it in every layer with :func:`attend`; :func:`segment_attention` does both. A
token attends only to tokens of its own segment; padding only to padding (:mod:`.masks`).

No function here reads a tensor on the host; mask construction is tensor ops on static
shapes (the ``window`` bound is checked on the device).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from .backends import (AUTO_ORDER, BACKENDS, AttentionBackend, AttentionRequest, available_backends,
                       explain_backend, resolve_backend)
from .masks import SegmentMask, window_chunk
from .segments import check, segment_softmax, segment_sum

__all__ = [
    "BACKENDS", "AUTO_ORDER", "AttentionBackend", "AttentionRequest", "SegmentMask", "available_backends",
    "resolve_backend", "explain_backend", "build_mask", "attend", "segment_attention", "observe_attention",
    "segment_softmax", "segment_sum", "window_chunk",
]

_observers: list[Callable[[torch.Tensor, SegmentMask], None]] = []


@contextlib.contextmanager
def observe_attention(fn: Callable[[torch.Tensor, SegmentMask], None]) -> Iterator[None]:
    """Call ``fn(q, mask)`` on every :func:`attend` inside the block (FLOP accounting, :mod:`.flops`)."""
    _observers.append(fn)
    try:
        yield
    finally:
        _observers.remove(fn)


def build_mask(
    segment_ids: torch.Tensor,
    backend: str = "auto",
    *,
    max_segment_len: int | None = None,
    num_slots: int | None = None,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    head_dim: int | None = None,
) -> SegmentMask:
    """Build the segment mask for ``segment_ids`` ``[B, L]`` once, for every layer.

    Args:
        segment_ids: int ``[B, L]``, examples back to back in slot order, padding after.
        backend: ``"auto"`` or a name in :data:`BACKENDS`.
        max_segment_len: static bound on tokens per example (``window`` needs it; it is
            checked on the device).
        num_slots: ``E`` (slots per row); ``varlen`` needs it, default ``L``.
        dtype: the dtype q/k/v will have (e.g. bf16 under autocast).
        requires_grad: whether a backward pass will follow.
        head_dim: ``Dh`` (checked by kernels with limits).
    """
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [B, L], got shape {tuple(segment_ids.shape)}")
    seg = segment_ids.long()
    b, l = seg.shape
    req = AttentionRequest(seg.device, dtype, requires_grad, head_dim, l, max_segment_len)
    name, reason = explain_backend(backend, req)
    mask = SegmentMask(name, seg, reason)
    entry = BACKENDS.get(name)
    if entry.prepare is not None:
        entry.prepare(mask, req, num_slots if num_slots is not None else l)
    if name == "window":
        counts = segment_sum(torch.ones_like(seg), seg.clamp(0, l), l + 1)[:, 1:]
        check(counts <= max_segment_len, lambda: f"an example has more than max_segment_len={max_segment_len} tokens; "
              "raise NaViTConfig.max_example_tokens to the loader's bound (max patches x time steps)")
    return mask


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    """Segment-masked attention.

    Args:
        q, k, v: ``[B, H, L, Dh]``.
        mask: from :func:`build_mask` for the same ``[B, L]``.

    Returns:
        ``[B, H, L, Dh]`` in the dtype of ``q``.
    """
    b, h, l, dh = q.shape
    if mask.shape != (b, l):
        raise ValueError(f"mask is for {mask.shape}, q is for {(b, l)}")
    for observe in _observers:
        observe(q, mask)
    return BACKENDS.get(mask.backend).attend(q, k, v, mask)


def segment_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_ids: torch.Tensor,
    backend: str = "auto",
    max_segment_len: int | None = None,
) -> torch.Tensor:
    """``attend(q, k, v, build_mask(segment_ids, backend, ...))``: q/k/v ``[B, H, L, Dh]``."""
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    mask = build_mask(segment_ids, backend, max_segment_len=max_segment_len, dtype=q.dtype,
                      requires_grad=requires_grad, head_dim=q.shape[-1])
    return attend(q, k, v, mask)

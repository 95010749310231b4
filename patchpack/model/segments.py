"""Segment arithmetic over packed rows, derived from ``segment_ids`` alone.

``segment_ids`` is int ``[B, L]``: 0 = padding, ``1..E`` = the example slot of a
token. Examples sit back to back from the start of the row in slot order;
padding fills the rest. Nothing here reads a tensor on the host (no ``.item()``,
``nonzero``, ``bool(tensor)``): shapes follow from static sizes only, so the same
code runs under CUDA graphs and ``torch.compile`` without syncs.

* :func:`segment_sum`, :func:`segment_softmax`: reductions over the tokens of a
  segment (scatter based, no loop over examples).
* :func:`segment_lengths`: tokens per slot ``[B, S]``.
* :func:`varlen_offsets`: static-length ``cu_seqlens`` for varlen kernels (each
  row's slots and its padding run; padding is not an example but must be covered).
* :func:`check`: a device-side assertion (raises at once on CPU, no sync on CUDA).
"""

from __future__ import annotations

import torch

__all__ = ["segment_sum", "segment_softmax", "segment_lengths", "varlen_offsets", "check"]


def check(condition: torch.Tensor, message: str) -> None:
    """Fail with ``message`` unless every element of ``condition`` is true, without a host sync on CUDA.

    On CPU this raises ``RuntimeError(message)`` immediately; on CUDA the failure
    surfaces at a later kernel launch (it is for broken contracts, not control flow).
    Skipped while tracing for ``torch.compile``.
    """
    if torch.compiler.is_compiling():
        return
    torch._assert_async(condition.all(), message)


def _expand_index(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    idx = index.long()
    while idx.dim() < like.dim():
        idx = idx.unsqueeze(-1)
    return idx.expand_as(like)


def segment_sum(src: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum ``src`` ``[B, L, ...]`` over tokens sharing ``index`` ``[B, L]`` (values in ``[0, num_segments)``).

    Returns ``[B, num_segments, ...]``; segments without tokens are zero.
    """
    out = src.new_zeros((src.shape[0], num_segments, *src.shape[2:]))
    return out.scatter_add(1, _expand_index(index, src), src)


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` ``[B, L, ...]`` over the tokens of each segment (dim 1).

    Each trailing position (e.g. head or learned-token index) is normalised
    separately. Every token belongs to exactly one segment, so the result is
    finite for every token.
    """
    idx = _expand_index(index, logits)
    with torch.no_grad():
        seg_max = logits.new_full((logits.shape[0], num_segments, *logits.shape[2:]), float("-inf"))
        seg_max = seg_max.scatter_reduce(1, idx, logits, reduce="amax", include_self=True)
    e = torch.exp(logits - seg_max.gather(1, idx))
    denom = e.new_zeros(seg_max.shape).scatter_add(1, idx, e)
    return e / denom.gather(1, idx)


def segment_lengths(segment_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Tokens per slot: int64 ``[B, num_slots + 1]``; column 0 counts padding."""
    seg = segment_ids.long().clamp(0, num_slots)
    return torch.zeros(seg.shape[0], num_slots + 1, dtype=torch.long, device=seg.device).scatter_add(
        1, seg, torch.ones_like(seg)
    )


def varlen_offsets(segment_ids: torch.Tensor, num_slots: int) -> tuple[torch.Tensor, int]:
    """``(cu_seqlens int32 [B * (num_slots + 1) + 1], max_seqlen)`` over the row-major flattened batch.

    Each row contributes ``num_slots`` example segments (empty slots have length 0)
    followed by one segment for its trailing padding, so every token is covered and
    the tensor's length is static. Padding attends only to padding and is never
    read. ``max_seqlen`` is the static bound ``L``.
    """
    b, l = segment_ids.shape
    lengths = segment_lengths(segment_ids, num_slots)
    per_row = torch.cat([lengths[:, 1:], lengths[:, :1]], 1).reshape(-1)  # slots, then padding
    cu = torch.zeros(per_row.numel() + 1, dtype=torch.int32, device=segment_ids.device)
    cu[1:] = torch.cumsum(per_row, 0)
    return cu, int(l)

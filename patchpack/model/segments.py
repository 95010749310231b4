"""Segment arithmetic over packed rows, derived from ``segment_ids`` alone.

``segment_ids`` is int ``[B, L]``: 0 = padding, ``1..E`` = the example slot of a
token. Examples sit back to back from the start of the row in slot order;
padding fills the rest. Nothing here reads a tensor on the host (no ``.item()``,
``nonzero``, ``bool(tensor)``): shapes follow from static sizes only, so the same
code runs under CUDA graphs and ``torch.compile`` without syncs.

* :func:`segment_sum`, :func:`segment_softmax`: reductions over the tokens of a
  segment (scatter based, no loop over examples).
* :func:`segment_lengths`: tokens per slot ``[B, S]``.
* :func:`real_slots`: which slots hold an example (THE test); :func:`flatten_slots` gathers them.
* :func:`varlen_offsets`: static-length ``cu_seqlens`` for varlen kernels (each
  row's slots and its padding run; padding is not an example but must be covered).
* :func:`grid_neighbours`: the row index of each token's 3 x 3 neighbours in its own
  example's grid and time step (for convolutions over packed, partly dropped grids).
* :func:`check`: a device-side assertion (raises at once on CPU, no sync on CUDA).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["segment_sum", "segment_softmax", "segment_lengths", "varlen_offsets", "grid_neighbours", "check",
           "real_slots", "flatten_slots", "OFFSETS_3X3"]

#: ``(dy, dx)`` of the 3 x 3 neighbourhood in ``nn.Conv2d`` kernel order (``o = (dy + 1) * 3 + dx + 1``).
OFFSETS_3X3 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def check(condition: torch.Tensor, message: str | Callable[[], str]) -> None:
    """Fail with ``message`` unless every element of ``condition`` is true, without a host sync on CUDA.

    On CPU this raises ``RuntimeError(message)`` immediately; on CUDA the failure
    surfaces at a later kernel launch (it is for broken contracts, not control flow).
    Skipped while tracing for ``torch.compile``; pass ``message`` as a callable when it
    formats values, so a traced forward does not format it (nor break its graph there).
    """
    if torch.compiler.is_compiling():
        return
    # the aten operator itself (torch._assert_async's public op): checks on the device, no host sync
    torch.ops.aten._assert_async.msg(condition.all(), message() if callable(message) else message)


def real_slots(grids: torch.Tensor) -> torch.Tensor:
    """bool ``[B, E]``: which slots hold an example (a non-empty ``(T, H, W)`` grid)."""
    return grids.prod(-1) > 0


def flatten_slots(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x[keep]``: ``[B, E, ...]`` -> ``[N, ...]`` over the slots where ``keep`` (``[B, E]``) is true.

    Row-major: the rows in order, each row's slots in slot order. ``keep`` is
    :func:`real_slots` or a subset of it (e.g. real slots that have a caption). One host
    sync (the count ``N``).
    """
    if keep.shape != x.shape[:2]:
        raise ValueError(f"keep has shape {tuple(keep.shape)}, expected the leading [B, E] of {tuple(x.shape)}")
    return x[keep]


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


def _grid_keys(segment_ids: torch.Tensor, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One int64 key per ``(slot, t, y, x)``: 15 + 12 + 16 + 16 bits (slots < 32768, t < 4096, sides < 65536)."""
    return (((segment_ids.long() << 12 | t.long()) << 16 | y.long()) << 16) | x.long()


def grid_neighbours(segment_ids: torch.Tensor, positions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Row index of each token's 3 x 3 spatial neighbours: int64 ``[B, L, 9]`` in :data:`OFFSETS_3X3` order.

    The neighbour at ``(dy, dx)`` of token ``(t, y, x)`` is the token of the **same example
    and time step** at ``(t, y + dy, x + dx)``. Where that cell lies outside the example's
    grid (``sizes``, per token ``(T, H, W)``), or its token was dropped, or the token is
    padding, the index is ``L`` (a hole: gather from a zero row appended at ``L``). Tokens
    may sit in any order within their row. Found by sorting one key per token and a
    batched ``searchsorted``: static shapes, no host read.
    """
    b, l = segment_ids.shape
    seg = segment_ids.long()
    t, y, x = positions.long().unbind(-1)
    keys = _grid_keys(seg, t, y, x)
    sorted_keys, order = keys.sort(dim=1)
    dy = torch.tensor([o[0] for o in OFFSETS_3X3], device=seg.device)
    dx = torch.tensor([o[1] for o in OFFSETS_3X3], device=seg.device)
    ny, nx = y[..., None] + dy, x[..., None] + dx  # [B, L, 9]
    inside = (ny >= 0) & (ny < sizes[..., 1:2]) & (nx >= 0) & (nx < sizes[..., 2:3]) & (seg > 0)[..., None]
    want = _grid_keys(seg[..., None], t[..., None], ny.clamp(min=0), nx.clamp(min=0)).reshape(b, l * 9)
    at = torch.searchsorted(sorted_keys, want).clamp(max=l - 1)
    found = (sorted_keys.gather(1, at) == want).reshape(b, l, 9) & inside
    index = order.gather(1, at).reshape(b, l, 9)
    return torch.where(found, index, torch.full_like(index, l))

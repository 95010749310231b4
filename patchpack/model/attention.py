"""Attention restricted to each example's segment of a packed sequence.

A token attends only to tokens with the same segment id. Padding (id 0) attends
only to padding, so every query row has at least one key and no row is ever
all-masked (no NaN); real tokens never see padding or another example.

Backends (all pure functions of ``(q, k, v, segment_ids)``):

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention` with a
  boolean ``[B, 1, L, L]`` segment mask. The reference and the CPU training path.
* ``"math"``: the same in plain fp32 ops (softmax of masked scores); a slow
  reference for tests.
* ``"flex"``: FlexAttention with a block mask from ``create_block_mask``; skips
  blocks with no same-segment pair. Compiled on CUDA. (No backward on CPU.)
* ``"varlen"``: variable-length flash kernels over ``cu_seqlens``
  (``torch.nn.attention.varlen.varlen_attn`` or ``flash_attn_varlen_func``);
  CUDA with fp16/bf16 only.

``backend="auto"`` picks ``varlen`` on CUDA in half precision when a kernel is
present, else ``flex`` on CUDA, else ``sdpa``. Build the mask once per forward
with :func:`build_mask` and reuse it in every layer with :func:`attend`.

Also here: segment reductions (:func:`segment_sum`, :func:`segment_softmax`) used
by attention pooling and TokenLearner, vectorised with scatter (no loop over
examples).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "BACKENDS",
    "SegmentMask",
    "available_backends",
    "resolve_backend",
    "build_mask",
    "attend",
    "segment_attention",
    "segment_sum",
    "segment_softmax",
]

BACKENDS = ("sdpa", "math", "flex", "varlen")
_HALF = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- availability


@functools.lru_cache(maxsize=None)
def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except Exception:  # pragma: no cover - old torch
        return False
    return True


@functools.lru_cache(maxsize=None)
def _varlen_kernel() -> Any:
    """The varlen kernel ``fn(q, k, v, cu, max_len) -> out`` on ``[total, H, Dh]``, or ``None``."""
    if not torch.cuda.is_available():
        return None
    try:
        from flash_attn import flash_attn_varlen_func  # type: ignore

        return lambda q, k, v, cu, m: flash_attn_varlen_func(q, k, v, cu, cu, m, m)
    except Exception:
        pass
    try:
        from torch.nn.attention.varlen import varlen_attn  # type: ignore

        return lambda q, k, v, cu, m: varlen_attn(q, k, v, cu, cu, m, m)
    except Exception:  # pragma: no cover - depends on the torch build
        return None


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Backends that can run forward on ``device`` with inputs of ``dtype``."""
    device = torch.device(device)
    out = ["sdpa", "math"]
    if _flex_available():
        out.append("flex")
    if device.type == "cuda" and dtype in _HALF and _varlen_kernel() is not None:
        out.append("varlen")
    return out


def resolve_backend(
    backend: str, device: torch.device | str, dtype: torch.dtype = torch.float32, requires_grad: bool = False
) -> str:
    """Turn ``"auto"`` into a concrete backend; check an explicit one is usable.

    Raises:
        ValueError: unknown or unavailable backend (e.g. ``flex`` backward on CPU).
    """
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            if dtype in _HALF and _varlen_kernel() is not None:
                return "varlen"
            if _flex_available():
                return "flex"
        return "sdpa"
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    if backend not in available_backends(device, dtype):
        raise ValueError(f"attention backend {backend!r} is not available on {device} for {dtype}")
    if backend == "flex" and device.type != "cuda" and requires_grad:
        raise ValueError("FlexAttention has no backward on CPU; use backend='sdpa' for CPU training")
    return backend


# ----------------------------------------------------------------------------- masks


@dataclass
class SegmentMask:
    """A segment mask in the form its backend needs; build with :func:`build_mask`.

    Attributes:
        backend: concrete backend name.
        segment_ids: int ``[B, L]`` (0 = padding).
        dense: bool ``[B, 1, L, L]``, True where attention is allowed (``sdpa``/``math``).
        block_mask: FlexAttention ``BlockMask`` (``flex``).
        cu_seqlens: int32 ``[n + 1]`` over the flattened batch, with ``max_seqlen`` (``varlen``).
    """

    backend: str
    segment_ids: torch.Tensor
    dense: torch.Tensor | None = None
    block_mask: Any = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        b, l = self.segment_ids.shape
        return int(b), int(l)


def _cu_seqlens(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    from ..batch import cu_seqlens

    return cu_seqlens(segment_ids)


def build_mask(
    segment_ids: torch.Tensor,
    backend: str = "auto",
    *,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> SegmentMask:
    """Build the segment mask for ``segment_ids`` ``[B, L]`` once, for every layer.

    ``dtype`` is the dtype q/k/v will have (e.g. bf16 under autocast); it and
    ``requires_grad`` only matter for ``backend="auto"`` and validation.
    """
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [B, L], got shape {tuple(segment_ids.shape)}")
    seg = segment_ids.long()
    name = resolve_backend(backend, seg.device, dtype, requires_grad)
    mask = SegmentMask(name, seg)
    if name in ("sdpa", "math"):
        mask.dense = (seg[:, :, None] == seg[:, None, :])[:, None]
    elif name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask

        b, l = seg.shape

        def same_segment(bi, hi, qi, ki):
            return seg[bi, qi] == seg[bi, ki]

        mask.block_mask = create_block_mask(same_segment, b, None, l, l, device=seg.device)
    else:  # varlen
        mask.cu_seqlens, mask.max_seqlen = _cu_seqlens(seg)
    return mask


# ----------------------------------------------------------------------------- attention


@functools.lru_cache(maxsize=None)
def _flex_fn(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention


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
    if mask.backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    if mask.backend == "math":
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * dh**-0.5
        scores = scores.masked_fill(~mask.dense, float("-inf"))
        return torch.matmul(scores.softmax(-1), v.float()).to(q.dtype)
    if mask.backend == "flex":
        with warnings.catch_warnings():  # eager CPU flex warns that it is unfused
            warnings.simplefilter("ignore", UserWarning)
            return _flex_fn(q.device.type)(q, k, v, block_mask=mask.block_mask)
    kernel = _varlen_kernel()
    if kernel is None:  # pragma: no cover - resolve_backend checked
        raise ValueError("no varlen attention kernel available")
    flat = lambda t: t.transpose(1, 2).reshape(b * l, h, dh)  # noqa: E731
    out = kernel(flat(q), flat(k), flat(v), mask.cu_seqlens, mask.max_seqlen)
    return out.reshape(b, l, h, dh).transpose(1, 2)


def segment_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment_ids: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """``attend(q, k, v, build_mask(segment_ids, backend))``: q/k/v ``[B, H, L, Dh]``."""
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return attend(q, k, v, build_mask(segment_ids, backend, dtype=q.dtype, requires_grad=requires_grad))


# ----------------------------------------------------------------------------- segment reductions


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

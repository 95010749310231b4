"""Attention restricted to each example's segment of a packed sequence.

A token attends only to tokens with the same segment id. Padding (id 0) attends
only to padding, so every query row has at least one key and no row is ever
all-masked (no NaN); real tokens never see padding or another example.

Backends (all pure functions of ``(q, k, v, mask)``; build the mask once per
sequence layout with :func:`build_mask` and reuse it in every layer):

* ``"window"``: exact block-local attention for CPU training. The row is cut
  into chunks of ``C`` queries; each chunk attends to the keys within
  ``max_segment_len`` tokens of it (a static window of ``W = C + 2M`` keys) through
  :func:`~torch.nn.functional.scaled_dot_product_attention` with an additive
  ``[B * L/C, 1, C, W]`` mask. Since an example is one contiguous run of at most
  ``M`` tokens, every same-segment key lies in the window, so the result equals
  full segment attention. Work and memory grow as ``B * L * (C + 2M)``, linear in
  ``L`` (dense: ``B * L^2``). Needs the bound ``M`` (``NaViTConfig.max_example_tokens``,
  checked on the device).
* ``"sdpa"``: SDPA over the whole row with one additive ``[B, 1, L, L]`` mask
  (built once per layout and dtype, shared by all layers). Quadratic in ``L``.
* ``"math"``: the same in plain fp32 ops; a slow reference for tests.
* ``"flex"``: FlexAttention with a block mask built once per layout; skips blocks
  with no same-segment pair. Compiled on CUDA. Forward only on CPU.
* ``"varlen"``: variable-length flash kernels over static ``cu_seqlens``
  (:func:`.segments.varlen_offsets`); CUDA with fp16/bf16 only.

``backend="auto"`` picks ``varlen`` on CUDA in half precision when a kernel is
present, else ``flex`` on CUDA; on CPU ``window`` when a segment bound makes its
window at most half the row, else ``sdpa``. Measured on CPU (fwd + bwd of one
layer, B=8, L=4096, 4 heads of 32, one thread, examples of 16..256 tokens):
dense bool-mask SDPA 18.3 s / +776 MB, dense additive mask 14.0 s / +770 MB,
nested jagged tensors (per-example math) 12.4 s / +1496 MB, ``window`` 2.3 s / +484 MB.

No function here reads a tensor on the host; mask construction is tensor ops on
static shapes.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .segments import check, segment_softmax, segment_sum, varlen_offsets

__all__ = [
    "BACKENDS",
    "SegmentMask",
    "available_backends",
    "resolve_backend",
    "build_mask",
    "attend",
    "segment_attention",
    "segment_softmax",
    "segment_sum",
    "window_chunk",
]

BACKENDS = ("window", "sdpa", "math", "flex", "varlen")
_HALF = (torch.float16, torch.bfloat16)

#: Called as ``fn(q, mask)`` by :func:`attend` while FLOP accounting is on (see :mod:`.flops`).
_observers: list[Callable[[torch.Tensor, "SegmentMask"], None]] = []


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
    out = ["window", "sdpa", "math"]
    if _flex_available():
        out.append("flex")
    if device.type == "cuda" and dtype in _HALF and _varlen_kernel() is not None:
        out.append("varlen")
    return out


def window_chunk(max_segment_len: int) -> int:
    """Queries per chunk of the ``window`` backend for segments of at most ``max_segment_len`` tokens."""
    return max(16, -(-max_segment_len // 16) * 16)


def _window_helps(length: int, max_segment_len: int | None) -> bool:
    if max_segment_len is None:
        return False
    # below half the row the window's saving outweighs its copies (and its recomputation under save_memory)
    return 2 * (window_chunk(max_segment_len) + 2 * max_segment_len) <= length


def resolve_backend(
    backend: str,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    length: int | None = None,
    max_segment_len: int | None = None,
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
        if length is not None and _window_helps(length, max_segment_len):
            return "window"
        return "sdpa"
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    if backend not in available_backends(device, dtype):
        raise ValueError(f"attention backend {backend!r} is not available on {device} for {dtype}")
    if backend == "flex" and device.type != "cuda" and requires_grad:
        raise ValueError(
            "FlexAttention has no backward on CPU: run under torch.no_grad() / torch.inference_mode(), "
            "or use attention='window' or 'sdpa' for CPU training"
        )
    return backend


@dataclass
class SegmentMask:
    """A segment mask in the form its backend needs; build with :func:`build_mask`.

    Attributes:
        backend: concrete backend name.
        segment_ids: int64 ``[B, L]`` (0 = padding).
        max_segment_len: the static bound ``M`` used by ``window`` (else ``None``).
        block_mask: FlexAttention ``BlockMask`` (``flex``).
        cu_seqlens: int32 ``[B * (E + 1) + 1]`` with ``max_seqlen`` (``varlen``).
    """

    backend: str
    segment_ids: torch.Tensor
    max_segment_len: int | None = None
    block_mask: Any = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        b, l = self.segment_ids.shape
        return int(b), int(l)

    @property
    def allowed(self) -> torch.Tensor:
        """bool ``[B, 1, L, L]``: True where attention is allowed (built on first use)."""
        if "allowed" not in self._cache:
            seg = self.segment_ids
            self._cache["allowed"] = (seg[:, :, None] == seg[:, None, :])[:, None]
        return self._cache["allowed"]

    def additive(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask in ``dtype`` (0 where allowed, -inf elsewhere), built once per dtype.

        ``[B, 1, L, L]`` for ``sdpa``; ``[B * L/C, 1, C, W]`` for ``window``.
        """
        key = ("additive", dtype)
        if key not in self._cache:
            allowed = self._window_allowed() if self.backend == "window" else self.allowed
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            self._cache[key] = mask.masked_fill_(~allowed, float("-inf"))
        return self._cache[key]

    # window layout: chunk C, window W = C + 2M, rows padded to Lp = ceil(L / C) * C
    def window_layout(self) -> tuple[int, int, int, int]:
        """``(chunk C, chunks n, window W, margin M)``."""
        m = int(self.max_segment_len)
        c = window_chunk(m)
        n = -(-self.shape[1] // c)
        return c, n, c + 2 * m, m

    def _window_allowed(self) -> torch.Tensor:
        b, l = self.shape
        c, n, w, m = self.window_layout()
        seg = self.segment_ids
        # positions past the row end get -1: they match only each other, so no query row is empty
        seg_q = F.pad(seg, (0, n * c - l), value=-1).reshape(b, n, c)
        seg_k = F.pad(seg, (m, m + n * c - l), value=-1).unfold(1, w, c)  # [B, n, W]
        return (seg_q[..., :, None] == seg_k[..., None, :]).reshape(b * n, 1, c, w)


def build_mask(
    segment_ids: torch.Tensor,
    backend: str = "auto",
    *,
    max_segment_len: int | None = None,
    num_slots: int | None = None,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> SegmentMask:
    """Build the segment mask for ``segment_ids`` ``[B, L]`` once, for every layer.

    Args:
        segment_ids: int ``[B, L]``, examples back to back in slot order, padding after.
        backend: ``"auto"`` or one of :data:`BACKENDS`.
        max_segment_len: static bound on tokens per example (``window`` needs it; it is
            checked on the device).
        num_slots: ``E`` (slots per row); ``varlen`` needs it, default ``L``.
        dtype: the dtype q/k/v will have (e.g. bf16 under autocast).
        requires_grad: whether a backward pass will follow (validation only).
    """
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [B, L], got shape {tuple(segment_ids.shape)}")
    seg = segment_ids.long()
    b, l = seg.shape
    name = resolve_backend(backend, seg.device, dtype, requires_grad, l, max_segment_len)
    mask = SegmentMask(name, seg)
    if name == "window":
        if max_segment_len is None or max_segment_len < 1:
            raise ValueError("attention='window' needs max_segment_len (NaViTConfig.max_example_tokens)")
        mask.max_segment_len = int(max_segment_len)
        counts = segment_sum(torch.ones_like(seg), seg.clamp(0, l), l + 1)[:, 1:]
        check(counts <= max_segment_len, f"an example has more than max_segment_len={max_segment_len} tokens; "
              "raise NaViTConfig.max_example_tokens to the loader's bound (max patches x time steps)")
    elif name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask

        def same_segment(bi, hi, qi, ki):
            return seg[bi, qi] == seg[bi, ki]

        mask.block_mask = create_block_mask(same_segment, b, None, l, l, device=seg.device)
    elif name == "varlen":
        mask.cu_seqlens, mask.max_seqlen = varlen_offsets(seg, num_slots if num_slots is not None else l)
    return mask


@functools.lru_cache(maxsize=None)
def _flex_fn(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention


def _window_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    b, h, l, dh = q.shape
    c, n, w, m = mask.window_layout()
    pad = n * c - l

    def windows(t: torch.Tensor) -> torch.Tensor:  # [B, H, L, Dh] -> [B * n, H, W, Dh]
        t = F.pad(t, (0, 0, m, m + pad)).unfold(2, w, c)  # [B, H, n, Dh, W]
        return t.permute(0, 2, 1, 4, 3).reshape(b * n, h, w, dh)

    qc = F.pad(q, (0, 0, 0, pad)).reshape(b, h, n, c, dh).transpose(1, 2).reshape(b * n, h, c, dh)
    out = F.scaled_dot_product_attention(qc, windows(k), windows(v), attn_mask=mask.additive(q.dtype))
    return out.reshape(b, n, h, c, dh).transpose(1, 2).reshape(b, h, n * c, dh)[:, :, :l]


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
    if mask.backend == "window":
        return _window_attend(q, k, v, mask)
    if mask.backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.additive(q.dtype))
    if mask.backend == "math":
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * dh**-0.5
        scores = scores.masked_fill(~mask.allowed, float("-inf"))
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
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_ids: torch.Tensor,
    backend: str = "auto",
    max_segment_len: int | None = None,
) -> torch.Tensor:
    """``attend(q, k, v, build_mask(segment_ids, backend, ...))``: q/k/v ``[B, H, L, Dh]``."""
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    mask = build_mask(segment_ids, backend, max_segment_len=max_segment_len, dtype=q.dtype, requires_grad=requires_grad)
    return attend(q, k, v, mask)

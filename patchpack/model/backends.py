"""Attention backends: one :class:`~patchpack.registry.Registry`, capability checks, a fallback order.

Each :class:`AttentionBackend` says whether it can serve an :class:`AttentionRequest`
(device, CUDA architecture, dtype, head dim, whether a backward follows, row length,
bound on tokens per example) and, if not, why; ``backend="auto"`` takes the first of
:data:`AUTO_ORDER` that can, and :func:`explain_backend` says in one line which one runs
and why the ones before it did not. Register another with
``BACKENDS.register(name, AttentionBackend(...))``.

* ``varlen``: variable-length flash kernels (``torch.nn.attention.varlen``, else
  ``flash_attn``) over static ``cu_seqlens``; CUDA sm80+, fp16/bf16,
  head dim a multiple of 8 up to 256. Linear in the examples' lengths.
* ``flex``: FlexAttention with a block mask built once per layout (skips blocks with no
  same-segment pair); compiled on CUDA. On CPU forward only (no backward), and never
  picked by ``auto`` there (it runs unfused).
* ``window``: exact block-local attention through SDPA (:mod:`.masks`), any device and
  dtype, needs a bound on tokens per example; ``auto`` takes it when its window is at
  most half the row. Measured on CPU (fwd + bwd of one layer, B=8, L=4096, 4 heads of 32,
  examples of 16..256 tokens): dense bool-mask SDPA 18.3 s / +776 MB, dense additive mask
  14.0 s / +770 MB, nested jagged tensors 12.4 s / +1496 MB, ``window`` 2.3 s / +484 MB.
* ``sdpa``: SDPA over the whole row with one additive ``[B, 1, L, L]`` mask. Runs
  everywhere; quadratic in ``L``. The last resort of ``auto``.
* ``math``: the same in plain fp32 ops; a slow reference for tests (never ``auto``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..registry import Registry
from .masks import SegmentMask, window_helps, window_span
from .segments import varlen_offsets

__all__ = ["AttentionRequest", "AttentionBackend", "BACKENDS", "AUTO_ORDER", "available_backends",
           "resolve_backend", "explain_backend", "varlen_kernel"]

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class AttentionRequest:
    """What one forward needs from a backend.

    Attributes:
        device: where q/k/v live.
        dtype: their dtype (the autocast dtype under autocast).
        requires_grad: whether a backward pass will follow.
        head_dim: ``Dh`` (``None``: not known yet, no check).
        length: ``L`` of the rows (``None``: not known yet).
        max_segment_len: static bound on tokens per example (``None``: none known).
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    requires_grad: bool = False
    head_dim: int | None = None
    length: int | None = None
    max_segment_len: int | None = None

    def describe(self) -> str:
        mode = "training" if self.requires_grad else "inference"
        rows = f", rows of {self.length}" if self.length is not None else ""
        return f"{self.device.type}, {str(self.dtype).replace('torch.', '')}, {mode}{rows}"


@dataclass(frozen=True)
class AttentionBackend:
    """One attention backend.

    Attributes:
        attend: ``fn(q, k, v, mask) -> out`` on ``[B, H, L, Dh]``.
        unsupported: ``fn(request) -> reason`` it cannot run, or ``None`` when it can.
        prepare: ``fn(mask, request, num_slots)`` fills the mask's backend part (optional).
        auto_unsupported: extra reason ``auto`` passes it over (a preference, not a
            capability), or ``None``.
    """

    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, SegmentMask], torch.Tensor]
    unsupported: Callable[[AttentionRequest], str | None]
    prepare: Callable[[SegmentMask, AttentionRequest, int], None] | None = None
    auto_unsupported: Callable[[AttentionRequest], str | None] | None = None


BACKENDS: Registry[AttentionBackend] = Registry("attention backend", hint="patchpack.model.BACKENDS.register")
#: ``backend="auto"`` takes the first of these that can serve the request.
AUTO_ORDER = ("varlen", "flex", "window", "sdpa")


# ----------------------------------------------------------------------------- capabilities


try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except Exception:  # pragma: no cover - old torch
    create_block_mask = flex_attention = None
_FLEX = flex_attention is not None
_COMPILED: dict[str, Any] = {}  # torch.compile(flex_attention), built on first eager CUDA use


def _probe_varlen() -> Any:
    if not torch.cuda.is_available():
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn  # a custom op: traceable by torch.compile

        return lambda q, k, v, cu, m: varlen_attn(q, k, v, cu, cu, m, m)
    except Exception:  # pragma: no cover - depends on the torch build
        pass
    try:
        from flash_attn import flash_attn_varlen_func  # type: ignore

        return lambda q, k, v, cu, m: flash_attn_varlen_func(q, k, v, cu, cu, m, m)
    except Exception:
        return None


_VARLEN = _probe_varlen()  # module constants: a traced forward reads no cache


def varlen_kernel() -> Any:
    """The varlen kernel ``fn(q, k, v, cu, max_len) -> out`` on ``[total, H, Dh]`` (torch's
    ``varlen_attn``, else ``flash_attn``), or ``None``."""
    return _VARLEN


_SM: dict[int, tuple[int, int]] = {}


def _capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability, read once per device outside any trace (``None`` while a
    ``torch.compile`` trace meets a device not read yet: the kernel itself then checks)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM and not torch.compiler.is_compiling():
        _SM[index] = torch.cuda.get_device_capability(index)
    return _SM.get(index)


def _varlen_unsupported(req: AttentionRequest) -> str | None:
    if req.device.type != "cuda":
        return "needs CUDA"
    if req.dtype not in _HALF:
        return f"needs fp16/bf16 (got {str(req.dtype).replace('torch.', '')})"
    if (_capability(req.device) or (8, 0)) < (8, 0):
        return "needs an sm80+ GPU"
    if req.head_dim is not None and (req.head_dim % 8 or req.head_dim > 256):
        return f"needs a head dim that is a multiple of 8 up to 256 (got {req.head_dim})"
    if _VARLEN is None:
        return "no kernel (neither torch.nn.attention.varlen nor flash_attn)"
    return None


def _flex_unsupported(req: AttentionRequest) -> str | None:
    if not _FLEX:
        return "this torch has no FlexAttention"
    if req.device.type != "cuda" and req.requires_grad:
        return ("FlexAttention has no backward on CPU: run under torch.no_grad() / torch.inference_mode(), "
                "or use attention='window' or 'sdpa' for CPU training")
    return None


def _flex_auto(req: AttentionRequest) -> str | None:
    return None if req.device.type == "cuda" else "auto takes it on CUDA only (on CPU it runs unfused)"


def _window_unsupported(req: AttentionRequest) -> str | None:
    if req.max_segment_len is None or req.max_segment_len < 1:
        return "needs a bound on tokens per example (NaViTConfig.max_example_tokens)"
    return None


def _window_auto(req: AttentionRequest) -> str | None:
    m = req.max_segment_len
    if req.length is not None and not window_helps(req.length, m):
        return f"its {window_span(m)}-key window is over half the {req.length}-token row"
    return None


def _always(req: AttentionRequest) -> None:
    return None


# ----------------------------------------------------------------------------- kernels


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


def _sdpa_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.additive(q.dtype))


def _math_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask.allowed, float("-inf"))
    return torch.matmul(scores.softmax(-1), v.float()).to(q.dtype)


def _flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    fn = flex_attention  # inside a compiled model: traced into its graph
    if q.device.type == "cuda" and not torch.compiler.is_compiling():
        fn = _COMPILED.get("flex") or _COMPILED.setdefault("flex", torch.compile(flex_attention, dynamic=False))
    with warnings.catch_warnings():  # eager CPU flex warns that it is unfused
        warnings.simplefilter("ignore", UserWarning)
        return fn(q, k, v, block_mask=mask.block_mask)


def _flex_prepare(mask: SegmentMask, req: AttentionRequest, num_slots: int) -> None:
    seg = mask.segment_ids
    b, l = seg.shape

    def same_segment(bi, hi, qi, ki):
        return seg[bi, qi] == seg[bi, ki]

    mask.block_mask = create_block_mask(same_segment, b, None, l, l, device=seg.device)


def _varlen_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: SegmentMask) -> torch.Tensor:
    b, h, l, dh = q.shape
    flat = lambda t: t.transpose(1, 2).reshape(b * l, h, dh)  # noqa: E731
    out = _VARLEN(flat(q), flat(k), flat(v), mask.cu_seqlens, mask.max_seqlen)
    return out.reshape(b, l, h, dh).transpose(1, 2)


def _varlen_prepare(mask: SegmentMask, req: AttentionRequest, num_slots: int) -> None:
    mask.cu_seqlens, mask.max_seqlen = varlen_offsets(mask.segment_ids, num_slots)


def _window_prepare(mask: SegmentMask, req: AttentionRequest, num_slots: int) -> None:
    mask.max_segment_len = int(req.max_segment_len)


BACKENDS.register("varlen", AttentionBackend(_varlen_attend, _varlen_unsupported, _varlen_prepare))
BACKENDS.register("flex", AttentionBackend(_flex_attend, _flex_unsupported, _flex_prepare, _flex_auto))
BACKENDS.register("window", AttentionBackend(_window_attend, _window_unsupported, _window_prepare, _window_auto))
BACKENDS.register("sdpa", AttentionBackend(_sdpa_attend, _always))
BACKENDS.register("math", AttentionBackend(_math_attend, _always, auto_unsupported=lambda r: "a slow reference"))


# ----------------------------------------------------------------------------- choice


def _request(device: torch.device | str, **kw: Any) -> AttentionRequest:
    return AttentionRequest(torch.device(device), **kw)


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       requires_grad: bool = False, head_dim: int | None = None) -> list[str]:
    """Backends that can run on ``device`` with inputs of ``dtype`` (registration order)."""
    req = _request(device, dtype=dtype, requires_grad=requires_grad, head_dim=head_dim, max_segment_len=1)
    return [name for name, entry in BACKENDS.items() if entry.unsupported(req) is None]


def explain_backend(backend: str, request: AttentionRequest) -> tuple[str, str]:
    """``(name, reason)``: the backend that serves ``request`` and one line saying why.

    Raises:
        RegistryError: unknown backend (one line, close names).
        ValueError: an explicitly named backend cannot serve the request (the reason).
    """
    where = request.describe()
    if backend != "auto":
        why = BACKENDS.get(backend).unsupported(request)
        if why is not None:
            raise ValueError(f"attention backend {backend!r} cannot run ({where}): {why}")
        return backend, f"attention {backend!r} ({where}): configured"
    skipped = []
    for name in AUTO_ORDER:
        entry = BACKENDS.get(name)
        why = entry.unsupported(request) or (entry.auto_unsupported(request) if entry.auto_unsupported else None)
        if why is None:
            passed = "; ".join(skipped) if skipped else "first choice"
            return name, f"attention 'auto' -> {name!r} ({where}): {passed}"
        skipped.append(f"not {name}: {why}")
    raise ValueError(f"no attention backend can run ({where}): " + "; ".join(skipped))  # pragma: no cover


def resolve_backend(backend: str, device: torch.device | str, dtype: torch.dtype = torch.float32,
                    requires_grad: bool = False, length: int | None = None, max_segment_len: int | None = None,
                    head_dim: int | None = None) -> str:
    """The concrete backend for ``backend`` (``"auto"`` or a name) and a request (see :func:`explain_backend`)."""
    req = _request(device, dtype=dtype, requires_grad=requires_grad, head_dim=head_dim, length=length,
                   max_segment_len=max_segment_len)
    return explain_backend(backend, req)[0]

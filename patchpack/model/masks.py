"""The segment mask of a packed batch, in the forms the attention backends need.

A token attends only to tokens with the same segment id. Padding (id 0) attends only
to padding, so every query row has at least one key and no row is ever all-masked (no
NaN); real tokens never see padding or another example. :class:`SegmentMask` is built
once per sequence layout (:func:`.attention.build_mask`) and shared by every layer; the
dense forms are built on first use and cached per dtype.

The ``window`` form: the row is cut into chunks of ``C`` queries; each chunk sees the keys
within ``M`` (``max_segment_len``) tokens of it, a static window of ``W = C + 2M`` keys.
Since an example is one contiguous run of at most ``M`` tokens, every same-segment key
lies in the window, so the result equals full segment attention with ``B * L * W``
mask entries instead of ``B * L^2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SegmentMask", "window_chunk", "window_helps"]


def window_chunk(max_segment_len: int) -> int:
    """Queries per chunk of the ``window`` backend for segments of at most ``max_segment_len`` tokens."""
    return max(16, -(-max_segment_len // 16) * 16)


def window_span(max_segment_len: int) -> int:
    """``C + 2M``: keys per window."""
    return window_chunk(max_segment_len) + 2 * max_segment_len


def window_helps(length: int, max_segment_len: int) -> bool:
    """Whether the window is at most half the row (below that its saving outweighs its copies and,
    under ``save_memory``, its recomputation)."""
    return 2 * window_span(max_segment_len) <= length


@dataclass
class SegmentMask:
    """A segment mask in the form its backend needs.

    Attributes:
        backend: concrete backend name.
        segment_ids: int64 ``[B, L]`` (0 = padding).
        reason: why this backend runs (:func:`.backends.explain_backend`).
        max_segment_len: the static bound ``M`` used by ``window`` (else ``None``).
        block_mask: FlexAttention ``BlockMask`` (``flex``).
        cu_seqlens: int32 ``[B * (E + 1) + 1]`` with ``max_seqlen`` (``varlen``).
    """

    backend: str
    segment_ids: torch.Tensor
    reason: str = ""
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
            allowed = self.window_allowed() if self.backend == "window" else self.allowed
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            self._cache[key] = mask.masked_fill_(~allowed, float("-inf"))
        return self._cache[key]

    def window_layout(self) -> tuple[int, int, int, int]:
        """``(chunk C, chunks n, window W, margin M)``; rows are padded to ``n * C``."""
        m = int(self.max_segment_len)
        c = window_chunk(m)
        n = -(-self.shape[1] // c)
        return c, n, c + 2 * m, m

    def window_allowed(self) -> torch.Tensor:
        """bool ``[B * n, 1, C, W]``: the window form of :attr:`allowed`."""
        b, l = self.shape
        c, n, w, m = self.window_layout()
        seg = self.segment_ids
        # positions past the row end get -1: they match only each other, so no query row is empty
        seg_q = F.pad(seg, (0, n * c - l), value=-1).reshape(b, n, c)
        seg_k = F.pad(seg, (m, m + n * c - l), value=-1).unfold(1, w, c)  # [B, n, W]
        return (seg_q[..., :, None] == seg_k[..., None, :]).reshape(b * n, 1, c, w)

"""timm NaFlexViT: ``{patches, patch_coord, patch_valid}``, one example per row."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .common import batch_tensors, gather_examples, token_tubelet

if TYPE_CHECKING:  # pragma: no cover
    from patchpack import PackedBatch

__all__ = ["to_timm_naflex"]


def to_timm_naflex(
    batch: "PackedBatch",
    *,
    max_seq_len: int | None = None,
    patch_size: int | None = None,
    channels: int = 3,
    allow_dropped: bool = False,
) -> dict[str, torch.Tensor]:
    """The layout of timm's ``NaFlexCollator`` (``patches``, ``patch_coord``, ``patch_valid``).

    Args:
        batch: packed images (``T = 1``).
        max_seq_len: row length ``N``; default the longest example (timm's collator pads to its
            ``max_seq_len``, 576 by default: pass the same value to match it).
        patch_size: ``p``; needed only for tokens of a video-enabled loader (``pt`` repeated
            frames, the first is kept). Without it tokens must be ``p*p*C`` wide.
        channels: ``C``.
        allow_dropped: accept examples that lost tokens. timm derives each image's grid from its
            largest kept coordinate (``patch_coord.amax + 1``), so its position embedding then
            matches the full grid only when the last row and column kept a token.

    Returns:
        ``patches`` uint8 ``[n, N, p*p*C]`` (pixel order ``(dy, dx, c)``, timm's default
        ``channels_last``; normalise on the device with ``normalize(x, family)``),
        ``patch_coord`` int64 ``[n, N, 2]`` ``(y, x)``, ``patch_valid`` bool ``[n, N]``; examples
        in batch order (labels: ``batch.labels[batch.grids.prod(-1) > 0]``). Call
        ``model(patches=..., patch_coord=..., patch_valid=...)`` or ``model(out)``.
    """
    ex = gather_examples(*batch_tensors(batch))
    if not allow_dropped:
        ex.require_full("to_timm_naflex (pass allow_dropped=True to accept dropped tokens)")
    if bool((ex.grids[:, 0] > 1).any()):
        raise ValueError("to_timm_naflex takes images only; the batch holds a video example (T > 1)")
    tokens = ex.tokens
    if patch_size is not None:
        pt = token_tubelet(tokens.shape[-1], patch_size, channels)
        if pt > 1:
            tokens = tokens.reshape(tokens.shape[0], pt, -1)[:, 0]
    patches, valid = ex.pad(tokens, max_seq_len, "max_seq_len")
    coord = torch.zeros((*valid.shape, 2), dtype=torch.int64, device=tokens.device)
    coord[valid] = ex.positions[:, 1:]
    return {"patches": patches, "patch_coord": coord, "patch_valid": valid}

"""Qwen2-VL / Qwen2.5-VL: HF's flat patch layout, and the vision tower fed from packed rows.

HF's layout (``Qwen2VLImageProcessor`` / ``Qwen2VLVideoProcessor``) concatenates every example's
tokens into ``pixel_values [sum N, C*tp*p*p]``: inside a token the channel is slowest, then
the ``tp`` frames, then ``p x p`` pixels; tokens go by temporal patch, then by ``m x m``
merge window (row-major over windows), then row-major inside the window. Images are
repeated to ``tp`` frames; a clip whose frame count is not a multiple of ``tp`` repeats its
last frame. Grid sides must be multiples of the merge size ``m``: build the loader with
``grid_multiple=m`` (the rule is :func:`patchpack.fit.image.merge_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from ..fit.image import merge_grid
from .common import Examples, batch_tensors, gather_examples, normalize, token_tubelet

if TYPE_CHECKING:  # pragma: no cover
    from patchpack import PackedBatch

__all__ = ["Qwen2VLInputs", "to_qwen2_vl", "merge_grid", "PackedQwen2VLVision", "PackedQwen2VLOutput"]


@dataclass
class Qwen2VLInputs:
    """A packed batch in Qwen2-VL's layout; ``n`` examples in batch order.

    Attributes:
        pixel_values: uint8 ``[sum N, C*tp*p*p]`` every example's tokens, HF's order (normalise on
            the device with ``normalize(x, "qwen2_vl", channels_first=True)``).
        grid_thw: int64 ``[n, 3]`` ``(T, H, W)`` per example in Qwen's units (``T`` temporal patches
            of ``tp`` frames, ``H, W`` patches).
        cu_seqlens: int32 ``[segments + 1]`` the tower's attention segments over ``pixel_values``,
            no padding: one per temporal patch of each example (= one per image), as HF's
            vision tower computes them from ``grid_thw``.
        is_video: bool ``[n]`` ``T > 1`` (a single temporal patch counts as an image).
        slots: int64 ``[n, 2]`` ``(row, slot)`` of each example in the packed batch.
    """

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    cu_seqlens: torch.Tensor
    is_video: torch.Tensor
    slots: torch.Tensor

    @property
    def token_counts(self) -> torch.Tensor:
        """int64 ``[n]`` tokens per example in ``pixel_values``."""
        return self.grid_thw.prod(dim=1)

    def model_inputs(self, pixel_values: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """HF model keyword arguments: ``pixel_values``/``image_grid_thw`` for images and
        ``pixel_values_videos``/``video_grid_thw`` for videos (keys present when non-empty).

        ``pixel_values`` replaces :attr:`pixel_values` (pass the normalised tensor).
        """
        pv = self.pixel_values if pixel_values is None else pixel_values
        owner = torch.repeat_interleave(self.is_video.to(pv.device), self.token_counts.to(pv.device))
        out: dict[str, torch.Tensor] = {}
        if bool((~self.is_video).any()):
            out["pixel_values"] = pv[~owner]
            out["image_grid_thw"] = self.grid_thw[~self.is_video]
        if bool(self.is_video.any()):
            out["pixel_values_videos"] = pv[owner]
            out["video_grid_thw"] = self.grid_thw[self.is_video]
        return out


def _qwen_tokens(
    x: torch.Tensor, grid: Sequence[int], pt: int, p: int, c: int, tp: int, m: int
) -> tuple[torch.Tensor, int]:
    """One example's raster tokens ``[T*H*W, pt*p*p*C]`` -> HF tokens ``[gt*H*W, C*tp*p*p]``."""
    t, h, w = grid
    frames = x.reshape(t, h, w, pt, p, p, c).permute(0, 3, 1, 4, 2, 5, 6).reshape(t * pt, h * p, w * p, c)
    if pad := -frames.shape[0] % tp:  # repeat the last frame, as HF does (an image becomes tp frames)
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)], dim=0)
    gt = frames.shape[0] // tp
    v = frames.reshape(gt, tp, h // m, m, p, w // m, m, p, c)
    v = v.permute(0, 2, 5, 3, 6, 8, 1, 4, 7)  # (gt, H/m, W/m, m, m, C, tp, p, p)
    return v.reshape(gt * h * w, c * tp * p * p), gt


def _convert(ex: Examples, patch_size: int, temporal_patch_size: int, merge_size: int, channels: int) -> Qwen2VLInputs:
    ex.require_full("to_qwen2_vl")
    p, tp, m, c = int(patch_size), int(temporal_patch_size), int(merge_size), int(channels)
    pt = token_tubelet(ex.tokens.shape[-1], p, c)
    odd = (ex.grids[:, 1] % m != 0) | (ex.grids[:, 2] % m != 0)
    if bool(odd.any()):
        k = int(odd.nonzero()[0])
        raise ValueError(
            f"Qwen2-VL needs grid sides that are multiples of merge_size={m}, but example "
            f"(row {int(ex.slots[k, 0])}, slot {int(ex.slots[k, 1])}) has grid {ex.grids[k].tolist()}; "
            f"build the loader with grid_multiple={m} (the rule is patchpack.fit.image.merge_grid)"
        )
    pieces, grids = [], []
    for k, grid in enumerate(ex.grids.tolist()):
        x = ex.tokens[int(ex.offsets[k]) : int(ex.offsets[k + 1])]
        tokens, gt = _qwen_tokens(x, grid, pt, p, c, tp, m)
        pieces.append(tokens)
        grids.append((gt, grid[1], grid[2]))
    device = ex.tokens.device
    width = c * tp * p * p
    pixel_values = torch.cat(pieces) if pieces else ex.tokens.new_zeros((0, width))
    grid_thw = torch.tensor(grids, dtype=torch.int64, device=device).reshape(-1, 3)
    frame_lens = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    cu = torch.zeros(len(frame_lens) + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(frame_lens, 0)
    return Qwen2VLInputs(pixel_values=pixel_values, grid_thw=grid_thw, cu_seqlens=cu,
                         is_video=grid_thw[:, 0] > 1, slots=ex.slots)


def to_qwen2_vl(
    batch: "PackedBatch",
    patch_size: int,
    *,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    channels: int = 3,
) -> Qwen2VLInputs:
    """A packed batch in Qwen2-VL's flat layout (see the module docstring and :class:`Qwen2VLInputs`).

    Args:
        batch: packed images and/or videos; patchpack tokens of ``pt`` frames (``D = pt*p*p*C``).
        patch_size: ``p``, the loader's and the model's (``vision_config.patch_size``, 14 for Qwen2-VL).
        temporal_patch_size: ``tp`` frames per Qwen token (2 for Qwen2-VL / Qwen2.5-VL).
        merge_size: ``m``, the spatial merge size (2).
        channels: ``C``.

    Raises:
        IncompleteGridError: tokens were dropped (Qwen's rotary positions assume full grids).
        ValueError: a grid side that is not a multiple of ``merge_size``.
    """
    return _convert(gather_examples(*batch_tensors(batch)), patch_size, temporal_patch_size, merge_size, channels)


@dataclass
class PackedQwen2VLOutput:
    """Outputs of :class:`PackedQwen2VLVision`.

    Attributes:
        merged: ``[sum N / m^2, hidden]`` the merger's output (what the language model receives),
            examples in batch order.
        last_hidden_state: ``[sum N, embed_dim]`` the last block's tokens, in HF's token order.
        inputs: the :class:`Qwen2VLInputs` that were fed.
    """

    merged: torch.Tensor
    last_hidden_state: torch.Tensor
    inputs: Qwen2VLInputs

    def per_example(self) -> list[torch.Tensor]:
        """``merged`` split into one ``[N_k / m^2, hidden]`` tensor per example."""
        tokens = self.inputs.token_counts
        merged_counts = (tokens * self.merged.shape[0] // max(1, int(tokens.sum()))).tolist()
        return list(torch.split(self.merged, merged_counts))

    def mean_pooled(self) -> torch.Tensor:
        """``[n, hidden]`` mean of each example's merged tokens."""
        return torch.stack([t.mean(dim=0) for t in self.per_example()])


class PackedQwen2VLVision(nn.Module):
    """A ``transformers`` Qwen2-VL vision tower fed from packed rows through its ``cu_seqlens`` path.

    Args:
        visual: ``Qwen2VisionTransformerPretrainedModel`` (``model.model.visual`` of a
            ``Qwen2VLForConditionalGeneration``); weights unchanged and trained through this wrapper.
        normalization: ``MEAN_STD`` family or ``(mean, std)`` applied to uint8 input.

    ``forward(patches, segment_ids, positions, grids)`` takes a packed batch's tensors; padding
    never reaches the tower, each example attends only to itself. Extra keyword arguments
    (``labels``...) are ignored so ``model(**batch)`` works.
    """

    def __init__(self, visual: nn.Module, normalization: str | tuple[Sequence[float], Sequence[float]] = "qwen2_vl"):
        super().__init__()
        self.visual = visual
        self.normalization = normalization
        cfg = visual.config
        self.patch_size = int(cfg.patch_size)
        self.temporal_patch_size = int(cfg.temporal_patch_size)
        self.merge_size = int(cfg.spatial_merge_size)
        self.channels = int(getattr(cfg, "in_channels", 3))

    def forward(self, patches: torch.Tensor, segment_ids: torch.Tensor, positions: torch.Tensor,
                grids: torch.Tensor, **_: Any) -> PackedQwen2VLOutput:
        ex = gather_examples(patches, segment_ids, positions, grids)
        inputs = _convert(ex, self.patch_size, self.temporal_patch_size, self.merge_size, self.channels)
        dtype = next(self.visual.parameters()).dtype
        pv = inputs.pixel_values
        if pv.is_floating_point():
            x = pv.to(dtype)
        else:
            x = normalize(pv, self.normalization, channels_first=True, dtype=dtype)
        out = self.visual(x, grid_thw=inputs.grid_thw, cu_seqlens=inputs.cu_seqlens)
        return PackedQwen2VLOutput(merged=out.pooler_output, last_hidden_state=out.last_hidden_state, inputs=inputs)

    def encode(self, batch: "PackedBatch") -> PackedQwen2VLOutput:
        """``forward`` on a :class:`~patchpack.PackedBatch` (already on the model's device)."""
        return self(*batch_tensors(batch))

"""SigLIP2 NaFlex: the processor's unpacked layout, and the HF vision tower run on packed rows.

``to_siglip2`` gives what ``transformers``' ``Siglip2ImageProcessor`` gives (one image per
row, padded to ``max_num_patches``). :class:`PackedSiglip2Vision` runs the *unchanged*
weights of a ``Siglip2VisionModel`` on patchpack's packed rows instead: each example's
position-embedding grid is resized to its own ``(H, W)`` exactly as HF does it, attention is
block-diagonal over ``segment_ids``, and the attention-pooling head pools each example on
its own. Per example, its outputs equal the model's on that image alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import batch_tensors, gather_examples, normalize, token_tubelet

if TYPE_CHECKING:  # pragma: no cover
    from patchpack import PackedBatch

__all__ = ["to_siglip2", "PackedSiglip2Vision", "PackedSiglip2Output", "block_attention_mask"]


def _first_frame(tokens: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    pt = token_tubelet(tokens.shape[-1], patch_size, channels)
    return tokens if pt == 1 else tokens.reshape(tokens.shape[0], pt, -1)[:, 0]


def to_siglip2(
    batch: "PackedBatch",
    patch_size: int,
    max_num_patches: int | None = None,
    *,
    channels: int = 3,
) -> dict[str, torch.Tensor]:
    """``Siglip2ImageProcessor``'s layout: one example per row, padded.

    Args:
        batch: a packed batch of images (``T = 1``; tubelet tokens of a video-enabled loader,
            ``pt`` repeated frames, keep their first frame).
        patch_size: ``p`` in pixels (the loader's ``patch_size``).
        max_num_patches: row length ``N``; default the batch's longest example. HF's processor
            pads every image to its ``max_num_patches``: pass the same value to match it.
        channels: ``C``.

    Returns:
        ``pixel_values`` uint8 ``[n, N, p*p*C]`` (pixel order ``(dy, dx, c)``, tokens in raster
        order; normalise on the device with ``normalize(x, "siglip2")``),
        ``pixel_attention_mask`` int32 ``[n, N]`` (1 = real token), ``spatial_shapes`` int64
        ``[n, 2]`` ``(H, W)`` in patches; examples in batch order. Pass them to
        ``Siglip2VisionModel(**out)``.

    Raises:
        IncompleteGridError: tokens were dropped (the processor layout has no positions; use
            :class:`PackedSiglip2Vision`, which takes them).
        ValueError: a video example (``T > 1``) or an example longer than ``max_num_patches``.
    """
    ex = gather_examples(*batch_tensors(batch))
    ex.require_full("to_siglip2")
    if bool((ex.grids[:, 0] > 1).any()):
        raise ValueError("to_siglip2 takes images only; the batch holds a video example (T > 1)")
    tokens = _first_frame(ex.tokens, patch_size, channels)
    pixel_values, valid = ex.pad(tokens, max_num_patches, "max_num_patches")
    mask = valid.to(torch.int32)
    return {"pixel_values": pixel_values, "pixel_attention_mask": mask, "spatial_shapes": ex.grids[:, 1:].clone()}


def block_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive ``[B, 1, L, L]`` mask: 0 where two tokens share a segment, ``-inf``-like elsewhere.

    Padding tokens attend to each other (never to examples), so no row is fully masked.
    """
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
    return torch.where(same, zero, torch.finfo(dtype).min)[:, None]


@dataclass
class PackedSiglip2Output:
    """Outputs of :class:`PackedSiglip2Vision` for ``B`` rows of ``L`` tokens, ``E`` slots.

    Attributes:
        last_hidden_state: ``[B, L, hidden]`` after the post layer norm (padding rows are junk).
        pooler_output: ``[B, E, hidden]`` attention-pooled embedding per slot (``None`` when the
            model has no head; empty slots are junk: select with ``slot_mask``).
        slot_mask: bool ``[B, E]``, true for slots that hold an example.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None
    slot_mask: torch.Tensor

    def pooled(self) -> torch.Tensor:
        """``[n, hidden]`` pooled embeddings of the examples in batch order."""
        if self.pooler_output is None:
            raise ValueError("the vision model has no pooling head (vision_use_head=False)")
        return self.pooler_output[self.slot_mask]


class PackedSiglip2Vision(nn.Module):
    """A ``transformers`` ``Siglip2VisionModel`` run on packed rows, with its weights unchanged.

    Args:
        vision_model: a ``Siglip2VisionModel`` (or ``Siglip2Model.vision_model``); it is kept as a
            submodule, so training this wrapper trains it and ``state_dict`` keys gain a
            ``vision_model.`` prefix.
        normalization: ``MEAN_STD`` family or ``(mean, std)`` applied to uint8 input.

    ``forward(patches, segment_ids, positions, grids)`` takes a packed batch's tensors
    (``patches`` uint8 ``[B, L, p*p*C]`` normalised here, or already-normalised floats) and
    returns a :class:`PackedSiglip2Output`. Extra keyword arguments (``labels``...) are ignored
    so ``model(**batch)`` works. Tokens may have been dropped: positions place them.
    """

    def __init__(
        self, vision_model: nn.Module, normalization: str | tuple[Sequence[float], Sequence[float]] = "siglip2"
    ):
        super().__init__()
        self.vision_model = vision_model
        self.normalization = normalization
        emb = vision_model.embeddings
        self.patch_size = int(emb.patch_size)
        self.pos_side = int(emb.position_embedding_size)

    def _position_embeddings(
        self, grids: torch.Tensor, positions: torch.Tensor, segment_ids: torch.Tensor
    ) -> torch.Tensor:
        """``[B, L, hidden]``: each token's entry of its example's resized position grid."""
        emb = self.vision_model.embeddings
        weight = emb.position_embedding.weight
        dim = weight.shape[-1]
        table = weight.reshape(self.pos_side, self.pos_side, dim).permute(2, 0, 1).unsqueeze(0)
        if table.device.type == "cpu":  # as HF: antialias needs float32 on CPU
            table = table.to(torch.float32)
        b, l = segment_ids.shape
        out = weight.new_zeros((b, l, dim))
        real = segment_ids > 0
        rows, cols = real.nonzero(as_tuple=True)
        slot = segment_ids[rows, cols].long() - 1
        hw = grids[rows, slot, 1:].long()
        pos = positions[rows, cols].long()
        key = hw[:, 0] * (int(hw[:, 1].max()) + 1 if len(hw) else 1) + hw[:, 1]
        keys, which = torch.unique(key, return_inverse=True)
        first = torch.zeros(len(keys), dtype=torch.long, device=key.device).scatter_(
            0, which, torch.arange(len(key), device=key.device))
        tables, offsets, start = [], [], 0
        for h, w in hw[first].tolist():  # one resize per distinct (H, W), as HF does per image
            resized = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            tables.append(resized.reshape(dim, h * w).transpose(0, 1).to(weight.dtype))
            offsets.append(start)
            start += h * w
        if tables:
            index = torch.tensor(offsets, device=key.device)[which] + pos[:, 1] * hw[:, 1] + pos[:, 2]
            out[rows, cols] = torch.cat(tables)[index]
        return out

    def _pool(self, hidden: torch.Tensor, segment_ids: torch.Tensor, slots: int) -> torch.Tensor:
        """The model's attention-pooling head, one probe per slot attending to its own tokens."""
        head = self.vision_model.head
        b, l, dim = hidden.shape
        probe = head.probe.expand(b, slots, dim)
        slot_ids = torch.arange(1, slots + 1, device=hidden.device)
        allowed = segment_ids[:, None, :] == slot_ids[None, :, None]  # [B, E, L]
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # empty slots: anything, discarded
        mask = torch.where(allowed, torch.zeros((), dtype=hidden.dtype, device=hidden.device),
                           torch.finfo(hidden.dtype).min)
        mask = mask.repeat_interleave(head.num_heads, dim=0)  # [B*heads, E, L], batch-major
        pooled = head.attention(probe, hidden, hidden, attn_mask=mask, need_weights=False)[0]
        residual = pooled
        pooled = head.layernorm(pooled)
        return residual + head.mlp(pooled)

    def forward(
        self,
        patches: torch.Tensor,
        segment_ids: torch.Tensor,
        positions: torch.Tensor,
        grids: torch.Tensor,
        **_: Any,
    ) -> PackedSiglip2Output:
        vm = self.vision_model
        weight = vm.embeddings.patch_embedding.weight
        if patches.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"tokens are {patches.shape[-1]} wide but the model takes {weight.shape[1]} "
                f"(patch_size {self.patch_size}); build the loader with the model's patch size and no tubelets"
            )
        if patches.is_floating_point():
            x = patches.to(weight.dtype)
        else:
            x = normalize(patches, self.normalization, dtype=weight.dtype)
        seg = segment_ids.to(x.device)
        pos = self._position_embeddings(grids.to(x.device), positions.to(x.device), seg)
        hidden = vm.embeddings.patch_embedding(x) + pos
        mask = block_attention_mask(seg, hidden.dtype)
        hidden = vm.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
        hidden = vm.post_layernorm(hidden)
        slot_mask = grids.to(x.device).prod(dim=-1) > 0
        pooled = self._pool(hidden, seg, grids.shape[1]) if getattr(vm, "use_head", False) else None
        return PackedSiglip2Output(last_hidden_state=hidden, pooler_output=pooled, slot_mask=slot_mask)

    def encode(self, batch: "PackedBatch") -> PackedSiglip2Output:
        """``forward`` on a :class:`~patchpack.PackedBatch` (already on the model's device)."""
        return self(*batch_tensors(batch))

"""Shared pieces of the converters: finding examples in packed rows, normalisation.

Layout of a packed batch (see :mod:`patchpack.loader.batch`): pixels inside a token are
row-major over ``(dt, dy, dx, c)``; tokens of an example sit in its row's span in raster
order ``(t, y, x)`` (any order once tokens were dropped: ``positions`` says where each one
belongs); ``segment_ids`` is 0 for padding and ``1..E`` for the slot; ``grids [B, E, 3]``
holds each slot's full ``(T, H, W)`` grid in tokens.

Examples are always enumerated in **batch order**: row by row, slot by slot. That is the
order of every converter's outputs; :func:`example_slots` maps them back to ``(row, slot)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from patchpack import PackedBatch

__all__ = [
    "MEAN_STD", "Examples", "IncompleteGridError", "example_slots", "gather_examples", "normalize",
    "token_tubelet",
]

#: ``family -> (mean, std)`` per channel, for pixels scaled to ``[0, 1]``.
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "siglip2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "qwen2_vl": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class IncompleteGridError(ValueError):
    """A converter that needs every token of an example's grid met a batch with dropped tokens."""


def normalize(
    pixels: torch.Tensor,
    family: str | tuple[Sequence[float], Sequence[float]] = "siglip2",
    *,
    channels_first: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(pixels / 255 - mean) / std`` in ``dtype``, on the tensor's device (do it after ``.to(device)``).

    Args:
        pixels: uint8 ``[..., D]`` tokens. With ``channels_first=False`` (patchpack, SigLIP2 and
            timm layouts) the channel is the fastest axis of ``D``; with ``channels_first=True``
            (Qwen2-VL layout) ``D = C * rest`` with the channel slowest.
        family: a key of :data:`MEAN_STD` or an explicit ``(mean, std)`` pair.
        channels_first: where the channel sits inside a token (see above).
        dtype: output floating dtype.
    """
    if isinstance(family, str):
        if family not in MEAN_STD:
            raise ValueError(f"unknown normalisation family {family!r}; expected one of {sorted(MEAN_STD)} "
                             "or a (mean, std) pair")
        mean, std = MEAN_STD[family]
    else:
        mean, std = family
    c = len(mean)
    if len(std) != c:
        raise ValueError("mean and std must have one value per channel")
    d = pixels.shape[-1]
    if d % c:
        raise ValueError(f"token width {d} is not a multiple of {c} channels")
    mean_t = torch.tensor(mean, dtype=dtype, device=pixels.device)
    scale_t = 1.0 / torch.tensor(std, dtype=dtype, device=pixels.device)
    x = pixels.to(dtype) * (1.0 / 255.0)
    if channels_first:
        shaped = x.reshape(*x.shape[:-1], c, d // c)
        return ((shaped - mean_t[:, None]) * scale_t[:, None]).reshape(x.shape)
    shaped = x.reshape(*x.shape[:-1], d // c, c)
    return ((shaped - mean_t) * scale_t).reshape(x.shape)


def token_tubelet(token_dim: int, patch_size: int, channels: int = 3) -> int:
    """``pt`` of tokens ``D = pt * p * p * C`` wide; fails loudly when ``D`` does not fit ``p``."""
    per_frame = patch_size * patch_size * channels
    if token_dim % per_frame or token_dim == 0:
        raise ValueError(
            f"token width {token_dim} is not a multiple of patch_size**2 * channels = {per_frame}; "
            f"pass the loader's patch_size (LoaderConfig.patch_size)"
        )
    return token_dim // per_frame


@dataclass
class Examples:
    """The examples of a packed batch, pulled out of their rows in batch order.

    Attributes:
        tokens: ``[sum N, D]`` every real token, grouped by example (batch order) and sorted
            by raster index ``t*H*W + y*W + x`` inside each example.
        positions: int64 ``[sum N, 3]`` ``(t, y, x)`` of each token.
        counts: int64 ``[n]`` tokens present per example.
        grids: int64 ``[n, 3]`` full ``(T, H, W)`` grid per example.
        slots: int64 ``[n, 2]`` ``(row, slot)`` of each example.
        offsets: int64 ``[n + 1]`` start of each example in ``tokens``.
        rank: int64 ``[sum N]`` index of each token inside its example (0..count-1).
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    counts: torch.Tensor
    grids: torch.Tensor
    slots: torch.Tensor
    offsets: torch.Tensor
    rank: torch.Tensor

    @property
    def full(self) -> torch.Tensor:
        """bool ``[n]``: the example has every token of its grid."""
        return self.counts == self.grids.prod(dim=1)

    def pad(self, tokens: torch.Tensor, width: int | None, option: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One example per row: ``tokens [sum N, D]`` -> ``([n, W, D] zero-padded, bool valid [n, W])``.

        ``W`` is ``width`` or, when ``None``, the longest example; an example longer than
        ``width`` is refused, naming ``option`` (the caller's keyword for ``width``).
        """
        n = int(self.counts.shape[0])
        longest = int(self.counts.max()) if n else 0
        w = longest if width is None else int(width)
        if longest > w:
            raise ValueError(f"an example has {longest} tokens, more than {option}={w}")
        example = torch.repeat_interleave(torch.arange(n, device=tokens.device), self.counts)
        padded = tokens.new_zeros((n, w, tokens.shape[-1]))
        padded[example, self.rank] = tokens
        valid = torch.zeros((n, w), dtype=torch.bool, device=tokens.device)
        valid[example, self.rank] = True
        return padded, valid

    def require_full(self, what: str) -> None:
        """Fail when any example lost tokens, naming the first one."""
        full = self.full
        if bool(full.all()):
            return
        k = int((~full).nonzero()[0])
        row, slot = self.slots[k].tolist()
        raise IncompleteGridError(
            f"{what} needs complete grids, but example (row {row}, slot {slot}) has "
            f"{int(self.counts[k])} of {int(self.grids[k].prod())} tokens (tokens were dropped); "
            "build this loader with token dropping off (DropConfig(kind='none') or training=False)"
        )


def example_slots(segment_ids: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """int64 ``[n, 2]`` ``(row, slot)`` of each example in batch order (slot 0-based).

    A slot holds an example when its grid is non-zero or a token carries its segment id.
    """
    b, e = grids.shape[:2]
    used = grids.prod(dim=-1) > 0
    if segment_ids.numel():
        seen = torch.zeros(b, e + 1, dtype=torch.bool, device=segment_ids.device)
        seen.scatter_(1, segment_ids.long(), True)
        used = used | seen[:, 1:].to(used.device)
    return used.nonzero().to(torch.int64)


def gather_examples(
    patches: torch.Tensor, segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor
) -> Examples:
    """Pull every example's tokens out of packed rows (one gather, no Python loop over examples).

    Args:
        patches: ``[B, L, D]`` tokens (any dtype).
        segment_ids: int ``[B, L]``, 0 = padding, ``1..E`` = slot.
        positions: int ``[B, L, 3]`` ``(t, y, x)``.
        grids: int ``[B, E, 3]`` ``(T, H, W)`` per slot.
    """
    device = patches.device
    b, l = segment_ids.shape
    e = grids.shape[1]
    grids64 = grids.to(device=device, dtype=torch.int64)
    seg = segment_ids.to(device=device, dtype=torch.int64)
    slots = example_slots(seg, grids64)
    n = int(slots.shape[0])
    # example index of each (row, slot)
    slot_to_example = torch.full((b, e), -1, dtype=torch.int64, device=device)
    slot_to_example[slots[:, 0], slots[:, 1]] = torch.arange(n, device=device)
    real = seg > 0
    rows, cols = real.nonzero(as_tuple=True)
    slot = seg[rows, cols] - 1
    example = slot_to_example[rows, slot]
    grid = grids64[rows, slot]
    pos = positions.to(device=device, dtype=torch.int64)[rows, cols]
    raster = (pos[:, 0] * grid[:, 1] + pos[:, 1]) * grid[:, 2] + pos[:, 2]
    span = int(grids64.prod(dim=-1).max()) + l if grids64.numel() else l
    order = torch.argsort(example * span + raster, stable=True)
    example, pos = example[order], pos[order]
    tokens = patches[rows[order], cols[order]]
    counts = torch.bincount(example, minlength=n)
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    rank = torch.arange(len(example), device=device) - offsets[example]
    return Examples(
        tokens=tokens, positions=pos, counts=counts, grids=grids64[slots[:, 0], slots[:, 1]],
        slots=slots, offsets=offsets, rank=rank,
    )


def batch_tensors(batch: "PackedBatch") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(patches, segment_ids, positions, grids)`` of a :class:`~patchpack.PackedBatch`."""
    return batch.patches, batch.segment_ids, batch.positions, batch.grids

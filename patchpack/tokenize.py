"""Patchify images and tubeletize videos, and the exact inverse.

Pixel order inside a token is row-major over ``(dt, dy, dx, c)``: a token is
``video[t*pt:(t+1)*pt, y*p:(y+1)*p, x*p:(x+1)*p, :].reshape(-1)``, so for an image
(``pt = 1``) it is ``image[y*p:(y+1)*p, x*p:(x+1)*p, :].reshape(-1)``. Tokens come
in raster order over the grid: ``t`` slowest, then ``y``, then ``x``. Each token's
position is its grid cell ``(t, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Tokens", "patchify", "tubeletize", "unpatchify", "untubeletize", "grid_positions"]


@dataclass
class Tokens:
    """One tokenized example.

    Attributes:
        key: sample key, for tracing tokens back to their source.
        patches: uint8 ``[N, D]`` with ``D = pt * p * p * C``.
        positions: int32 ``[N, 3]``, the ``(t, y, x)`` grid cell of each token.
        grid: ``(T, H, W)`` grid size in tokens (before any dropping).
        label: the single-class target (``labels [B, E]`` of a batch): the label when the
            example has exactly one, else -1 (unlabelled, or several labels).
        meta: free-form per-example metadata (source shard, original size, ...).
        label_set: every label of the example, in order, without repeats (multi-label data;
            ``targets [B, E, C]`` of a batch). Given only ``label``, it is ``(label,)`` (or
            empty for -1); given a set, ``label`` follows from it.
        fields: the example's text fields by name (``LoaderConfig.fields``; ``None`` for an
            optional field the sample does not have).
        text_ids: token ids of text fields by name, unpadded int32 (stored shards made with a
            tokenizer); ``None`` where the field is ``None``.
    """

    key: str
    patches: np.ndarray
    positions: np.ndarray
    grid: tuple[int, int, int]
    label: int = -1
    meta: dict[str, Any] = field(default_factory=dict)
    label_set: tuple[int, ...] = ()
    fields: dict[str, str | None] = field(default_factory=dict)
    text_ids: dict[str, np.ndarray | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label_set:
            self.label_set = tuple(int(v) for v in self.label_set)
            self.label = self.label_set[0] if len(self.label_set) == 1 else -1
        elif self.label >= 0:
            self.label_set = (int(self.label),)

    def __len__(self) -> int:
        return int(self.patches.shape[0])


def grid_positions(t: int, h: int, w: int) -> np.ndarray:
    """int32 ``[t*h*w, 3]`` raster-order ``(t, y, x)`` coordinates of a ``t x h x w`` grid."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt.ravel(), yy.ravel(), xx.ravel()], axis=1).astype(np.int32)


def tubeletize(video: np.ndarray, patch_size: int, tubelet: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut a video into ``tubelet x p x p`` tokens.

    Args:
        video: ``[T, H, W, C]`` array; ``T``, ``H``, ``W`` must be multiples of
            ``tubelet``, ``patch_size``, ``patch_size`` (the fit stage guarantees it).
        patch_size: spatial side ``p`` in pixels.
        tubelet: temporal depth ``pt`` in frames.

    Returns:
        ``(patches [N, pt*p*p*C], positions int32 [N, 3])`` with ``N = T/pt * H/p * W/p``.
    """
    if video.ndim != 4:
        raise ValueError(f"video must be [T, H, W, C], got shape {video.shape}")
    t, h, w, c = video.shape
    p, pt = int(patch_size), int(tubelet)
    if p < 1 or pt < 1:
        raise ValueError("patch_size and tubelet must be >= 1")
    if t % pt or h % p or w % p or t == 0 or h == 0 or w == 0:
        raise ValueError(
            f"video shape {video.shape} is not a non-empty multiple of (tubelet={pt}, p={p}, p={p})"
        )
    gt, gh, gw = t // pt, h // p, w // p
    if not video.flags.c_contiguous:
        video = np.ascontiguousarray(video)
    # a patch row (p pixels x c channels) stays one contiguous run, so the copy moves p*c bytes at a time
    x = video.reshape(gt, pt, gh, p, gw, p * c).transpose(0, 2, 4, 1, 3, 5)
    patches = np.ascontiguousarray(x).reshape(gt * gh * gw, pt * p * p * c)
    return patches, grid_positions(gt, gh, gw)


def patchify(image: np.ndarray, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut an ``[H, W, C]`` image into ``p x p`` patches: ``(patches [N, p*p*C], positions [N, 3])``.

    Positions have ``t = 0``. ``H`` and ``W`` must be multiples of ``p``.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    return tubeletize(image[None], patch_size, 1)


def untubeletize(
    patches: np.ndarray,
    positions: np.ndarray,
    grid: tuple[int, int, int],
    patch_size: int,
    tubelet: int = 1,
    channels: int = 3,
    fill: int = 0,
) -> np.ndarray:
    """Inverse of :func:`tubeletize`: ``[T, H, W, C]`` with dropped tokens filled with ``fill``.

    ``positions`` may be any subset of the grid, in any order (as after dropping).
    """
    gt, gh, gw = (int(g) for g in grid)
    p, pt = int(patch_size), int(tubelet)
    out = np.full((gt, gh, gw, pt, p, p, channels), fill, dtype=patches.dtype)
    pos = np.asarray(positions).astype(np.int64)
    if len(pos):
        out[pos[:, 0], pos[:, 1], pos[:, 2]] = patches.reshape(-1, pt, p, p, channels)
    return out.transpose(0, 3, 1, 4, 2, 5, 6).reshape(gt * pt, gh * p, gw * p, channels)


def unpatchify(
    patches: np.ndarray,
    positions: np.ndarray,
    grid: tuple[int, int] | tuple[int, int, int],
    patch_size: int,
    channels: int = 3,
    fill: int = 0,
) -> np.ndarray:
    """Inverse of :func:`patchify`: an ``[H, W, C]`` image, dropped patches filled with ``fill``."""
    if len(grid) == 2:
        grid = (1, *grid)
    return untubeletize(patches, positions, grid, patch_size, 1, channels, fill)[0]

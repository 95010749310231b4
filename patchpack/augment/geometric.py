"""Geometric augmentation decided from the header size alone.

:func:`draw_crop` picks a crop box and a horizontal flip for a ``height x width``
source (the size the header reports, after EXIF rotation) before any pixel is decoded.
The fit then runs on the crop's size, so the packer still sees the exact token count,
and the decoder crops (and, for JPEG, DCT-downscales toward the crop's target) while
decoding. A video gets one draw for all of its frames.

Crop (Inception / torchvision ``RandomResizedCrop`` sampling, up to 10 tries): the
area is drawn from ``scale * H * W`` uniformly, the aspect ratio ``w / h``
log-uniformly from ``ratio`` (times the source's own ``W / H`` when
``ratio_relative``), the sides are rounded to integers and the top-left corner is
uniform over the positions that keep the box inside the image. If no try fits,
the fallback is the largest centred box whose aspect ratio is clamped into the
ratio range (the whole image when the source's ratio is in range, which is always
the case for relative ratios). Boxes are integer pixels, at least ``1 x 1``.
"""

from __future__ import annotations

import math

import numpy as np

from ..example import CropBox
from .config import AugmentConfig

__all__ = ["CropBox", "draw_crop", "crop_box", "stored_box", "apply_box"]

_TRIES = 10


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
    relative: bool = True,
) -> tuple[int, int, int, int, bool]:
    """``(top, left, h, w, drawn)`` of a random resized crop of a ``height x width`` source.

    ``drawn`` is False when every try failed and the centred fallback was used (module doc).
    """
    if height < 1 or width < 1:
        raise ValueError(f"source size must be positive, got {height}x{width}")
    area = float(height * width)
    base = width / height if relative else 1.0
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_TRIES):
        target = area * float(rng.uniform(scale[0], scale[1]))
        aspect = base * math.exp(float(rng.uniform(log_lo, log_hi)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w, True
    own = width / height
    lo, hi = base * ratio[0], base * ratio[1]
    if own < lo:
        w, h = width, int(round(width / lo))
    elif own > hi:
        h, w = height, int(round(height * hi))
    else:
        h, w = height, width
    h, w = min(max(h, 1), height), min(max(w, 1), width)
    return (height - h) // 2, (width - w) // 2, h, w, False


def draw_crop(height: int, width: int, cfg: AugmentConfig, rng: np.random.Generator) -> CropBox:
    """The geometric draw of one example: a crop box (the whole source without ``cfg.crop``)
    and a flip with probability ``cfg.hflip``. Sizes in pixels, displayed orientation."""
    if cfg.crop:
        top, left, h, w, _ = crop_box(height, width, cfg.scale, cfg.ratio, rng, cfg.ratio_relative)
    else:
        top, left, h, w = 0, 0, int(height), int(width)
    flip = bool(cfg.hflip > 0 and rng.random() < cfg.hflip)
    return CropBox(top, left, h, w, flip)


def stored_box(box: CropBox, height: int, width: int, orientation: int = 1) -> tuple[int, int, int, int]:
    """The box in the *stored* (unrotated) image, as Pillow's ``(left, upper, right, lower)``.

    ``height x width`` is the displayed size; ``orientation`` is the EXIF tag (1..8) that
    turns the stored image into the displayed one.
    """
    t, l, h, w = box.top, box.left, box.height, box.width
    b, r = t + h, l + w
    H, W = height, width
    return {
        1: (l, t, r, b),
        2: (W - r, t, W - l, b),
        3: (W - r, H - b, W - l, H - t),
        4: (l, H - b, r, H - t),
        5: (t, l, b, r),
        6: (t, W - r, b, W - l),
        7: (H - b, W - r, H - t, W - l),
        8: (H - b, l, H - t, r),
    }.get(orientation, (l, t, r, b))


def apply_box(pixels: np.ndarray, box: CropBox) -> np.ndarray:
    """Crop (and flip) uint8 ``[F, H, W, C]`` or ``[H, W, C]`` pixels in displayed orientation.

    The result is a view where possible; the reference for what decoding with a box gives
    before the resize.
    """
    crop = pixels[..., box.top:box.top + box.height, box.left:box.left + box.width, :]
    return crop[..., ::-1, :] if box.flip else crop

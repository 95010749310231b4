"""Pillow pixel modes brought to ``L``, ``RGB`` or ``RGBA`` before resizing.

* ``1``/``P``/``CMYK``/``YCbCr``/``LAB``/``HSV``/``LA``/``PA``/``RGBX`` are converted (``P`` with a
  ``transparency`` entry and the alpha modes to ``RGBA``, which is composited onto the background
  after the resize or box reduction);
* wide single-channel modes are rescaled to 8 bits, not clamped (:func:`to_8bit`): ``I;16*``
  as ``v * 255 / 65535`` rounded; ``I`` over ``max(65535, peak)``; ``F`` scaled from ``[0, 1]`` (or
  clipped to ``[0, 255]`` when its range is larger). They are box-averaged by a reduction factor
  while rescaled, in strips of rows, so no full-size int64/float64 copy ever exists.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from PIL import Image

__all__ = ["to_8bit", "normalise_mode", "is_wide"]

#: pixels per strip when wide modes are rescaled (bounds the float64 temporaries to ~8 MB)
_STRIP_PIXELS = 1 << 20


def is_wide(mode: str) -> bool:
    """A single channel of more than 8 bits (``I``, ``F``, ``I;16*``)."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _wide_strips(im: Image.Image, rows: int) -> Iterator[np.ndarray]:
    w, h = im.size
    for y in range(0, h, rows):
        yield np.asarray(im.crop((0, y, w, min(h, y + rows))))


def _wide_scale(im: Image.Image, rows: int) -> float:
    """The factor that takes a wide mode's values to 0..255 (module doc)."""
    if im.mode == "F":
        peak = max((float(np.nan_to_num(s, nan=0.0, posinf=255.0, neginf=0.0).max(initial=0.0))
                    for s in _wide_strips(im, rows)), default=0.0)
        return 255.0 if peak <= 1.0 else 1.0
    peak = 65535 if im.mode.startswith("I;16") else max(
        65535, max((int(s.max(initial=0)) for s in _wide_strips(im, rows)), default=0))
    return 255.0 / peak


def to_8bit(im: Image.Image, reduce: int = 1) -> Image.Image:
    """A wide single-channel image as ``L``, rescaled (module doc) and box-averaged by ``reduce``
    (partial boxes at the right and bottom edges average the pixels they hold)."""
    w, h = im.size
    k = max(1, int(reduce))
    rows = max(k, _STRIP_PIXELS // max(w, 1) // k * k)
    scale = _wide_scale(im, rows)
    out = np.empty((-(-h // k), -(-w // k)), np.uint8)
    cols = np.arange(0, w, k)
    col_n = np.minimum(k, w - cols)
    y = 0
    for strip in _wide_strips(im, rows):
        a = strip.astype(np.float64)
        if im.mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if k > 1:
            starts = np.arange(0, len(a), k)
            a = np.add.reduceat(np.add.reduceat(a, starts, axis=0), cols, axis=1)
            a /= np.minimum(k, len(strip) - starts)[:, None] * col_n[None, :]
        out[y // k: y // k + len(a)] = np.clip(np.rint(a * scale), 0, 255)
        y += len(strip)
    return Image.fromarray(out)


def normalise_mode(im: Image.Image, reduce: int = 1) -> Image.Image:
    """An ``RGB``, ``L`` or ``RGBA`` image (``RGBA`` only when there is alpha); wide modes are
    box-reduced by ``reduce`` while they are rescaled (other modes are not reduced here)."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA"):
        return im
    if is_wide(mode):
        return to_8bit(im, reduce)
    if mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        return im.convert("RGBA") if mode != "RGBX" else im.convert("RGB")
    if mode == "P":
        return im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...

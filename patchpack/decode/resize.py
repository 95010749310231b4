"""Resizing decoded pixels with OpenCV: an antialiasing prefilter, then one cubic step, exact geometry.

:func:`resize_region` maps a region of a decoded image (``(x0, y0, x1, y1)`` in its pixels,
fractions allowed) onto exactly ``(h, w)`` output pixels:

1. **antialiasing prefilter** (:func:`antialias_kernel`): OpenCV's ``INTER_CUBIC`` samples a
   fixed 4 x 4 neighbourhood, so on a downscale by ``r`` (input pixels per output pixel) every
   frequency between the output's Nyquist limit ``1/(2r)`` and the input's aliases. Before the
   cubic step the image is filtered (``cv2.sepFilter2D``, separable) with a Lanczos-windowed sinc
   low-pass whose cutoff is the output's Nyquist limit::

       h[n] = 2 f_c sinc(2 f_c (n - d)) * sinc((n - d) / a),   f_c = 1 / (2 r),  a = 2 r + 1,
       |n| <= ceil(2 r),  normalised to sum 1,

   where ``d`` is a sub-pixel shift (below). It runs only when ``r`` exceeds
   :data:`PREFILTER_FROM` or a shift is needed: a JPEG decoded at a DCT scale is within 2x of
   its target, so this is a 5-9 tap filter over an image at most 4x the output's pixels;
2. **the cubic step** (``cv2.resize``, ``INTER_CUBIC``) with the scale given as ``fx, fy``
   rather than as a size: OpenCV then maps output pixel ``x`` to input ``(x + 0.5) / fx - 0.5``
   with exactly that scale, so a region that ends inside a pixel (a JPEG decoded at 1/8 covers
   ``ceil(W / 8) * 8`` source pixels, not ``W``; a crop box drawn in source pixels) is resampled
   where it lies instead of being stretched over whole pixels. The region's fractional start
   ``d`` is folded into the prefilter as a sub-pixel shift.

Scales over 2x are for the caller to bring down first with an integer box reduction
(:func:`box_factor`; the decoder uses Pillow's ``Image.reduce`` on its own buffer, which is
faster than reading the full-size image into numpy first): the box leaves a remaining scale in
``[BOX_GAP, 2 * BOX_GAP)`` where its passband droop is small, and the prefilter removes what it
lets alias. Measured against a full decode + Pillow ``LANCZOS`` on textured photos
(``tests/decode/test_resize_quality.py``): a plain box-then-cubic path loses 5-14 dB on sharp
images; this one is above Pillow's antialiased bicubic on the median for every format, within
~1 dB of it or above on every image from a scale of 1.2, and up to ~3 dB below it at near-unity
scales (no antialiasing needed there: OpenCV's cubic is Keys ``a = -0.75``, Pillow's ``a = -0.5``,
which like Lanczos reproduces quadratics; all such cases measured above 43 dB).

OpenCV runs its own thread pool; loader workers and decode threads already use the cores, so
:func:`use_one_opencv_thread` sets ``cv2.setNumThreads(1)`` once per process (the setting is
process-wide in OpenCV's pthreads builds, and a forked worker gets its own process).
"""

from __future__ import annotations

import functools
import math
import os

import cv2
import numpy as np

__all__ = ["resize_region", "antialias_kernel", "box_factor", "use_one_opencv_thread", "pixel_view",
           "BOX_GAP", "PREFILTER_FROM"]

#: A box reduction runs first while the remaining scale would stay at least this large.
BOX_GAP = 2.0
#: The antialiasing prefilter runs from this downscale factor on (below it, its cutoff is so near
#: the input's Nyquist rate that it changes little; measured: no image gains from it there).
PREFILTER_FROM = 1.2
#: Half-width of the prefilter's window in output pixels (taps: ``2 * ceil(LOBES * r) + 1``).
LOBES = 2.0

_threads_set_in: int | None = None  # pid of the process whose OpenCV pool was set to one thread


def use_one_opencv_thread() -> None:
    """``cv2.setNumThreads(1)``, once per process (threads and workers of a loader already fill the cores)."""
    global _threads_set_in
    pid = os.getpid()
    if _threads_set_in != pid:
        cv2.setNumThreads(1)
        _threads_set_in = pid


def box_factor(scale: float, gap: float = BOX_GAP) -> int:
    """The integer box reduction to run before the cubic step for a downscale by ``scale``:
    ``floor(scale / gap)`` when that is at least 2, else 1 (none)."""
    k = int(scale // gap) if scale > 0 else 1
    return k if k >= 2 else 1


@functools.lru_cache(maxsize=4096)
def _kernel(scale: float, shift: float, lobes: float) -> np.ndarray:
    r = max(scale, 1.0)
    fc = 0.5 / r
    window = lobes * r + 1.0
    n = np.arange(-math.ceil(lobes * r), math.ceil(lobes * r) + 1, dtype=np.float64)
    t = n - shift
    taps = 2.0 * fc * np.sinc(2.0 * fc * t) * np.sinc(np.clip(t / window, -1.0, 1.0))
    taps = (taps / taps.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps


def antialias_kernel(scale: float, shift: float = 0.0) -> np.ndarray:
    """float32 taps of the Lanczos-windowed sinc low-pass for a downscale by ``scale`` (see module doc),
    sampled at ``n - shift`` so that filtering also moves the image by ``shift`` pixels
    (``dst[x] = (g * src)(x + shift)``, ``g`` the centred kernel)."""
    return _kernel(round(float(scale), 4), round(float(shift), 4), LOBES)


def _axis(start: float, stop: float, out: int, length: int, margin: int):
    """For one axis: ``(first pixel kept, pixels kept, shift, scale, margin before, margin after)``."""
    scale = (stop - start) / out
    first = int(round(start))
    shift = start - first
    kept = min(length - first, math.ceil((out + 0.5) * scale + shift) + 1)
    before = min(margin, first)
    after = max(0, min(margin, length - first - kept))
    return first, kept, shift, scale, before, after


def resize_region(pixels: np.ndarray, region: tuple[float, float, float, float], size: tuple[int, int],
                  fraction_bits: int = 0) -> np.ndarray:
    """``region`` of ``pixels`` (``[H, W]`` or ``[H, W, C]`` uint8; ``(x0, y0, x1, y1)`` in pixels,
    inside the image) resampled to exactly ``size = (h, w)``: prefilter, then ``INTER_CUBIC``
    (module doc). Returns a new ``[h, w(, C)]`` uint8 array, or with ``fraction_bits`` an int16 one
    holding the values times ``2 ** fraction_bits``, unrounded (for a later step that must not
    round twice, such as compositing premultiplied alpha)."""
    use_one_opencv_thread()
    h, w = int(size[0]), int(size[1])
    x0, y0, x1, y1 = (float(v) for v in region)
    height, width = pixels.shape[:2]
    if (x0, y0, x1, y1) == (0.0, 0.0, float(width), float(height)) and (height, width) == (h, w):
        return pixels.astype(np.int16) << fraction_bits if fraction_bits else pixels.copy()
    margin = math.ceil(2.0 * max((x1 - x0) / w, (y1 - y0) / h, 1.0)) + 1
    fx_, nx, dx, rx, bx, ax = _axis(x0, x1, w, width, margin)
    fy_, ny, dy, ry, by, ay = _axis(y0, y1, h, height, margin)
    depth, gain = (cv2.CV_16S, float(1 << fraction_bits)) if fraction_bits else (-1, 1.0)
    if max(rx, ry) > PREFILTER_FROM or abs(dx) > 1e-3 or abs(dy) > 1e-3:
        # filter the kept pixels with real neighbours around them, then cut the margins off
        roi = pixels[fy_ - by: fy_ + ny + ay, fx_ - bx: fx_ + nx + ax]
        roi = cv2.sepFilter2D(roi, depth, antialias_kernel(rx, dx) * gain, antialias_kernel(ry, dy),
                              borderType=cv2.BORDER_REPLICATE)
        roi = roi[by: by + ny, bx: bx + nx]
    else:
        roi = pixels[fy_: fy_ + ny, fx_: fx_ + nx]
        roi = roi.astype(np.int16) << fraction_bits if fraction_bits else roi
    fx, fy = 1.0 / rx, 1.0 / ry
    short_x = max(0, math.ceil(w / fx) + 1 - roi.shape[1]) if round(roi.shape[1] * fx) < w else 0
    short_y = max(0, math.ceil(h / fy) + 1 - roi.shape[0]) if round(roi.shape[0] * fy) < h else 0
    if short_x or short_y:  # the region reaches the image's last pixel: OpenCV needs whole ones past it
        roi = cv2.copyMakeBorder(roi, 0, short_y, 0, short_x, cv2.BORDER_REPLICATE)
    out = cv2.resize(roi, None, fx=fx, fy=fy, interpolation=cv2.INTER_CUBIC)
    return out[:h, :w]


def pixel_view(im) -> np.ndarray:
    """``[H, W, C]`` uint8 pixels of a Pillow ``L``, ``RGB``, ``RGBA`` or ``RGBa`` image, without a copy
    where Pillow can lend its buffer (Arrow C data interface, Pillow >= 11.2, images in one memory
    block; ``RGB`` then comes as 4 channels ``RGBX``). Otherwise a copy (``np.asarray``, which
    costs ~1 ms for a 600 x 400 image: Pillow packs it through its encoder)."""
    try:
        import pyarrow as pa

        arr = pa.array(im)
        values = arr.values if pa.types.is_fixed_size_list(arr.type) else arr
        flat = np.frombuffer(values.buffers()[1], np.uint8)
    except Exception:  # older Pillow, an image in several blocks, or a mode Arrow does not take
        a = np.asarray(im)
        return a if a.ndim == 3 else a[:, :, None]
    w, h = im.size
    return flat[: w * h * (len(flat) // (w * h))].reshape(h, w, -1)

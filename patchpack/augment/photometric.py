"""Photometric augmentation on decoded pixels: colour jitter, grayscale, a RandAugment
subset that keeps the size, and a user hook.

Every function takes uint8 ``[F, H, W, 3]`` (or ``[H, W, 3]``) pixels and returns uint8
pixels of the same shape. Parameters are computed with numpy; the per-pixel work runs in
Pillow's C loops (one affine colour matrix, 768-entry lookup tables, histograms), frame
by frame, rounded and clipped to ``0..255``. A video is treated as one example:
one draw of every factor for all frames, and the statistics of ``autocontrast`` /
``equalize`` are taken over the whole clip so frames stay consistent.

Definitions (``level = magnitude / 10``):

* brightness ``b``: ``x * b``; contrast ``c``: ``m + c * (x - m)`` with ``m`` the mean
  luma of each frame; saturation ``s``: ``g + s * (x - g)`` with ``g`` the luma of each
  pixel (ITU-R 601: ``0.299 R + 0.587 G + 0.114 B``); hue ``h`` (turns): a rotation by
  ``2 pi h`` of the chroma plane in YIQ space (a linear approximation of an HSV hue
  shift). Jitter applies the four in a random order, as torchvision's ``ColorJitter``,
  composed into one affine colour map (so values are clipped once, at the end).
* autocontrast: each channel stretched to ``0..255`` (constant channels unchanged);
  equalize: Pillow's ``ImageOps.equalize`` per channel; posterize: keep
  ``8 - round(4 * level)`` bits; solarize: invert values ``>= 256 * (1 - level)``;
  sharpness: blend with Pillow's 3x3 smoothing kernel (borders kept) by ``1 +/- 0.9 level``;
  brightness / contrast / color (saturation): factor ``1 +/- 0.9 level``. The sign of
  signed operations is drawn per example.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

from .config import AugmentConfig

__all__ = [
    "TransformError",
    "apply_pixels",
    "color_jitter",
    "grayscale",
    "autocontrast",
    "equalize",
    "posterize",
    "solarize",
    "sharpness",
    "rand_augment",
    "run_transform",
]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64)
_YIQ_INV = np.linalg.inv(_YIQ)


class TransformError(ValueError):
    """The user ``transform`` hook returned something other than uint8 pixels of the input's shape."""


def _frames(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 [F, H, W, 3] or [H, W, 3] pixels, got {pixels.dtype} {pixels.shape}")
    return pixels


def _images(px: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(np.ascontiguousarray(f)) for f in px.reshape(-1, *px.shape[-3:])]


def _stack(images: list[Image.Image], shape: tuple[int, ...]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).reshape(shape)


def _histogram(images: list[Image.Image]) -> np.ndarray:
    """int64 ``[3, 256]`` colour histogram over all frames."""
    return np.sum([np.asarray(im.histogram(), np.int64).reshape(3, 256) for im in images], axis=0)


def _apply_lut(px: np.ndarray, lut: np.ndarray, images: list[Image.Image] | None = None) -> np.ndarray:
    """Map every channel value through ``lut`` (``[3, 256]`` or ``[256]``, values 0..255)."""
    lut = np.broadcast_to(np.asarray(lut), (3, 256))
    table = [int(v) for v in np.clip(lut, 0, 255).reshape(-1)]
    return _stack([im.point(table) for im in (images or _images(px))], px.shape)


def _affine(px: np.ndarray, ops: list[tuple[str, float]], images: list[Image.Image] | None = None) -> np.ndarray:
    """Apply ``ops`` (``(name, value)``, name in brightness/contrast/saturation/hue) as one
    composed affine colour map per frame, rounded and clipped once."""
    images = images or _images(px)
    levels = np.arange(256, dtype=np.float64)
    mu = np.stack([np.asarray(im.histogram(), np.float64).reshape(3, 256) @ levels for im in images])
    mu /= px.shape[-3] * px.shape[-2]
    m, v = _jitter_matrices(mu, ops)
    out = []
    for i, im in enumerate(images):
        matrix = tuple(float(c) for row in np.concatenate([m, v[i][:, None]], axis=1) for c in row)
        out.append(im.convert("RGB", matrix))
    return _stack(out, px.shape)


def _jitter_matrices(mu: np.ndarray, ops: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Compose colour operations into one affine map per frame: ``x -> M x + v[f]``.

    ``mu``: float ``[F, 3]`` mean colour of each input frame. Brightness, saturation and
    hue are linear; contrast adds the frame's current mean luma, known from ``mu`` and
    the map so far.
    """
    n = len(mu)
    m = np.eye(3)
    v = np.zeros((n, 3))
    luma = _LUMA
    for name, f in ops:
        off = np.zeros((n, 3))
        if name == "brightness":
            step = f * np.eye(3)
        elif name == "saturation":
            step = f * np.eye(3) + (1 - f) * np.outer(np.ones(3), luma)
        elif name == "hue":
            a = 2 * math.pi * f
            rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
            step = _YIQ_INV @ rot @ _YIQ
        elif name == "contrast":  # blend with the current mean luma of each frame
            mean = (mu @ m.T + v) @ luma  # [F]
            step, off = f * np.eye(3), np.outer((1 - f) * mean, np.ones(3))
        else:
            raise ValueError(f"unknown colour operation {name!r}")
        m, v = step @ m, v @ step.T + off
    return m, v


def _factor(rng: np.random.Generator, strength: float) -> float:
    return float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))


def color_jitter(pixels: np.ndarray, rng: np.random.Generator, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> np.ndarray:
    """Random brightness, contrast, saturation and hue (module doc), in a random order,
    composed into one affine colour map per frame (Pillow's matrix conversion)."""
    px = _frames(pixels)
    ops = []
    if brightness:
        ops.append(("brightness", _factor(rng, brightness)))
    if contrast:
        ops.append(("contrast", _factor(rng, contrast)))
    if saturation:
        ops.append(("saturation", _factor(rng, saturation)))
    if hue:
        ops.append(("hue", float(rng.uniform(-hue, hue))))
    if not ops:
        return px
    return _affine(px, [ops[int(i)] for i in rng.permutation(len(ops))])


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, rounded, in all three channels."""
    px = _frames(pixels)
    return _stack([im.convert("L").convert("RGB") for im in _images(px)], px.shape)


def autocontrast(pixels: np.ndarray) -> np.ndarray:
    """Stretch each channel to ``0..255`` (over the whole clip); constant channels unchanged."""
    px = _frames(pixels)
    images = _images(px)
    hist = _histogram(images)
    levels = np.arange(256)
    lut = np.empty((3, 256), np.int64)
    for c in range(3):
        present = np.flatnonzero(hist[c])
        lo, hi = (present[0], present[-1]) if len(present) else (0, 0)
        lut[c] = levels if hi <= lo else np.rint((levels - lo) * (255.0 / (hi - lo)))
    return _apply_lut(px, lut, images)


def equalize(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation per channel over the whole clip (Pillow ``ImageOps.equalize``)."""
    px = _frames(pixels)
    images = _images(px)
    hist = _histogram(images)
    lut = np.tile(np.arange(256), (3, 1))
    for c in range(3):
        nonzero = hist[c][hist[c] > 0]
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 255 if len(nonzero) else 0
        if step:
            before = np.concatenate([[0], np.cumsum(hist[c])[:-1]])
            lut[c] = np.minimum((before + step // 2) // step, 255)
    return _apply_lut(px, lut, images)


def posterize(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` (1..8) bits of every value."""
    bits = int(min(max(bits, 1), 8))
    return _frames(pixels) & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(pixels: np.ndarray, threshold: float) -> np.ndarray:
    """Invert every value ``>= threshold``."""
    levels = np.arange(256)
    return _apply_lut(_frames(pixels), np.where(levels >= threshold, 255 - levels, levels))


def sharpness(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Blend with a 3x3 smoothed copy (Pillow ``ImageEnhance.Sharpness``: borders kept) by ``factor``."""
    px = _frames(pixels)
    return _stack([ImageEnhance.Sharpness(im).enhance(factor) for im in _images(px)], px.shape)


def _signed(rng: np.random.Generator, level: float) -> float:
    return 1.0 + (0.9 * level if rng.random() < 0.5 else -0.9 * level)


def rand_augment(pixels: np.ndarray, rng: np.random.Generator, ops: int, magnitude: float,
                 choices: tuple[str, ...]) -> np.ndarray:
    """``ops`` operations drawn with replacement from ``choices`` at ``magnitude`` (0..10)."""
    px = _frames(pixels)
    level = float(magnitude) / 10.0
    for i in rng.integers(0, len(choices), size=int(ops)):
        name = choices[int(i)]
        if name == "autocontrast":
            px = autocontrast(px)
        elif name == "equalize":
            px = equalize(px)
        elif name == "posterize":
            px = posterize(px, 8 - int(round(4 * level)))
        elif name == "solarize":
            px = solarize(px, 256.0 * (1.0 - level))
        elif name == "sharpness":
            px = sharpness(px, _signed(rng, level))
        elif name in ("brightness", "contrast", "color"):
            px = _affine(px, [(name if name != "color" else "saturation", _signed(rng, level))])
    return px


def run_transform(transform, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Call the user hook and check it kept the shape and dtype.

    Raises:
        TransformError: when the hook returns a non-array or another shape or dtype.
    """
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    shape = pixels.shape
    out = transform(pixels, rng)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.uint8:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise TransformError(
            f"augment transform returned {got} for uint8 {shape}: it must return uint8 pixels of the same "
            "shape (size changes belong to the crop, which is decided before decoding)"
        )
    return out


def apply_pixels(pixels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Everything ``cfg`` does after decoding, in order: jitter, grayscale, RandAugment, user hook.

    ``pixels``: uint8 ``[F, H, W, 3]``; the result has the same shape and dtype.
    """
    px = _frames(pixels)
    px = color_jitter(px, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    if cfg.grayscale and rng.random() < cfg.grayscale:
        px = grayscale(px)
    if cfg.rand_ops:
        px = rand_augment(px, rng, cfg.rand_ops, cfg.rand_magnitude, cfg.rand_choices)
    if cfg.transform is not None:
        px = run_transform(cfg.transform, px, rng)
    return px

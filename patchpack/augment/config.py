"""Augmentation options: one dataclass, documented defaults.

The defaults are the usual ImageNet-style training recipe adapted to native aspect
ratio: a random resized crop of 8-100 % of the area whose aspect ratio stays within
3/4-4/3 of the *source's own* aspect ratio (the fit then keeps the crop's aspect, so
nothing is squashed), a horizontal flip half of the time and a mild colour jitter.
Grayscale, the RandAugment subset and the user hook are off until asked for.

The loader applies a config only while training (``LoaderConfig.training``); an
evaluation loader decodes the full image with no augmentation whatever this says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..rng import CROP_STREAM, PIXEL_STREAM

__all__ = ["AugmentConfig", "RAND_OPS"]

#: size-preserving RandAugment operations (see :mod:`patchpack.augment.photometric`)
RAND_OPS = ("identity", "autocontrast", "equalize", "posterize", "solarize", "sharpness", "brightness",
            "contrast", "color")



def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (all randomness per example, from ``(seed, epoch, key)``).

    Geometric (decided from the header, before any decode; videos get one draw for all frames):
        crop: random resized crop on/off.
        scale: range of the crop's area as a fraction of the source area.
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        ratio_relative: ``True``: ``ratio`` multiplies the source's own aspect ratio, so a
            crop keeps the native aspect up to the range; ``False``: absolute ratios
            (Inception / torchvision ``RandomResizedCrop``).
        hflip: probability of a horizontal flip.

    Photometric (on decoded uint8 pixels, one draw per example, same for every frame):
        brightness, contrast, saturation: jitter strength ``s``; the factor is drawn from
            ``U(max(0, 1 - s), 1 + s)`` (0 = off).
        hue: hue shift drawn from ``U(-hue, hue)`` in turns (0..0.5; 0 = off).
        grayscale: probability of converting to grayscale (3 equal channels).
        rand_ops: RandAugment operations applied per example (0 = off), chosen from
            ``rand_choices`` with replacement.
        rand_magnitude: RandAugment strength, 0..10 (timm / torchvision scale).
        rand_choices: the operations to choose from, names from :data:`RAND_OPS`.
        transform: user hook ``transform(pixels, rng) -> pixels`` on uint8 ``[F, H, W, 3]``,
            run last; it must return the same shape and dtype (else
            :class:`~patchpack.augment.photometric.TransformError`). With DataLoader
            workers it must be picklable (a module-level function).
    """

    crop: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ratio_relative: bool = True
    hflip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0
    grayscale: float = 0.0
    rand_ops: int = 0
    rand_magnitude: float = 9.0
    rand_choices: tuple[str, ...] = RAND_OPS
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None

    def __post_init__(self) -> None:
        lo, hi = _pair("scale", self.scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        rlo, rhi = _pair("ratio", self.ratio)
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio!r}")
        object.__setattr__(self, "scale", (lo, hi))
        object.__setattr__(self, "ratio", (rlo, rhi))
        for name in ("hflip", "grayscale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue is a shift in turns in [0, 0.5], got {self.hue!r}")
        if self.rand_ops < 0:
            raise ValueError("rand_ops must be >= 0")
        if not 0.0 <= self.rand_magnitude <= 10.0:
            raise ValueError(f"rand_magnitude is on the 0..10 scale, got {self.rand_magnitude!r}")
        unknown = sorted(set(self.rand_choices) - set(RAND_OPS))
        if unknown or not self.rand_choices:
            raise ValueError(f"rand_choices must be a non-empty subset of {RAND_OPS}, got unknown {unknown}")
        object.__setattr__(self, "rand_choices", tuple(self.rand_choices))
        if self.transform is not None and not callable(self.transform):
            raise TypeError("transform must be a callable transform(pixels, rng) -> pixels or None")

    @property
    def geometric(self) -> bool:
        """Whether a header-time draw (crop or flip) can change the example."""
        return self.crop or self.hflip > 0

    @property
    def photometric(self) -> bool:
        """Whether anything runs on the decoded pixels."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue or self.grayscale
                    or self.rand_ops or self.transform is not None)

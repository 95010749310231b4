"""Training-time augmentation as a stage between the header and the fit.

Geometric augmentation (:mod:`~patchpack.augment.geometric`: random resized crop,
horizontal flip) is drawn from the header size alone, so the fit runs on the crop's
size and the packer still knows each example's exact token count before any pixel
exists; the decoder then crops (and DCT-downscales JPEGs toward the crop's target).
Photometric augmentation (:mod:`~patchpack.augment.photometric`: colour jitter,
grayscale, a size-preserving RandAugment subset, a user ``transform(pixels, rng)``
hook) runs on the decoded uint8 pixels before they are cut into tokens.

Everything is seeded per example: the geometric draw from the stream
:data:`patchpack.rng.CROP_STREAM` and the pixel draws from :data:`patchpack.rng.PIXEL_STREAM` of
``patchpack.rng.example_rng(seed, epoch, key, stream)``, so results do not depend on
worker count or arrival order. Only numpy here.
"""

from .config import RAND_OPS, AugmentConfig
from .geometric import CropBox, apply_box, crop_box, draw_crop, stored_box
from .photometric import TransformError, apply_pixels

__all__ = [
    "AugmentConfig",
    "CropBox",
    "TransformError",
    "RAND_OPS",
    "draw_crop",
    "crop_box",
    "stored_box",
    "apply_box",
    "apply_pixels",
]

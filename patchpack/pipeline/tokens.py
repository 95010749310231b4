"""One held example's tokens: pixels at the planned size, augmented, cut into tokens, dropped.

:func:`example_tokens` is the per-example work the decode threads run. It is a pure function
of the example and its source's config (passed in, never read from shared state), so any
number of threads gives the same tokens.
"""

from __future__ import annotations

import numpy as np

from .. import decode
from ..augment import apply_pixels
from ..config import LoaderConfig
from ..drop import drop_tokens
from ..errors import SampleError
from ..example import Plan
from ..rng import DROP_STREAM, PIXEL_STREAM, example_rng
from ..tokenize import Tokens, tubeletize
from .held import Held

__all__ = ["example_tokens", "pixels_to_tokens"]


def pixels_to_tokens(data: bytes, plan: Plan, cfg: LoaderConfig, pixel_rng: np.random.Generator | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels at the planned size, photometric augmentation (``cfg.active_augment``, drawing from
    ``pixel_rng``), cut into tokens: ``(patches [N, D], positions [N, 3])``.

    Raises:
        SampleError: from decoding, or ``corrupt`` when the pixels do not tile.
        TransformError: the user hook changed the shape or dtype (a mistake, not bad data).
    """
    frames = decode.materialize(data, plan, cfg.image, cfg.video)
    aug = cfg.active_augment
    if aug is not None and aug.photometric:
        frames = apply_pixels(frames, aug, pixel_rng)
    try:
        return tubeletize(frames, cfg.patch_size, cfg.tubelet)
    except ValueError as exc:
        raise SampleError("corrupt", f"decoded pixels do not tile: {exc}", stage="tokenize") from None


def example_tokens(held: Held, length: int, cfg: LoaderConfig) -> Tokens:
    """The ``length`` tokens of ``held`` the packer placed (all of them, or a random subset)."""
    if isinstance(held.data, Tokens):  # stored example (patchpack shard)
        patches, positions = held.data.patches, held.data.positions
    else:
        aug = cfg.active_augment
        rng = example_rng(cfg.seed, held.epoch, held.key, PIXEL_STREAM) if aug is not None and aug.photometric else None
        patches, positions = pixels_to_tokens(held.data, held.plan, cfg, rng)
    n = len(patches)
    if length < n:
        idx = drop_tokens(n, length, example_rng(cfg.seed, held.epoch, held.key, DROP_STREAM))
        patches, positions = patches[idx], positions[idx]
    return Tokens(held.key, patches, positions, tuple(held.plan.grid), meta={"shard": held.shard, "index": held.index},
                  label_set=held.labels, fields=held.fields)

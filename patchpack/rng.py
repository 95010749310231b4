"""The one home of per-example randomness: a generator per ``(seed, epoch, stream, key)``."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.random.bit_generator import ISeedSequence

__all__ = ["example_rng", "FIT_STREAM", "DROP_STREAM", "CROP_STREAM", "PIXEL_STREAM"]

#: stream 0 draws the fitted size (sampled fit modes) and then the drop rate
FIT_STREAM = 0
#: stream 1 draws which tokens are dropped
DROP_STREAM = 1
#: stream 2 draws the augmentation crop and flip (from the header size)
CROP_STREAM = 2
#: stream 3 draws the photometric augmentation (on decoded pixels)
PIXEL_STREAM = 3


class _DigestSeed(ISeedSequence):
    """A seed sequence whose state words are a 256-bit blake2b digest, handed to the bit generator as is."""

    __slots__ = ("digest",)

    def __init__(self, digest: bytes) -> None:
        self.digest = digest

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        return np.frombuffer(self.digest, dtype=dtype, count=n_words).copy()


def example_rng(seed: int, epoch: int, key: str, stream: int = 0) -> np.random.Generator:
    """The generator of one example in one epoch (``stream`` 0: fit and drop rate, 1: dropped tokens).

    A ``PCG64`` whose 256-bit state (state and increment words) is the blake2b digest of
    ``(seed, epoch, stream, key)``: independent of worker count and arrival order. The
    digest goes into the bit generator directly (no ``SeedSequence`` mixing, which cost
    about 6x more than everything else here and ran once or twice per example).
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{stream}:".encode() + key.encode("utf-8", "surrogatepass"),
                             digest_size=32).digest()
    return np.random.Generator(np.random.PCG64(_DigestSeed(digest)))

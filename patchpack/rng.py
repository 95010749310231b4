"""The one home of per-example randomness: a generator per ``(seed, epoch, stream, key)``."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["example_rng", "FIT_STREAM", "DROP_STREAM"]

#: stream 0 draws the fitted size (sampled fit modes) and then the drop rate
FIT_STREAM = 0
#: stream 1 draws which tokens are dropped
DROP_STREAM = 1


def example_rng(seed: int, epoch: int, key: str, stream: int = 0) -> np.random.Generator:
    """The generator of one example in one epoch (``stream`` 0: fit and drop rate, 1: dropped tokens).

    Seeded with a 128-bit blake2b digest of ``(seed, epoch, stream, key)``: independent of
    worker count and arrival order, and cheaper than hashing a list through ``SeedSequence``.
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{stream}:".encode() + key.encode("utf-8", "surrogatepass"),
                             digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))

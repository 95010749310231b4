"""Streaming bin packing of examples (by token count) into sequences of length ``L``: a registry of packers.

:func:`make_packer` builds the packer registered for
``config.algorithm``: ``"bfd"`` (default, :mod:`~patchpack.pack.bfd`), ``"first-fit"`` and
``"next-fit"`` (:mod:`~patchpack.pack.baselines`). A new algorithm subclasses
:class:`Packer` and calls :func:`register_packer`. ``push``/``flush`` return an
:class:`Emitted` list of sequences whose ``rejected`` holds refused (oversize) examples.
"""

from .base import Emitted, Packer, make_packer, register_packer
from .baselines import FirstFitPacker, NextFitPacker, pack_lengths, pack_offline
from .bfd import BFDPacker
from .config import ALGORITHMS, PACKERS, OversizeError, PackConfig, PackedSequence

__all__ = [
    "PackConfig", "PackedSequence", "OversizeError", "ALGORITHMS", "Packer", "Emitted", "register_packer",
    "make_packer", "PACKERS", "BFDPacker", "FirstFitPacker", "NextFitPacker", "pack_lengths", "pack_offline",
]

"""patchpack: native-resolution Patch n' Pack data loading for vision transformers.

The package is layered along the flow (``sources -> decode -> fit -> tokenize -> drop ->
pack -> pipeline -> loader -> model``). Names are re-exported lazily (PEP 562), so
``import patchpack`` imports neither torch nor any stage until a name is used.
``patchpack.fit`` is the fit stage (a package); its function is ``patchpack.fit.fit``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: public name -> module that defines it
_EXPORTS = {
    "PackedBatch": "patchpack.loader.batch",
    "collate": "patchpack.loader.batch",
    "make_loader": "patchpack.loader.packed_loader",
    "LoaderConfig": "patchpack.config",
    "DropConfig": "patchpack.drop",
    "drop_rate": "patchpack.drop",
    "drop_tokens": "patchpack.drop",
    "keep_count": "patchpack.drop",
    "ErrorRecord": "patchpack.errors",
    "SampleError": "patchpack.errors",
    "FitConfig": "patchpack.fit",
    "fit_grid": "patchpack.fit",
    "PackConfig": "patchpack.pack",
    "Packer": "patchpack.pack",
    "PackedSequence": "patchpack.pack",
    "pack_lengths": "patchpack.pack",
    "pack_offline": "patchpack.pack",
    "register_packer": "patchpack.pack",
    "make_packer": "patchpack.pack",
    "register_source": "patchpack.sources",
    "Source": "patchpack.sources.mixture",
    "AugmentConfig": "patchpack.augment",
    "Tokens": "patchpack.tokenize",
    "patchify": "patchpack.tokenize",
    "tubeletize": "patchpack.tokenize",
    "unpatchify": "patchpack.tokenize",
    "untubeletize": "patchpack.tokenize",
    "example_rng": "patchpack.rng",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'patchpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

"""patchpack: native-resolution Patch n' Pack data loading for vision transformers."""

from .batch import PackedBatch, collate
from .drop import DropConfig, drop_rate, drop_tokens, keep_count
from .errors import ErrorRecord, SampleError
from .fit import FitConfig, fit, fit_grid
from .loader import LoaderConfig, make_loader
from .pack import PackConfig, Packer, PackedSequence, pack_lengths, pack_offline
from .tokenize import Tokens, patchify, tubeletize, unpatchify, untubeletize

__version__ = "0.1.0"

__all__ = [
    "PackedBatch", "collate", "DropConfig", "drop_rate", "drop_tokens", "keep_count",
    "ErrorRecord", "SampleError", "FitConfig", "fit", "fit_grid", "PackConfig", "Packer",
    "PackedSequence", "pack_lengths", "pack_offline", "Tokens", "patchify", "tubeletize",
    "unpatchify", "untubeletize", "LoaderConfig", "make_loader",
]

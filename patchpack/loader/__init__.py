"""The torch edge: ``PackedBatch``/``collate`` and the ``DataLoader`` of packed batches with resume."""

from ..config import LoaderConfig
from ..rng import example_rng
from .batch import PackedBatch, collate, cu_seqlens
from .dataset import PackedDataset, PackedLoader, batch_of, dist_info, make_loader
from .resume import gather_states

__all__ = [
    "LoaderConfig", "PackedBatch", "collate", "cu_seqlens", "PackedDataset", "PackedLoader", "make_loader",
    "dist_info", "batch_of", "example_rng", "gather_states",
]

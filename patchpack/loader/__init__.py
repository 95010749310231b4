"""The torch edge: ``PackedBatch``/``collate`` and the ``DataLoader`` of packed batches with resume."""

from ..config import LoaderConfig
from .batch import PackedBatch, collate, cu_seqlens
from .dataset import PackedDataset, batch_of, dist_info
from .packed_loader import PackedLoader, make_loader
from .resume import gather_states
from ..pipeline.wait import DataWait

__all__ = [
    "LoaderConfig", "PackedBatch", "collate", "cu_seqlens", "PackedDataset", "PackedLoader", "make_loader",
    "dist_info", "batch_of", "gather_states", "DataWait",
]

"""Where samples come from: the reader registry (tar, folder, patchpack Arrow) and shard planning.

:mod:`~patchpack.sources.readers` holds the registry (:func:`register_source`,
:func:`read_shard`, :class:`ReadOptions`); :mod:`~patchpack.sources.plan` expands urls and
splits shards exactly once over consumers; :mod:`~patchpack.sources.labels` parses labels.
"""

from __future__ import annotations

from .folder import folder_classes
from .fields import sample_field, sample_fields
from .labels import sample_labels
from .plan import expand_sources, plan_shards, resampled_task, shard_order
from .readers import (
    SOURCES, VERIFY_MODES, ReadOptions, Reader, SourceEntry, fetch_samples, read_shard, read_task, reader_for,
    register_source,
)
from .remote import REMOTE_SCHEMES, RemoteConfig
from .sample import UNSAFE_EXTS, Sample, ShardTask, StoredSample

__all__ = [
    "Sample", "StoredSample", "ShardTask", "UNSAFE_EXTS", "Reader", "ReadOptions", "SourceEntry", "SOURCES",
    "VERIFY_MODES", "register_source", "reader_for", "read_shard", "read_task", "fetch_samples", "expand_sources",
    "plan_shards", "resampled_task", "shard_order", "folder_classes", "sample_labels", "sample_field", "sample_fields", "REMOTE_SCHEMES", "RemoteConfig",
]

"""Offline preprocessing (no torch): webdataset shards in, patchpack Arrow shards out, locally or on Ray.

``patchpack preprocess URLS... --out DIR`` runs :func:`preprocess`; the per-shard unit of
work is :func:`~patchpack.offline.job.process_shard`.
"""

from ..storage.manifest import MANIFEST, ManifestError, read_manifest
from .config import ENGINES, PreprocessConfig
from .engines import PreprocessError, preprocess
from .job import output_name, process_shard, sample_to_tokens

__all__ = [
    "PreprocessConfig", "ManifestError", "PreprocessError", "preprocess", "process_shard", "sample_to_tokens", "output_name",
    "read_manifest", "ENGINES", "MANIFEST",
]

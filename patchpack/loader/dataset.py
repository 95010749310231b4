"""The packed DataLoader: shards in, :class:`~patchpack.loader.batch.PackedBatch` out.

Each consumer (one DataLoader worker of one rank) runs the stage chain of
:func:`patchpack.pipeline.stream.worker_stream`: packing is decided from image headers and
video metadata, and pixels exist only for the rows of the batch being built. Per-example randomness (sampled resolution,
drop rate, which tokens are dropped) comes from a generator seeded by
``(seed, epoch, sample key)``, so it does not depend on worker count or arrival order.

**Exactly once.** Shards are split over ``world_size * num_workers`` consumers by
:func:`patchpack.sources.plan_shards` (whole shards round robin, the remainder shared
by sample index modulo). Every sample is packed into some batch or reported as an
:class:`~patchpack.errors.ErrorRecord`. Ranks may get different numbers of batches.

**Resume.** Each batch carries its worker's state (``batch.info.state``): the
epoch, every source's shard position ``(task, next sample index)``, the packer state with
each held example as a small reference ``(shard url, sample index, key, plan, kept)``
and the rows emitted but not yet batched. :class:`PackedLoader` keeps the latest
state per worker and the round-robin position. On resume the held examples' bytes
are re-read from their shards (tar shards have no index: each shard holding a
buffered example is scanned up to the last such example, at most
``max_wait / samples_per_shard + 1`` shards per worker, with no pixel decoding), and
each worker skips ahead in its current shard. The batches after a resume equal the
uninterrupted run's, given the same shards, config, ``num_workers`` and world size.

**Stats and errors.** Each batch carries what happened since its worker's previous
batch: ``info.stats`` (a :class:`~patchpack.stats.PackStats` delta) and
``info.errors`` (records). A worker whose stream ends with unreported stats sends
one empty marker batch, which :class:`PackedLoader` absorbs and never yields.
:class:`PackedLoader` merges them into ``loader.stats`` / ``loader.errors`` and
appends errors to ``LoaderConfig.errors_path`` (JSONL).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..config import LoaderConfig, check_stored_shards
from ..pipeline.elastic import fingerprint
from ..pipeline.info import StreamBatch
from ..pipeline.sources import Sources
from ..pipeline.stored_rows import check_stored_seq_len, serves_packed
from ..pipeline.stream import WorkerPosition, worker_stream
from ..sources.wds import missing_local
from .batch import PackedBatch, collate
from ..text import multi_hot, slot_texts, tokenize_texts

__all__ = ["PackedDataset", "dist_info", "batch_of"]



def batch_of(item: StreamBatch, cfg: LoaderConfig) -> PackedBatch:
    """Collate one worker-stream item into a :class:`PackedBatch` (``info`` attached), with the
    per-slot texts, token ids and multi-hot targets the config asks for."""
    e = cfg.row_slots
    if e is None:
        e = max([len(r) for r in item.rows] + [1])
    batch = collate(item.rows, cfg.pack.seq_len, e, cfg.token_dim)
    batch.info = item.info
    name = cfg.text_name
    if name is not None:
        batch.texts = slot_texts(item.rows, e, name)
        if cfg.tokenizer is not None:
            ids, mask, n, cut = tokenize_texts(batch.texts, cfg.tokenizer, cfg.text_len)
            batch.text_ids, batch.text_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            item.info.stats.texts += n
            item.info.stats.truncated_texts += cut
    if cfg.num_classes is not None:
        batch.targets = torch.from_numpy(multi_hot(item.rows, e, cfg.num_classes))
    return batch


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit values, else ``torch.distributed``, else ``RANK``/``WORLD_SIZE``."""
    if rank is not None and world_size is not None:
        r, w = int(rank), int(world_size)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank is not None:
        r = int(rank)
    if world_size is not None:
        w = int(world_size)
    if not 0 <= r < w:
        raise ValueError(f"rank {r} out of range for world size {w}")
    return r, w


class PackedDataset(IterableDataset):
    """An ``IterableDataset`` of :class:`PackedBatch` (use ``DataLoader(batch_size=None)``).

    The rank and world size are resolved when the dataset is made (in the main
    process); worker ids come from ``torch.utils.data.get_worker_info()``.
    Prefer :func:`~patchpack.loader.make_loader`, whose
    :class:`~patchpack.loader.packed_loader.PackedLoader` adds resume, stats and the errors
    file. Used on its own, a worker's stream may end with an empty marker batch
    (``info.empty`` true, ``B = 0``) carrying its last stats and errors.

    Attributes:
        sources: the loader's :class:`~patchpack.pipeline.sources.Sources` (one for plain urls).
        config: the loader-level config.
        urls: every shard url.
        serve_stored: the urls are packed patchpack shards whose stored rows are served as they are.
    """

    def __init__(self, urls, config: LoaderConfig | None = None) -> None:
        super().__init__()
        self.sources = Sources(urls, config or LoaderConfig())
        self.config = self.sources.base
        self.urls = self.sources.urls
        missing = missing_local(self.urls)
        if missing and len(missing) == len(self.urls):  # nothing could ever come out: a wrong path
            raise FileNotFoundError(f"no such file or folder: {missing[0]}" + (
                f" (nor any of the other {len(missing) - 1} local paths given)" if len(missing) > 1 else "")
                + "; check the paths (a missing one among others is an error record, not a failure)")
        if not self.sources.mixture:  # stored shards made with another patch size or a larger budget
            check_stored_shards(self.urls, self.config)
        self.serve_stored = not self.sources.mixture and serves_packed(self.urls, self.config)
        if self.serve_stored:
            check_stored_seq_len(self.urls, self.config)
        self.rank, self.world_size = dist_info(self.config.rank, self.config.world_size)
        # set by PackedLoader before each pass; in shared memory so that persistent workers,
        # which keep their copy of the dataset, read each new pass's values
        self._pass = torch.zeros(3, dtype=torch.int64).share_memory_()  # epoch, worker offset, pass id
        self.resume: dict[int, dict] = {}
        self.resume_pass = 0  # the pass id `resume` belongs to

    @property
    def start_epoch(self) -> int:
        return int(self._pass[0])

    @start_epoch.setter
    def start_epoch(self, epoch: int) -> None:
        self._pass[0] = int(epoch)

    @property
    def worker_offset(self) -> int:
        return int(self._pass[1])

    @worker_offset.setter
    def worker_offset(self, offset: int) -> None:
        self._pass[1] = int(offset)

    @property
    def pass_id(self) -> int:
        """Counts the loader's passes (``iter()`` calls)."""
        return int(self._pass[2])

    @pass_id.setter
    def pass_id(self, n: int) -> None:
        self._pass[2] = int(n)

    def position(self, workers: int, logical: int, epoch: int | None = None) -> WorkerPosition:
        """Where logical worker ``logical`` of ``workers`` stands in this pass (or at ``epoch``)."""
        return WorkerPosition(self.rank * workers + logical, self.world_size * workers, logical,
                              self.start_epoch if epoch is None else epoch)

    def stream(self, at: WorkerPosition, state: dict | None = None, materialize: bool = True):
        """The worker stream of one position (see :func:`~patchpack.pipeline.stream.worker_stream`)."""
        return worker_stream(self.sources, at, state, stored=self.serve_stored, materialize=materialize)

    def __iter__(self) -> Iterator[PackedBatch]:
        wi = get_worker_info()
        workers, wid = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        logical = (wid + self.worker_offset) % workers
        state = self.resume.get(logical) if self.resume_pass == self.pass_id else None
        cfg = self.config
        return (batch_of(item, cfg) for item in self.stream(self.position(workers, logical), state))

    def fingerprint(self) -> str:
        """Digest of the shards, sources and config a saved state must match."""
        return fingerprint(self.urls, self.config, self.sources.signature())

"""The packed DataLoader: shards in, :class:`~patchpack.batch.PackedBatch` out.

Each consumer (one DataLoader worker of one rank) runs a
:class:`patchpack.stream.ConsumerStream`: packing is decided from image headers and
video metadata, and pixels exist only for the rows of the batch being built. Per-example randomness (sampled resolution,
drop rate, which tokens are dropped) comes from a generator seeded by
``(seed, epoch, sample key)``, so it does not depend on worker count or arrival order.

**Exactly once.** Shards are split over ``world_size * num_workers`` consumers by
:func:`patchpack.source.plan_shards` (whole shards round robin, the remainder shared
by sample index modulo). Every sample is packed into some batch or reported as an
:class:`~patchpack.errors.ErrorRecord`. Ranks may get different numbers of batches.

**Resume.** Each batch carries its worker's state (``batch.info["state"]``): the
epoch, the shard position ``(task, next sample index)``, the packer state with each
held example as a small reference ``(shard url, sample index, key, probe, kept)``
and the rows emitted but not yet batched. :class:`PackedLoader` keeps the latest
state per worker and the round-robin position. On resume the held examples' bytes
are re-read from their shards (tar shards have no index: each shard holding a
buffered example is scanned up to the last such example, at most
``max_wait / samples_per_shard + 1`` shards per worker, with no pixel decoding), and
each worker skips ahead in its current shard. The batches after a resume equal the
uninterrupted run's, given the same shards, config, ``num_workers`` and world size.

**Stats and errors.** Each batch carries what happened since its worker's previous
batch: ``info["stats"]`` (a :class:`~patchpack.stats.PackStats` delta) and
``info["errors"]`` (records). A worker whose stream ends with unreported stats sends
one empty marker batch, which :class:`PackedLoader` absorbs and never yields.
:class:`PackedLoader` merges them into ``loader.stats`` / ``loader.errors`` and
appends errors to ``LoaderConfig.errors_path`` (JSONL).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import decode
from .batch import PackedBatch
from .decode.image import ImageConfig
from .drop import DropConfig
from .errors import ERROR_POLICIES, ErrorRecord
from .fit import FitConfig
from .pack import PackConfig
from .source import expand_sources
from .stats import PackStats
from .stream import ConsumerStream, example_rng

__all__ = ["LoaderConfig", "PackedDataset", "PackedLoader", "make_loader", "example_rng", "dist_info"]

_STATE_FORMAT = "patchpack.loader/1"


@dataclass(frozen=True)
class LoaderConfig:
    """Everything the packed loader does, with its defaults.

    Attributes:
        fit: resolution policy (patch size ``p``, patch/pixel budget, sampling).
        drop: token-drop policy (rate drawn per example).
        pack: packing policy (sequence length ``L``, ``Emax``, buffer, age bound).
        image: image decoding (background, bomb limit, resize filter).
        video: a ``patchpack.decode.video.VideoConfig`` to accept video members
            (images then become one tubelet of ``pt`` repeated frames); ``None``:
            images only.
        batch_size: packed sequences (rows) per batch.
        max_examples: ``E``, example slots per row; default ``pack.max_per_seq``,
            or the batch's largest row when that is ``None``.
        seed: seed of the shard shuffle and of every per-example generator.
        shuffle_shards: shuffle the shard order each epoch (seeded by ``(seed, epoch)``).
        epochs: epochs per pass over the loader (``None``: repeat forever). Each new
            pass (``for batch in loader``) continues with the next epoch.
        resampled: infinite stream of shards drawn with replacement per consumer
            (no exactly-once; ``epochs`` is ignored).
        training: draw drop rates (``False``: keep every token, as at evaluation).
        progress_samples: samples in the whole training run, for the drop schedule:
            progress = samples seen by this consumer * consumers / progress_samples
            (``None``: progress 0).
        errors: ``"record"`` (count, report and go on) or ``"raise"`` (debugging;
            with workers the DataLoader re-raises it as ``RuntimeError``).
        errors_path: JSONL file the main process appends error records to.
        label_field: member holding the integer label: ``"cls"`` (text integer), or
            ``"json:<name>"`` for a key of the ``json`` member. Missing -> label -1.
        rank, world_size: override the distributed position (default:
            ``torch.distributed`` when initialised, else ``RANK`` / ``WORLD_SIZE``).
    """

    fit: FitConfig = field(default_factory=FitConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    video: Any | None = None
    batch_size: int = 8
    max_examples: int | None = None
    seed: int = 0
    shuffle_shards: bool = True
    epochs: int | None = 1
    resampled: bool = False
    training: bool = True
    progress_samples: int | None = None
    errors: str = "record"
    errors_path: str | None = None
    label_field: str = "cls"
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.errors not in ERROR_POLICIES:
            raise ValueError(f"errors must be one of {ERROR_POLICIES}, got {self.errors!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1 or None")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("max_examples must be >= 1")
        if self.label_field != "cls" and not self.label_field.startswith("json:"):
            raise ValueError("label_field must be 'cls' or 'json:<key>'")

    @property
    def patch_size(self) -> int:
        return self.fit.patch_size

    @property
    def tubelet(self) -> int:
        return decode.tubelet_of(self.video)

    @property
    def token_dim(self) -> int:
        """``D = pt * p * p * 3``."""
        return self.tubelet * self.patch_size**2 * 3

    @property
    def slots(self) -> int | None:
        return self.max_examples if self.max_examples is not None else self.pack.max_per_seq

    def with_overrides(self, **overrides: Any) -> "LoaderConfig":
        """A copy with fields replaced; sub-config fields by name (``seq_len=``,
        ``patch_size=``, ``max_patches=``) or ``section__name`` (``image__max_pixels=``)."""
        own = {f.name for f in fields(self)}
        top = {k: v for k, v in overrides.items() if k in own}
        cfg = replace(self, **top) if top else self
        sections = {"fit": cfg.fit, "drop": cfg.drop, "pack": cfg.pack, "image": cfg.image}
        if cfg.video is not None:
            sections["video"] = cfg.video
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for name, value in overrides.items():
            if name in own:
                continue
            if "__" in name:
                sec, _, sub = name.partition("__")
                if sec not in sections or sub not in {f.name for f in fields(sections[sec])}:
                    raise TypeError(f"unknown loader option {name!r}")
                nested[sec][sub] = value
                continue
            owners = [s for s, obj in sections.items() if name in {f.name for f in fields(obj)}]
            if not owners:
                raise TypeError(f"unknown loader option {name!r}")
            if len(owners) > 1:
                raise TypeError(
                    f"option {name!r} is ambiguous; use one of " + ", ".join(f"{s}__{name}" for s in owners)
                )
            nested[owners[0]][name] = value
        if not nested:
            return cfg
        return replace(cfg, **{sec: replace(sections[sec], **kw) for sec, kw in nested.items()})


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
    Prefer :func:`make_loader`, whose :class:`PackedLoader` adds resume, stats and
    the errors file. Used on its own, a worker's stream may end with an empty marker
    batch (``info["empty"]`` true, ``B = 0``) carrying its last stats and errors.
    """

    def __init__(self, urls: str | Sequence[str], config: LoaderConfig | None = None) -> None:
        super().__init__()
        self.config = config or LoaderConfig()
        self.urls = expand_sources(urls)
        self.rank, self.world_size = dist_info(self.config.rank, self.config.world_size)
        # set by PackedLoader before each pass
        self.start_epoch = 0
        self.worker_offset = 0
        self.resume: dict[int, dict] = {}

    def __iter__(self) -> Iterator[PackedBatch]:
        wi = get_worker_info()
        workers, wid = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        logical = (wid + self.worker_offset) % workers
        stream = ConsumerStream(
            self.urls, self.config, self.rank * workers + logical, self.world_size * workers, logical,
            self.start_epoch, self.resume.get(logical),
        )
        return iter(stream)


def _passthrough(batch: PackedBatch) -> PackedBatch:
    return batch


class PackedLoader(DataLoader):
    """A ``DataLoader`` of :class:`PackedBatch` with ``state_dict()``/``load_state_dict()``.

    Attributes:
        stats: :class:`PackStats` merged over every batch received (marker batches included).
        errors: every :class:`ErrorRecord` received.
    """

    def __init__(self, dataset: PackedDataset, **kwargs: Any) -> None:
        if kwargs.pop("persistent_workers", False):
            raise ValueError("persistent_workers is not supported: each pass sends the resume state to the workers")
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "collate_fn"):
            if bad in kwargs:
                raise TypeError(f"{bad} is fixed by the packed loader (rows per batch: LoaderConfig.batch_size)")
        super().__init__(dataset, batch_size=None, collate_fn=_passthrough, **kwargs)
        self.stats = PackStats()
        self.errors: list[ErrorRecord] = []
        self._epoch = 0
        self._states: dict[int, dict] = {}
        self._next_worker = 0
        self._resume_pending = False

    @property
    def config(self) -> LoaderConfig:
        return self.dataset.config

    @property
    def _workers(self) -> int:
        return max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at ``epoch`` (shard order and per-example randomness depend on it)."""
        self._epoch = int(epoch)
        self._states, self._next_worker, self._resume_pending = {}, 0, False

    def __iter__(self) -> Iterator[PackedBatch]:  # type: ignore[override]
        ds: PackedDataset = self.dataset
        if not self._resume_pending:
            self._states, self._next_worker = {}, 0
        self._resume_pending = False
        ds.start_epoch, ds.worker_offset = self._epoch, self._next_worker
        ds.resume = dict(self._states)
        for batch in super().__iter__():
            self._absorb(batch)
            if not batch.info.get("empty"):
                yield batch
        self._epoch += 0 if self.config.epochs is None else self.config.epochs
        self._states, self._next_worker = {}, 0

    def _absorb(self, batch: PackedBatch) -> None:
        info = batch.info
        worker = int(info["worker"])
        self._states[worker] = info["state"]
        self._next_worker = (worker + 1) % self._workers
        self.stats.merge(info["stats"])
        errs = info["errors"]
        if errs:
            self.errors.extend(errs)
            path = self.config.errors_path
            if path:
                with open(path, "a", encoding="utf-8") as fh:
                    for rec in errs:
                        rec.write_jsonl(fh)

    def state_dict(self) -> dict:
        """JSON-serialisable position: the latest state of every worker, the round-robin
        position, the epoch and the merged stats."""
        ds: PackedDataset = self.dataset
        return {
            "format": _STATE_FORMAT,
            "epoch": self._epoch,
            "num_workers": self._workers,
            "rank": ds.rank,
            "world_size": ds.world_size,
            "next_worker": self._next_worker,
            "workers": {str(w): s for w, s in sorted(self._states.items())},
            "stats": self.stats.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` at the next ``iter()``; needs the same ``num_workers`` and world size."""
        ds: PackedDataset = self.dataset
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a packed-loader state (format {state.get('format')!r})")
        if int(state["num_workers"]) != self._workers or int(state["world_size"]) != ds.world_size:
            raise ValueError(
                f"state was saved with num_workers={state['num_workers']}, world_size={state['world_size']}; "
                f"this loader has num_workers={self._workers}, world_size={ds.world_size}"
            )
        self._epoch = int(state["epoch"])
        self._states = {int(w): s for w, s in state["workers"].items()}
        self._next_worker = int(state["next_worker"])
        self.stats = PackStats.from_dict(state["stats"])
        self._resume_pending = True


def make_loader(
    urls: str | Sequence[str],
    config: LoaderConfig | None = None,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    timeout: float = 0,
    multiprocessing_context: Any = None,
    **overrides: Any,
) -> PackedLoader:
    """A DataLoader of :class:`PackedBatch` over webdataset shards or image folders.

    Args:
        urls: webdataset tar urls (brace patterns expanded, e.g.
            ``"data/train-{000..099}.tar"``), image folders, or patchpack shards
            (``*.arrow`` or a ``patchpack preprocess`` folder); one or a list.
        config: the pipeline configuration (defaults: :class:`LoaderConfig`).
        num_workers, pin_memory, prefetch_factor, timeout, multiprocessing_context:
            as for ``torch.utils.data.DataLoader``.
        **overrides: :class:`LoaderConfig` fields (``batch_size=``, ``seed=``), or fields
            of its sections by name (``seq_len=``, ``patch_size=``, ``max_patches=``,
            ``max_per_seq=``) or as ``section__field`` (``image__max_pixels=``).

    >>> loader = make_loader("shards/train-{000..003}.tar", seq_len=1024, patch_size=16,
    ...                      max_patches=256, batch_size=8, num_workers=4)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     logits = model(batch.to("cuda"))
    """
    cfg = (config or LoaderConfig()).with_overrides(**overrides)
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory, "timeout": timeout}
    if num_workers > 0:
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return PackedLoader(PackedDataset(urls, cfg), **kwargs)

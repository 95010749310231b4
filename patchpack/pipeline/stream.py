"""One consumer's stream of packed rows (one DataLoader worker of one rank), numpy only.

The stream is a chain of small stages, each in its own module with its own state, composed
here::

    read (shards, cursors)  ->  admit (header, fit, drop)  ->  pack (packer buffer)  ->  batch (pixels, threads)

or, for stored packed rows, ``read (stored rows) -> stored rows -> batch``. The packer holds
compressed bytes plus plans, never pixels; pixels exist only for the rows of the batch being
built. Every per-sample failure, also an unexpected exception, becomes an
:class:`~patchpack.errors.ErrorRecord` with the sample's key and the stream goes on.

A state (each batch's ``info.state``) nests the stages' states (:mod:`.schema`) and holds
every buffered example as a small reference; :func:`worker_stream` restores one by re-reading
those examples from their shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..errors import ResumeError, SampleError
from ..sources import Sample, StoredSample, read_task
from .admission import example_fields, stored_fields
from .admit import AdmitStage
from .batch import BatchStage
from .held import collect_refs, restore_held
from .info import StreamBatch
from .pack import PackStage
from .read import ReadStage, SourceCursor, SourceSpec
from .schema import pack_state
from .sources import Sources
from .stored_rows import StoredRowStage, read_stored_rows

__all__ = ["WorkerPosition", "build_stream", "worker_stream"]


@dataclass(frozen=True)
class WorkerPosition:
    """Where a worker stands: ``consumer`` of ``consumers`` (``rank * num_workers + worker``),
    its logical ``worker`` index, and the epoch its pass starts at."""

    consumer: int
    consumers: int
    worker: int
    start_epoch: int = 0


def _task_reader(options, stored: bool):
    if stored:
        return lambda task, start: read_stored_rows(task, start, options)
    return lambda task, start: read_task(task, start, options)


def build_stream(sources: Sources, at: WorkerPosition, *, stored: bool = False, materialize: bool = True
                 ) -> BatchStage:
    """The stage chain of one worker (module doc); iterate it for :class:`StreamBatch` items."""
    base = sources.base
    cursors = [SourceCursor(SourceSpec(tuple(urls), _task_reader(cfg.read_options, stored), resampled), k,
                            at.consumer, at.consumers, base.seed, base.shuffle_shards)
               for k, (urls, cfg, resampled) in enumerate(zip(sources.urls_by_source, sources.configs,
                                                               sources.resampled))]
    read = ReadStage(cursors, sources.weights, at.consumer, base.seed, at.start_epoch, base.epochs)
    rows = StoredRowStage(read, base) if stored else PackStage(AdmitStage(read, sources.configs), base.pack)
    names = sources.names if sources.mixture else ()
    return BatchStage(rows, sources.configs, at.worker, at.consumer, at.start_epoch, sources.source_of, names,
                      materialize)


def _fields_of(sources: Sources):
    def read(sample: Sample, source: int) -> dict:
        cfg = sources.configs[source]
        if isinstance(sample, StoredSample):
            return stored_fields(sample.tokens.fields, cfg)
        return example_fields(sample, cfg)
    return read


def restore(stream: BatchStage, sources: Sources, state: dict) -> None:
    """Load ``state`` into ``stream``, re-reading the examples it holds from their shards.

    Raises:
        ResumeError: the held examples cannot be re-read as they were, or the state does not fit.
    """
    ps = pack_state(state)
    refs = collect_refs([ps["packer"], ps["rows"], ps.get("pending", [])], []) if ps is not None else []
    try:
        make = restore_held(refs, lambda k: sources.configs[k].read_options, _fields_of(sources))
        stream.load_state_dict(state, make)
    except SampleError as err:  # a held example's fields no longer read as they did
        raise ResumeError(f"a held example cannot be restored: {err}") from None
    except (KeyError, TypeError, IndexError) as exc:
        raise ResumeError(f"the state does not fit this loader ({type(exc).__name__}: {str(exc)[:80]}); resume "
                          "with the same sources and options") from None


def worker_stream(sources: Sources, at: WorkerPosition, state: dict | None = None, *, stored: bool = False,
                  materialize: bool = True) -> Iterator[StreamBatch]:
    """The batches of one worker from the start of its pass, or after ``state``."""
    stream = build_stream(sources, at, stored=stored, materialize=materialize)
    if state is not None:
        restore(stream, sources, state)
    return iter(stream)

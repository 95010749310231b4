"""One consumer's deterministic stream of packed rows (one DataLoader worker of one rank), numpy only.

Per sample::

    source -> header -> fit -> drop rate -> keep_count -> packer.push(item, kept)
    ... when the packer emits sequences ...
    rows -> materialize (pixels at the fitted size) -> tokenize -> drop_tokens -> StreamBatch

The packer holds *compressed bytes* plus the plan, never pixels (and builds sequences early
when those bytes exceed ``PackConfig.buffer_bytes``); pixels exist only for the rows of the
batch being built. Every per-sample failure (label, header, fit, decode, tokenize, stored-row
checks), also an unexpected exception, becomes an :class:`~patchpack.errors.ErrorRecord` with
the sample's key (kind ``failed`` for exceptions no stage typed), and the stream goes on; a
source that raises mid-shard ends that shard with a ``shard`` record. Only ``errors="raise"``
and a user transform's :class:`~patchpack.augment.TransformError` stop it.

The stream yields :class:`StreamBatch` (rows of
:class:`~patchpack.tokenize.Tokens` plus an ``info`` dict); collation into a torch
``PackedBatch`` happens at the torch edge (:mod:`patchpack.loader`). The stream's state
(:meth:`ConsumerStream.state_dict`) holds every buffered example as a small JSON-ready
reference instead of its bytes; see :mod:`patchpack.loader` for how resume uses it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, NamedTuple, Sequence

from ..augment import CROP_STREAM, PIXEL_STREAM, TransformError
from ..config import LoaderConfig
from ..drop import drop_rate, drop_tokens, keep_count
from ..errors import ErrorRecord, SampleError
from ..pack import PackedSequence, make_packer
from ..rng import DROP_STREAM, FIT_STREAM, example_rng
from ..sources import Sample, StoredSample, fetch_samples, plan_shards, read_task, resampled_task
from ..stats import PackStats
from ..tokenize import Tokens
from .elastic import dealt_tasks
from .state import Held, collect_refs, from_refs, to_refs
from .steps import probe_sample, sample_tokens, stored_plan
from .threads import DecodePool

__all__ = ["ConsumerStream", "StreamBatch", "keep_record"]


def _held_bytes(item: Held) -> int:
    """Bytes an admitted example holds in the packer (compressed media; stored tokens are mapped)."""
    data = item.data
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0


def _failed(key: str, shard: str, stage: str, exc: BaseException) -> ErrorRecord:
    return ErrorRecord(key, shard, stage, "failed", f"{type(exc).__name__}: {str(exc)[:300]}")


def _guarded(records: Iterator, url: str) -> Iterator:
    """A source's records; an exception inside the source ends the shard with a ``shard`` record."""
    try:
        yield from records
    except Exception as exc:
        yield ErrorRecord(url, url, "source", "shard", f"source failed: {type(exc).__name__}: {str(exc)[:300]}")


def keep_record(rec: ErrorRecord, cfg: LoaderConfig, errors: list[ErrorRecord], stats: PackStats) -> None:
    """Keep ``rec`` in ``errors`` and ``stats``, or raise it as a :class:`SampleError` under
    ``cfg.errors == "raise"``."""
    if cfg.errors == "raise":
        raise SampleError(rec.kind, rec.message, key=rec.key, shard=rec.shard, stage=rec.stage)
    errors.append(rec)
    stats.add_error(rec)


class StreamBatch(NamedTuple):
    """What a worker stream yields: ``rows`` (one list of :class:`Tokens` per packed sequence)
    and ``info`` (worker, consumer, epoch, batch_index, stats, errors, state, empty)."""

    rows: list[list[Tokens]]
    info: dict


class ConsumerStream:
    """The deterministic batch stream of one consumer (``rank * num_workers + worker``)."""

    def __init__(
        self,
        urls: Sequence[str],
        cfg: LoaderConfig,
        consumer: int,
        num_consumers: int,
        worker: int,
        start_epoch: int = 0,
        state: dict | None = None,
    ) -> None:
        self.urls, self.cfg = list(urls), cfg
        self.consumer, self.num_consumers, self.worker = consumer, num_consumers, worker
        self.packer = make_packer(cfg.pack, size_of=_held_bytes)
        self._decoder = DecodePool(cfg.decode_threads)
        self._ahead: dict[int, tuple] = {}  # id(row) -> (row, its examples' futures), started before it is batched
        self.rows: list[PackedSequence] = []
        self.stats = PackStats()
        self.errors: list[ErrorRecord] = []
        self.start_epoch = start_epoch
        self.epoch, self.task, self.next = start_epoch, 0, 0
        self.seen = 0  # samples consumed by this consumer (drop schedule)
        self.batches = 0
        self.done = False
        self.dealt: list[list] | None = None  # this epoch's tasks when re-dealt by an elastic resume
        if state is not None:
            self._restore(state)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "task": self.task, "next": self.next, "seen": self.seen,
            "batches": self.batches, "done": self.done,
            "packer": to_refs(self.packer.state_dict()),
            "rows": [to_refs(list(s)) for s in self.rows],
            **({"dealt": self.dealt} if self.dealt is not None else {}),
        }

    def _restore(self, state: dict) -> None:
        self.epoch, self.task, self.next = int(state["epoch"]), int(state["task"]), int(state["next"])
        self.seen, self.batches, self.done = int(state["seen"]), int(state["batches"]), bool(state["done"])
        self.dealt = state.get("dealt")
        pending = state.get("pending") or []  # examples re-dealt by an elastic resume
        refs: list[dict] = list(pending)
        collect_refs(state["packer"], refs)
        collect_refs(state["rows"], refs)
        wanted: dict[str, set[int]] = defaultdict(set)
        for r in refs:
            wanted[r["shard"]].add(int(r["index"]))
        fetched = {url: fetch_samples(url, idx, options=self.cfg.read_options) for url, idx in wanted.items()}

        def item(ref: dict) -> Held:
            sample = fetched[ref["shard"]][int(ref["index"])]
            if sample.key != ref["key"]:
                raise ValueError(f"shard {ref['shard']} changed since the state was saved: "
                                 f"sample {ref['index']} is {sample.key!r}, expected {ref['key']!r}")
            data = sample.tokens if isinstance(sample, StoredSample) else sample.members[ref["member"]]
            return Held.from_ref(ref, data)

        if state["packer"] is not None:
            self.packer.load_state_dict(from_refs(state["packer"], item))
        self.rows = [PackedSequence(*from_refs(r, item)) for r in state["rows"]]
        for ref in pending:
            held = item(ref)
            self.rows.extend(self._push(held, held.keep))

    # -- errors -----------------------------------------------------------------------
    def _record(self, rec: ErrorRecord) -> None:
        keep_record(rec, self.cfg, self.errors, self.stats)

    # -- admission: header only -------------------------------------------------------
    def _progress(self) -> float:
        n = self.cfg.progress_samples
        return min(1.0, self.seen * self.num_consumers / n) if n else 0.0

    def _admit(self, sample: Sample, epoch: int) -> list[PackedSequence]:
        cfg = self.cfg
        self.seen += 1
        if isinstance(sample, StoredSample):
            return self._admit_stored(sample, epoch)
        try:
            rng = example_rng(cfg.seed, epoch, sample.key, FIT_STREAM)
            aug = cfg.active_augment
            member, plan, label = probe_sample(
                sample, cfg.fit, cfg.image, cfg.video, cfg.label_field, rng, aug,
                example_rng(cfg.seed, epoch, sample.key, CROP_STREAM) if aug is not None else None)
            n = plan.tokens
            keep = keep_count(n, drop_rate(cfg.drop, n, rng, self._progress(), cfg.training))
        except SampleError as err:
            self._record(err.record(sample.key, sample.shard))
            return []
        except TransformError:
            raise
        except Exception as exc:  # an untyped failure on one sample must not stop the stream
            self._record(_failed(sample.key, sample.shard, "probe", exc))
            return []
        item = Held(sample.key, sample.shard, sample.index, epoch, member, plan.kind, sample.members[member],
                    plan, keep, label)
        return self._push(item, keep)

    def _admit_stored(self, sample: StoredSample, epoch: int) -> list[PackedSequence]:
        """An already-tokenized example from a patchpack shard: no decoding at all."""
        cfg = self.cfg
        tok = sample.tokens
        try:
            rng = example_rng(cfg.seed, epoch, sample.key, FIT_STREAM)
            plan = stored_plan(sample, cfg.fit, cfg.tubelet, rng)
            n = plan.tokens
            keep = min(len(tok), keep_count(n, drop_rate(cfg.drop, n, rng, self._progress(), cfg.training)))
        except SampleError as err:
            self._record(err.record(sample.key, sample.shard))
            return []
        except Exception as exc:
            self._record(_failed(sample.key, sample.shard, "source", exc))
            return []
        item = Held(sample.key, sample.shard, sample.index, epoch, "", plan.kind, tok, plan, keep, int(tok.label))
        return self._push(item, keep)

    def _push(self, item: Held, keep: int) -> list[PackedSequence]:
        out = self.packer.push(item, keep)
        for h, length in out.rejected:
            self._record(ErrorRecord(h.key, h.shard, "pack", "oversize",
                                     f"{length} tokens > seq_len={self.cfg.pack.seq_len}"))
        return out

    # -- batch building: pixels ---------------------------------------------------------
    def _tokens(self, item: Held, length: int) -> Tokens:
        cfg = self.cfg
        if isinstance(item.data, Tokens):  # stored example (patchpack shard)
            patches, positions = item.data.patches, item.data.positions
        else:
            aug = cfg.active_augment
            patches, positions = sample_tokens(
                item.data, item.plan, cfg.image, cfg.video, cfg.patch_size, cfg.tubelet, aug,
                example_rng(cfg.seed, item.epoch, item.key, PIXEL_STREAM) if aug is not None else None)
        n = len(patches)
        if length < n:
            idx = drop_tokens(n, length, example_rng(cfg.seed, item.epoch, item.key, DROP_STREAM))
            patches, positions = patches[idx], positions[idx]
        return Tokens(item.key, patches, positions, tuple(item.plan.grid), item.label,
                      {"shard": item.shard, "index": item.index})

    def _made(self, job: tuple[Held, int]) -> Tokens | Exception:
        """One example's tokens, or what stopped them (runs in the decode threads)."""
        try:
            return self._tokens(*job)
        except Exception as exc:
            return exc

    def _start(self) -> None:
        """With decode threads, start making the examples of every packed row not yet started,
        so the threads decode while this thread reads, probes and packs what follows (results
        are per-example pure functions, so the batches do not change)."""
        if self._decoder.threads > 1:
            self._start_rows(self.rows)

    def _made_of(self, rows: list[PackedSequence]) -> Iterator:
        """The examples of ``rows`` in order: started futures first, the rest by the pool now."""
        if self._decoder.threads == 1:
            return iter(self._decoder.map(self._made, [(h, n) for seq in rows for h, n in zip(seq.handles, seq.lengths)]))
        self._start_rows(rows)
        futures = [f for seq in rows for f in self._ahead.pop(id(seq))[1]]
        return (f.result() for f in futures)

    def _start_rows(self, rows: list[PackedSequence]) -> None:
        for seq in rows:  # the entry holds the row itself, so its id is not reused while it waits
            if id(seq) not in self._ahead:
                self._ahead[id(seq)] = (seq, [self._decoder.submit(self._made, (h, n))
                                              for h, n in zip(seq.handles, seq.lengths)])

    def _rows(self, rows: list[PackedSequence]) -> list[list[Tokens]]:
        cfg = self.cfg
        token_rows: list[list[Tokens]] = []
        # pixels for the whole batch, in order, by cfg.decode_threads threads; bookkeeping below
        made = self._made_of(rows)
        for seq in rows:
            toks, lens, arrs = [], [], []
            for item, length, arrival in zip(seq.handles, seq.lengths, seq.arrivals):
                try:
                    t = next(made)
                    if isinstance(t, Exception):
                        raise t
                except SampleError as err:
                    self._record(err.record(item.key, item.shard))
                    continue
                except TransformError:
                    raise
                except Exception as exc:
                    self._record(_failed(item.key, item.shard, "decode", exc))
                    continue
                finally:
                    item.data = b""  # release the compressed bytes (or stored tokens)
                toks.append(t)
                lens.append(len(t))
                arrs.append(arrival)
                self.stats.add_example(item.plan.tokens, len(t), item.plan.grid, item.plan.source_size)
            self.stats.add_sequence(PackedSequence([t.key for t in toks], lens, arrs, seq.emitted_at),
                                    cfg.pack.seq_len)
            token_rows.append(toks)
        return token_rows

    def _info(self, empty: bool = False) -> dict:
        info = {
            "worker": self.worker, "consumer": self.consumer, "epoch": self.epoch, "batch_index": self.batches,
            "stats": self.stats, "errors": self.errors, "state": self.state_dict(), "empty": empty,
        }
        self.stats, self.errors = PackStats(), []
        return info

    def _emit(self, final: bool) -> Iterator[StreamBatch]:
        bs = self.cfg.batch_size
        while len(self.rows) >= bs or (final and self.rows):
            rows, self.rows = self.rows[:bs], self.rows[bs:]
            token_rows = self._rows(rows)
            self.batches += 1
            yield StreamBatch(token_rows, self._info())

    def _epoch_stream(self) -> Iterator[tuple[int, Sample | ErrorRecord]]:
        """``(epoch used for randomness, record)`` from the current position on, updating it."""
        cfg = self.cfg
        if cfg.resampled:
            while True:
                task = resampled_task(self.urls, self.consumer, self.task, seed=cfg.seed)
                for rec in _guarded(read_task(task, self.next, options=cfg.read_options), task.url):
                    if isinstance(rec, Sample):
                        self.next = rec.index + 1
                    yield self.task, rec
                self.task, self.next = self.task + 1, 0
        if self.dealt is not None:
            tasks = dealt_tasks(self.dealt)
        else:
            tasks = [(t, 0) for t in plan_shards(self.urls, self.consumer, self.num_consumers, seed=cfg.seed,
                                                 epoch=self.epoch, shuffle=cfg.shuffle_shards)]
        while self.task < len(tasks):
            task = tasks[self.task][0]
            for rec in _guarded(read_task(task, self.next, options=cfg.read_options), task.url):
                if isinstance(rec, Sample):
                    self.next = rec.index + 1
                yield self.epoch, rec
            self.task += 1
            self.next = tasks[self.task][1] if self.task < len(tasks) else 0

    def __iter__(self) -> Iterator[StreamBatch]:
        cfg = self.cfg
        end = None if cfg.epochs is None or cfg.resampled else self.start_epoch + cfg.epochs
        # rows restored from a state may already fill a batch (or end the stream)
        yield from self._emit(final=self.done)
        while not self.done and (end is None or self.epoch < end):
            for epoch, rec in self._epoch_stream():
                if isinstance(rec, ErrorRecord):
                    self._record(rec)
                    continue
                new = self._admit(rec, epoch)
                if new:
                    self.rows.extend(new)
                    self._start()
                yield from self._emit(final=False)
            self.rows.extend(self.packer.flush())  # epoch end: nothing waits across epochs
            self.epoch, self.task, self.next, self.dealt = self.epoch + 1, 0, 0, None
            if end is not None and self.epoch >= end:
                self.done = True
            yield from self._emit(final=self.done)
        if self.errors or self.stats.errors or self.stats.sequences:
            yield StreamBatch([], self._info(empty=True))


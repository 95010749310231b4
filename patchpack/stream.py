"""One consumer's deterministic stream of packed batches (one DataLoader worker of one rank).

Per sample::

    source -> probe (header) -> fit -> drop rate -> keep_count -> Packer.push(item, kept)
    ... when the packer emits sequences ...
    rows -> materialize (pixels at the fitted size) -> tokenize -> drop_tokens -> collate

The packer holds *compressed bytes* plus the probe, never pixels; pixels exist only
for the rows of the batch being built. The stream's state (:meth:`ConsumerStream.state_dict`)
holds every buffered example as a small JSON-ready reference instead of its bytes;
see :mod:`patchpack.loader` for how resume uses it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from . import decode
from .batch import PackedBatch, collate
from .decode import Probe
from .drop import drop_rate, drop_tokens, keep_count
from .errors import ErrorRecord, SampleError
from .pack import Packer, PackedSequence
from .source import Sample, fetch_samples, plan_shards, read_task, resampled_task, sample_label
from .stats import PackStats
from .tokenize import Tokens, tubeletize

if TYPE_CHECKING:  # pragma: no cover
    from .loader import LoaderConfig

__all__ = ["ConsumerStream", "example_rng", "empty_batch", "probe_sample", "sample_tokens"]


def _arrow():
    from . import arrowshard  # pyarrow only for patchpack shards

    return arrowshard


def example_rng(seed: int, epoch: int, key: str, stream: int = 0) -> np.random.Generator:
    """The generator of one example in one epoch (``stream`` 0: fit and drop rate, 1: dropped tokens).

    Seeded with a 128-bit blake2b digest of ``(seed, epoch, stream, key)``: independent of
    worker count and arrival order, and cheaper than hashing a list through ``SeedSequence``.
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{stream}:".encode() + key.encode("utf-8", "surrogatepass"),
                             digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def probe_sample(sample: Sample, fit, image, video, label_field: str, rng) -> tuple[str, Probe, int]:
    """Header-only admission of one raw sample: ``(media member name, probe, label)``.

    Raises:
        SampleError: ``no-media`` without an image (or, with ``video``, video) member,
            ``bad-label``, or whatever the header probe finds wrong.
    """
    found = decode.media_member(sample.members, video)
    if found is None:
        names = ", ".join(sorted(sample.members)) or "none"
        raise SampleError("no-media", f"no image{'/video' if video else ''} member (members: {names})",
                          stage="source")
    member, kind = found
    label = sample_label(sample, label_field)
    return member, decode.probe(sample.members[member], kind, fit, image, video, rng), label


def sample_tokens(data: bytes, probe: Probe, image, video, patch_size: int, tubelet: int):
    """Pixels at the probed size, cut into tokens: ``(patches [N, D], positions [N, 3])``.

    Raises:
        SampleError: from decoding, or ``corrupt`` when the pixels do not tile.
    """
    frames = decode.materialize(data, probe, image, video)
    try:
        return tubeletize(frames, patch_size, tubelet)
    except ValueError as exc:
        raise SampleError("corrupt", f"decoded pixels do not tile: {exc}", stage="tokenize") from None


class _Item:
    """A packer handle: the compressed bytes of one example plus what the probe decided."""

    __slots__ = ("key", "shard", "index", "epoch", "member", "kind", "data", "probe", "keep", "label", "_ref")

    def __init__(self, key, shard, index, epoch, member, kind, data, probe, keep, label):
        self.key, self.shard, self.index, self.epoch = key, shard, index, epoch
        self.member, self.kind, self.data, self.probe = member, kind, data, probe
        self.keep, self.label = keep, label
        self._ref: dict | None = None

    def ref(self) -> dict:
        """JSON-ready reference (no bytes); built once, since every batch's state repeats it."""
        if self._ref is None:
            self._ref = self._make_ref()
        return self._ref

    def _make_ref(self) -> dict:
        p = self.probe
        return {
            "key": self.key, "shard": self.shard, "index": self.index, "epoch": self.epoch,
            "member": self.member, "kind": self.kind, "keep": self.keep, "label": self.label,
            "probe": [p.kind, list(p.source_size), list(p.size), list(p.grid), list(p.frame_indices), p.info],
        }

    @classmethod
    def from_ref(cls, ref: dict, data: bytes) -> "_Item":
        kind, src, size, grid, frames, info = ref["probe"]
        probe = Probe(kind, tuple(src), tuple(size), tuple(grid), list(frames), dict(info))
        return cls(ref["key"], ref["shard"], ref["index"], ref["epoch"], ref["member"], ref["kind"], data,
                   probe, ref["keep"], ref["label"])


def _to_refs(obj: Any) -> Any:
    """Replace every :class:`_Item` in a nested state by ``{"__item__": ref}`` (JSON-ready)."""
    if isinstance(obj, _Item):
        return {"__item__": obj.ref()}
    if isinstance(obj, dict):
        return {k: _to_refs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_refs(v) for v in obj]
    return obj


def _collect_refs(obj: Any, out: list) -> None:
    if isinstance(obj, dict):
        if "__item__" in obj:
            out.append(obj["__item__"])
        else:
            for v in obj.values():
                _collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_refs(v, out)


def _from_refs(obj: Any, make) -> Any:
    if isinstance(obj, dict):
        if "__item__" in obj:
            return make(obj["__item__"])
        return {k: _from_refs(v, make) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_from_refs(v, make) for v in obj]
    return obj


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
        self.packer = Packer(cfg.pack)
        self.rows: list[PackedSequence] = []
        self.stats = PackStats()
        self.errors: list[ErrorRecord] = []
        self.start_epoch = start_epoch
        self.epoch, self.task, self.next = start_epoch, 0, 0
        self.seen = 0  # samples consumed by this consumer (drop schedule)
        self.batches = 0
        self.done = False
        if state is not None:
            self._restore(state)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "task": self.task, "next": self.next, "seen": self.seen,
            "batches": self.batches, "done": self.done,
            "packer": _to_refs(self.packer.state_dict()),
            "rows": [_to_refs(list(s)) for s in self.rows],
        }

    def _restore(self, state: dict) -> None:
        self.epoch, self.task, self.next = int(state["epoch"]), int(state["task"]), int(state["next"])
        self.seen, self.batches, self.done = int(state["seen"]), int(state["batches"]), bool(state["done"])
        refs: list[dict] = []
        _collect_refs(state["packer"], refs)
        _collect_refs(state["rows"], refs)
        wanted: dict[str, set[int]] = defaultdict(set)
        for r in refs:
            wanted[r["shard"]].add(int(r["index"]))
        fetched = {url: fetch_samples(url, idx) for url, idx in wanted.items()}

        def item(ref: dict) -> _Item:
            sample = fetched[ref["shard"]][int(ref["index"])]
            if sample.key != ref["key"]:
                raise ValueError(f"shard {ref['shard']} changed since the state was saved: "
                                 f"sample {ref['index']} is {sample.key!r}, expected {ref['key']!r}")
            data = sample.tokens if ref["member"] == "" else sample.members[ref["member"]]  # type: ignore[attr-defined]
            return _Item.from_ref(ref, data)

        self.packer.load_state_dict(_from_refs(state["packer"], item))
        self.rows = [PackedSequence(*_from_refs(r, item)) for r in state["rows"]]

    # -- errors -----------------------------------------------------------------------
    def _record(self, rec: ErrorRecord) -> None:
        if self.cfg.errors == "raise":
            raise SampleError(rec.kind, rec.message, key=rec.key, shard=rec.shard, stage=rec.stage)
        self.errors.append(rec)
        self.stats.add_error(rec)

    # -- admission: header only -------------------------------------------------------
    def _progress(self) -> float:
        n = self.cfg.progress_samples
        return min(1.0, self.seen * self.num_consumers / n) if n else 0.0

    def _admit(self, sample: Sample, epoch: int) -> list[PackedSequence]:
        cfg = self.cfg
        self.seen += 1
        if getattr(sample, "tokens", None) is not None:
            return self._admit_stored(sample, epoch)
        try:
            rng = example_rng(cfg.seed, epoch, sample.key, 0)
            member, probe, label = probe_sample(sample, cfg.fit, cfg.image, cfg.video, cfg.label_field, rng)
            n = probe.tokens
            keep = keep_count(n, drop_rate(cfg.drop, n, rng, self._progress(), cfg.training))
        except SampleError as err:
            self._record(err.record(sample.key, sample.shard))
            return []
        item = _Item(sample.key, sample.shard, sample.index, epoch, member, probe.kind, sample.members[member],
                     probe, keep, label)
        return self._push(item, keep)

    def _admit_stored(self, sample: Sample, epoch: int) -> list[PackedSequence]:
        """An already-tokenized example from a patchpack shard: no decoding at all."""
        cfg = self.cfg
        tok = sample.tokens  # type: ignore[attr-defined]
        try:
            rng = example_rng(cfg.seed, epoch, sample.key, 0)
            probe = _arrow().shard_probe(sample, cfg.fit, cfg.tubelet, rng)
            n = probe.tokens
            keep = min(len(tok), keep_count(n, drop_rate(cfg.drop, n, rng, self._progress(), cfg.training)))
        except SampleError as err:
            self._record(err.record(sample.key, sample.shard))
            return []
        item = _Item(sample.key, sample.shard, sample.index, epoch, "", probe.kind, tok, probe, keep, int(tok.label))
        return self._push(item, keep)

    def _push(self, item: _Item, keep: int) -> list[PackedSequence]:
        out = self.packer.push(item, keep)
        if self.packer.rejected:
            for h, length in self.packer.rejected:
                self._record(ErrorRecord(h.key, h.shard, "pack", "oversize",
                                         f"{length} tokens > seq_len={self.cfg.pack.seq_len}"))
            self.packer.rejected.clear()
        return out

    # -- batch building: pixels ---------------------------------------------------------
    def _tokens(self, item: _Item, length: int) -> Tokens:
        cfg = self.cfg
        if isinstance(item.data, Tokens):  # stored example (patchpack shard)
            patches, positions = item.data.patches, item.data.positions
        else:
            patches, positions = sample_tokens(item.data, item.probe, cfg.image, cfg.video, cfg.patch_size,
                                               cfg.tubelet)
        n = len(patches)
        if length < n:
            idx = drop_tokens(n, length, example_rng(cfg.seed, item.epoch, item.key, 1))
            patches, positions = patches[idx], positions[idx]
        return Tokens(item.key, patches, positions, tuple(item.probe.grid), item.label,
                      {"shard": item.shard, "index": item.index})

    def _batch(self, rows: list[PackedSequence]) -> PackedBatch:
        cfg = self.cfg
        token_rows: list[list[Tokens]] = []
        for seq in rows:
            toks, lens, arrs = [], [], []
            for item, length, arrival in zip(seq.handles, seq.lengths, seq.arrivals):
                try:
                    t = self._tokens(item, length)
                except SampleError as err:
                    self._record(err.record(item.key, item.shard))
                    continue
                finally:
                    item.data = b""  # release the compressed bytes (or stored tokens)
                toks.append(t)
                lens.append(len(t))
                arrs.append(arrival)
                self.stats.add_example(item.probe.tokens, len(t), item.probe.grid, item.probe.source_size)
            self.stats.add_sequence(PackedSequence([t.key for t in toks], lens, arrs, seq.emitted_at),
                                    cfg.pack.seq_len)
            token_rows.append(toks)
        slots = cfg.slots
        if slots is None:
            slots = max([len(r) for r in token_rows] + [1])
        return collate(token_rows, cfg.pack.seq_len, slots, cfg.token_dim)

    def _info(self, empty: bool = False) -> dict:
        info = {
            "worker": self.worker, "consumer": self.consumer, "epoch": self.epoch, "batch_index": self.batches,
            "stats": self.stats, "errors": self.errors, "state": self.state_dict(), "empty": empty,
        }
        self.stats, self.errors = PackStats(), []
        return info

    def _emit(self, final: bool) -> Iterator[PackedBatch]:
        bs = self.cfg.batch_size
        while len(self.rows) >= bs or (final and self.rows):
            rows, self.rows = self.rows[:bs], self.rows[bs:]
            batch = self._batch(rows)
            self.batches += 1
            batch.info = self._info()
            yield batch

    def _epoch_stream(self) -> Iterator[tuple[int, Sample | ErrorRecord]]:
        """``(epoch used for randomness, record)`` from the current position on, updating it."""
        cfg = self.cfg
        if cfg.resampled:
            while True:
                task = resampled_task(self.urls, self.consumer, self.task, seed=cfg.seed)
                for rec in read_task(task, self.next):
                    if isinstance(rec, Sample):
                        self.next = rec.index + 1
                    yield self.task, rec
                self.task, self.next = self.task + 1, 0
        tasks = plan_shards(self.urls, self.consumer, self.num_consumers, seed=cfg.seed, epoch=self.epoch,
                            shuffle=cfg.shuffle_shards)
        while self.task < len(tasks):
            for rec in read_task(tasks[self.task], self.next):
                if isinstance(rec, Sample):
                    self.next = rec.index + 1
                yield self.epoch, rec
            self.task, self.next = self.task + 1, 0

    def __iter__(self) -> Iterator[PackedBatch]:
        cfg = self.cfg
        end = None if cfg.epochs is None or cfg.resampled else self.start_epoch + cfg.epochs
        # rows restored from a state may already fill a batch (or end the stream)
        yield from self._emit(final=self.done)
        while not self.done and (end is None or self.epoch < end):
            for epoch, rec in self._epoch_stream():
                if isinstance(rec, ErrorRecord):
                    self._record(rec)
                    continue
                self.rows.extend(self._admit(rec, epoch))
                yield from self._emit(final=False)
            self.rows.extend(self.packer.flush())  # epoch end: nothing waits across epochs
            self.epoch, self.task, self.next = self.epoch + 1, 0, 0
            if end is not None and self.epoch >= end:
                self.done = True
            yield from self._emit(final=self.done)
        if self.errors or self.stats.errors or self.stats.sequences:
            yield empty_batch(self.cfg, self._info(empty=True))


def empty_batch(cfg: LoaderConfig, info: dict) -> PackedBatch:
    b = collate([], cfg.pack.seq_len, cfg.slots or 1, cfg.token_dim)
    b.info = info
    return b

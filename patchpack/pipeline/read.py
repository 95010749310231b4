"""The read stage: one consumer's records of every source, epoch by epoch, with its position.

:class:`SourceCursor` is one source's position for one consumer: this epoch's shard tasks
(:func:`~patchpack.sources.plan_shards`, or the slices an elastic resume dealt), the task
being read, the next sample index in it, and the key of the sample before it (checked on
resume, so a changed shard is refused instead of silently skipping or repeating samples).
A resampled source draws shards with replacement and never runs out.

:class:`ReadStage` interleaves its sources (one source: no draw; several: a weighted draw
per sample from a generator seeded by ``(seed, epoch, consumer, step)``) and ends an epoch
when every finite source is exhausted. It yields :class:`Arrival` (a sample and what its
randomness and drop progress depend on), :class:`~patchpack.errors.ErrorRecord` and
:class:`EpochEnd`. ``state_dict``/``load_state_dict`` hold the epoch, the draw count and
every cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from ..errors import ErrorKind, ErrorRecord
from ..rng import example_rng
from ..sources import ShardTask, plan_shards, resampled_task, shard_order
from ..errors import ResumeError

__all__ = ["Arrival", "EpochEnd", "SourceSpec", "SourceCursor", "ReadStage", "TaskReader", "cursor_tasks"]

_CHOICE_STREAM = 0x313
_RESAMPLE_SEED = 7919

#: ``read(task, start) -> records``: one shard task's samples (or stored rows) from index ``start``
TaskReader = Callable[[ShardTask, int], Iterator]


class Arrival(NamedTuple):
    """One sample (or stored row) read: ``epoch`` seeds its randomness, ``fraction`` is where it
    sits in the epoch."""

    source: int
    epoch: int
    fraction: float
    sample: Any


class EpochEnd(NamedTuple):
    """The end of ``epoch``; ``last``: no epoch follows in this pass."""

    epoch: int
    last: bool


@dataclass(frozen=True)
class SourceSpec:
    """What a consumer needs to read one source: its shard urls, how to read a task, resampling."""

    urls: tuple[str, ...]
    read: TaskReader
    resampled: bool = False


def cursor_tasks(urls: Sequence[str], consumer: int, consumers: int, seed: int, shuffle: bool, epoch: int,
                 dealt: list[list] | None = None) -> list[tuple[ShardTask, int]]:
    """``(task, first index)`` pairs a consumer reads of one source in ``epoch``: the slices an
    elastic resume ``dealt`` it, or its planned shards (:func:`~patchpack.sources.plan_shards`)."""
    if dealt is not None:
        return [(ShardTask(u, int(o), int(s)), int(b)) for u, o, s, b in dealt]
    return [(t, 0) for t in plan_shards(urls, consumer, consumers, seed=seed, epoch=epoch, shuffle=shuffle)]


class SourceCursor:
    """One source's read position for one consumer (module doc)."""

    def __init__(self, spec: SourceSpec, index: int, consumer: int, consumers: int, seed: int, shuffle: bool):
        self.spec, self.index = spec, index
        self.consumer, self.consumers, self.seed, self.shuffle = consumer, consumers, seed, shuffle
        self.task, self.next, self.exhausted = 0, 0, False
        self.last: str | None = None  # key of the sample at next - 1 in the current task
        self.dealt: list[list] | None = None  # this epoch's slices, when an elastic resume dealt them
        self._ranks: tuple[int, dict[str, int]] | None = None

    def state_dict(self) -> dict:
        return {"task": self.task, "next": self.next, "exhausted": self.exhausted, "last": self.last,
                **({"dealt": self.dealt} if self.dealt is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.task, self.next, self.exhausted = int(state["task"]), int(state["next"]), bool(state["exhausted"])
        self.last, self.dealt = state.get("last"), state.get("dealt")

    def reset(self) -> None:
        """The start of the next epoch."""
        self.task, self.next, self.exhausted, self.last, self.dealt = 0, 0, False, None, None

    def tasks(self, epoch: int) -> list[tuple[ShardTask, int]]:
        """``(task, first index)`` of ``epoch``: the dealt slices, or this consumer's planned shards."""
        return cursor_tasks(self.spec.urls, self.consumer, self.consumers, self.seed, self.shuffle, epoch,
                            self.dealt)

    def fraction(self, epoch: int, url: str) -> float:
        """Where ``url`` sits in ``epoch``'s shard order, in ``[0, 1)`` (the same for any consumer count)."""
        if self._ranks is None or self._ranks[0] != epoch:
            order = shard_order(self.spec.urls, seed=self.seed, epoch=epoch, shuffle=self.shuffle)
            self._ranks = (epoch, {u: i for i, u in enumerate(order)})
        return self._ranks[1].get(url, 0) / max(1, len(self.spec.urls))

    def records(self, epoch: int) -> Iterator[tuple[int, float, Any]]:
        """``(epoch for randomness, fraction, record)`` from the position on, keeping it current."""
        if self.spec.resampled:
            yield from self._resampled()
            return
        tasks = self.tasks(epoch)
        while self.task < len(tasks):
            task, first = tasks[self.task]
            fraction = self.fraction(epoch, task.url)
            for rec in self._read(task, max(first, self.next)):
                yield epoch, fraction, rec
            self.task += 1
            self.next, self.last = (tasks[self.task][1] if self.task < len(tasks) else 0), None

    def _resampled(self) -> Iterator[tuple[int, float, Any]]:
        n = max(1, len(self.spec.urls))
        while True:  # the draw count is the epoch of a resampled source's randomness
            task = resampled_task(self.spec.urls, self.consumer, self.task,
                                  seed=self.seed + _RESAMPLE_SEED * self.index)
            for rec in self._read(task, self.next):
                yield self.task, min(1.0, self.task * self.consumers / n), rec
            self.task, self.next, self.last = self.task + 1, 0, None

    def _read(self, task: ShardTask, start: int) -> Iterator[Any]:
        """The task's records from ``start``; after a resume, the sample before ``start`` is read
        again and must be the one the state names."""
        check = self.last if start > 0 else None
        records = self.spec.read(task, start - 1 if check is not None else start)
        try:
            for rec in records:
                if check is not None:
                    if isinstance(rec, ErrorRecord) or rec.index != start - 1 or rec.key != check:
                        raise ResumeError(_moved(task.url, start - 1, check, rec))
                    check = None
                    continue
                if not isinstance(rec, ErrorRecord):
                    self.next, self.last = rec.index + 1, rec.key
                yield rec
        except ResumeError:
            raise
        except Exception as exc:  # a reader that raises ends its shard with a record
            yield ErrorRecord(task.url, task.url, "source", ErrorKind.SHARD,
                              f"source failed: {type(exc).__name__}: {str(exc)[:300]}")
        if check is not None:
            raise ResumeError(_moved(task.url, start - 1, check, None))


def _moved(url: str, index: int, key: str, found) -> str:
    what = (f"sample {found.index} is {found.key!r}" if found is not None and not isinstance(found, ErrorRecord)
            else f"there is no readable sample {index}")
    return (f"{url} changed since the state was saved: the state's position is after sample {index} "
            f"({key!r}), but {what}; resume needs the same shards")


class ReadStage:
    """Every source's records for one consumer, interleaved by weight, epoch after epoch (module doc)."""

    def __init__(self, cursors: Sequence[SourceCursor], weights: Sequence[float], consumer: int, seed: int,
                 start_epoch: int, epochs: int | None) -> None:
        self.cursors, self.weights = list(cursors), list(weights)
        self.consumer, self.seed = consumer, seed
        self.epoch, self.step, self.done = start_epoch, 0, False
        self.end = None if epochs is None or all(c.spec.resampled for c in self.cursors) else start_epoch + epochs

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "done": self.done,
                "sources": [c.state_dict() for c in self.cursors]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step, self.done = int(state["epoch"]), int(state["step"]), bool(state["done"])
        for cursor, s in zip(self.cursors, state["sources"]):
            cursor.load_state_dict(s)

    def __iter__(self) -> Iterator[Arrival | ErrorRecord | EpochEnd]:
        while not self.done and (self.end is None or self.epoch < self.end):
            yield from self._epoch()
            for c in self.cursors:
                if not c.spec.resampled:
                    c.reset()
            self.epoch, self.step = self.epoch + 1, 0
            self.done = self.end is not None and self.epoch >= self.end
            yield EpochEnd(self.epoch - 1, self.done)

    def _epoch(self) -> Iterator[Arrival | ErrorRecord]:
        readers: dict[int, Iterator] = {}
        finite = [c.index for c in self.cursors if not c.spec.resampled]
        while True:
            live = [c.index for c in self.cursors if not c.exhausted]
            if not live or (finite and all(self.cursors[k].exhausted for k in finite)):
                return
            k = live[0] if len(self.cursors) == 1 else self._choose(live)
            self.step += 1
            if k not in readers:
                readers[k] = self.cursors[k].records(self.epoch)
            item = next(readers[k], None)
            if item is None:
                self.cursors[k].exhausted = True
                continue
            epoch, fraction, rec = item
            yield rec if isinstance(rec, ErrorRecord) else Arrival(k, epoch, fraction, rec)

    def _choose(self, live: list[int]) -> int:
        rng = example_rng(self.seed, self.epoch, f"mix:{self.consumer}:{self.step}", _CHOICE_STREAM)
        weights = [self.weights[k] for k in live]
        u = float(rng.random()) * sum(weights)
        for k, w in zip(live, weights):
            u -= w
            if u < 0:
                return k
        return live[-1]

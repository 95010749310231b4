"""Weighted mixtures of datasets: one consumer stream interleaving several sources.

Each source (:class:`patchpack.sources.mixture.Source`) has its own shards, weight and
loader options. Every consumer splits every source's shards as a plain loader would
(:func:`patchpack.sources.plan_shards`), so each source is read exactly once per epoch over
all consumers (or endlessly, for a resampled source). Sample by sample, the consumer draws
the next source among those not yet exhausted with probability proportional to their
weights; the draw comes from a generator seeded by ``(seed, epoch, consumer, step)``, so the
interleaving is deterministic and resumes exactly. An epoch ends when every source that is
not resampled is exhausted. One packer serves all sources: they must share the token width
(patch size and tubelet) and the pack options; an image source mixed with video sources
takes the video config, so its images become one-tubelet clips.

Stats are also kept per source (``info["sources"]``: name -> :class:`PackStats`).
A resume with the same layout continues the interleaving exactly; an elastic one
(:func:`redeal_mixture`) re-deals every finite source's unread shards and the held examples
over the new consumers (each example still once per epoch; resampled sources draw anew).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Iterator, Sequence

from ..config import LoaderConfig
from ..errors import ErrorRecord
from ..rng import example_rng
from ..sources import Sample, plan_shards, read_task, resampled_task
from ..sources.mixture import Source, as_sources
from ..stats import PackStats
from ..tokenize import Tokens
from .elastic import ElasticResumeError, check_epoch, deal_slices, held_refs, dealt_tasks
from .state import Held
from .stream import ConsumerStream

__all__ = ["Mixture", "MixtureStream", "redeal_mixture"]

# loader options one packer and one batch layout need the same for every source
_SHARED = ("pack", "batch_size", "max_per_seq", "epochs", "resampled", "rank", "world_size", "errors",
           "errors_path", "progress_samples", "shuffle_shards")
_CHOICE_STREAM = 0x313


class Mixture:
    """Sources resolved against a base config: expanded urls, one :class:`LoaderConfig` per source."""

    def __init__(self, sources: Any, base: LoaderConfig) -> None:
        self.sources: list[Source] = as_sources(sources)
        self.names = [s.name for s in self.sources]
        self.urls_by_source = [s.expanded() for s in self.sources]
        self._owner: dict[str, int] = {}
        for k, urls in enumerate(self.urls_by_source):
            for u in urls:
                if self._owner.setdefault(u, k) != k:
                    raise ValueError(f"shard {u!r} is in sources {self.names[self._owner[u]]!r} and "
                                     f"{self.names[k]!r}; a shard belongs to one source")
        configs = [self._config(base, s) for s in self.sources]
        videos = [c.video for c in configs if c.video is not None]
        if videos:  # images become one-tubelet clips beside the videos
            configs = [c if c.video is not None else replace(c, video=videos[0]) for c in configs]
        dims = {(c.patch_size, c.tubelet) for c in configs}
        if len(dims) > 1:
            raise ValueError(f"mixed sources must share the token width: patch size and tubelet differ {sorted(dims)}")
        self.configs = configs
        #: the loader-level config: the base, with the mixture's video config when a source has one
        #: (the batch's token width is the sources' token width)
        self.base = base if base.video is not None or not videos else replace(base, video=videos[0])
        #: per source: drawn with replacement, endlessly (its own flag, or the loader's ``resampled``)
        self.resampled = [s.resampled or base.resampled for s in self.sources]
        total = sum(s.weight for s in self.sources)
        self.weights = [s.weight / total for s in self.sources]

    @staticmethod
    def _config(base: LoaderConfig, source: Source) -> LoaderConfig:
        cfg = base.with_overrides(**source.overrides)
        for name in _SHARED:
            if getattr(cfg, name) != getattr(base, name):
                raise ValueError(f"source {source.name!r}: option {name!r} cannot differ per source (one packer "
                                 "and one batch layout serve the whole mixture); set it on the loader")
        return cfg

    @property
    def urls(self) -> list[str]:
        """Every shard url of every source, source by source."""
        return [u for urls in self.urls_by_source for u in urls]

    def source_of(self, url: str) -> int | None:
        """Index of the source a shard url belongs to (``None`` if none)."""
        return self._owner.get(url)

    def signature(self) -> list:
        """JSON-ready description (names, weights, resampling, overrides) for state fingerprints."""
        return [[s.name, s.weight, s.resampled, json.loads(json.dumps(s.overrides, sort_keys=True, default=repr))]
                for s in self.sources]


class MixtureStream(ConsumerStream):
    """The deterministic batch stream of one consumer over a :class:`Mixture` (module doc)."""

    def __init__(self, mixture: Mixture, cfg: LoaderConfig, consumer: int, num_consumers: int, worker: int,
                 start_epoch: int = 0, state: dict | None = None) -> None:
        self.mixture = mixture
        self.step = 0  # source draws made in this epoch
        self.mix_dealt: list | None = None  # per source, this epoch's re-dealt tasks (elastic resume)
        self.pos = [[0, 0, False] for _ in mixture.sources]  # per source: task, next sample index, exhausted
        self.source_stats = [PackStats() for _ in mixture.sources]
        super().__init__(mixture.urls, cfg, consumer, num_consumers, worker, start_epoch, state)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["mix"] = {"step": self.step, "pos": [list(p) for p in self.pos],
                        **({"dealt": self.mix_dealt} if self.mix_dealt is not None else {})}
        return state

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        mix = state.get("mix")
        if mix is None or len(mix["pos"]) != len(self.pos):
            raise ValueError("the state is not a state of this mixture (resume with the same sources)")
        self.step = int(mix["step"])
        self.pos = [[int(t), int(n), bool(x)] for t, n, x in mix["pos"]]
        self.mix_dealt = mix.get("dealt")

    # -- per-source config, stats and errors --------------------------------------------
    def _as_source(self, url: str, fn, *args):
        k = self.mixture.source_of(url)
        if k is None:
            return fn(*args)
        base, self.cfg = self.cfg, self.mixture.configs[k]
        try:
            return fn(*args)
        finally:
            self.cfg = base

    def _admit(self, sample: Sample, epoch: int):
        return self._as_source(sample.shard, super()._admit, sample, epoch)

    def _tokens(self, item: Held, length: int) -> Tokens:
        tok = self._as_source(item.shard, super()._tokens, item, length)
        k = self.mixture.source_of(item.shard)
        if k is not None:  # per source: examples and tokens packed, drops, grids, sizes (no sequences)
            st = self.source_stats[k]
            st.add_example(item.plan.tokens, len(tok), item.plan.grid, item.plan.source_size)
            st.examples += 1
            st.tokens += len(tok)
        return tok

    def _record(self, rec: ErrorRecord) -> None:
        super()._record(rec)
        k = self.mixture.source_of(rec.shard)
        if k is not None:
            self.source_stats[k].add_error(rec)

    def _info(self, empty: bool = False) -> dict:
        info = super()._info(empty)
        info["sources"] = dict(zip(self.mixture.names, self.source_stats))
        self.source_stats = [PackStats() for _ in self.mixture.sources]
        return info

    # -- interleaving ---------------------------------------------------------------------
    def _records(self, k: int) -> Iterator[tuple[int, Sample | ErrorRecord]]:
        """Source ``k``'s records from its position on, keeping ``self.pos[k]`` current."""
        cfg, pos = self.cfg, self.pos[k]
        urls = self.mixture.urls_by_source[k]
        options = self.mixture.configs[k].read_options  # the source's own member cap and verify
        if self.mixture.resampled[k]:
            while True:
                task = resampled_task(urls, self.consumer, pos[0], seed=cfg.seed + 7919 * (k + 1))
                for rec in read_task(task, pos[1], options=options):
                    if isinstance(rec, Sample):
                        pos[1] = rec.index + 1
                    yield pos[0], rec
                pos[0], pos[1] = pos[0] + 1, 0
        if self.mix_dealt is not None and self.mix_dealt[k] is not None:
            tasks = dealt_tasks(self.mix_dealt[k])
        else:
            tasks = [(t, 0) for t in plan_shards(urls, self.consumer, self.num_consumers, seed=cfg.seed,
                                                 epoch=self.epoch, shuffle=cfg.shuffle_shards)]
        while pos[0] < len(tasks):
            for rec in read_task(tasks[pos[0]][0], pos[1], options=options):
                if isinstance(rec, Sample):
                    pos[1] = rec.index + 1
                yield self.epoch, rec
            pos[0] += 1
            pos[1] = tasks[pos[0]][1] if pos[0] < len(tasks) else 0

    def _choose(self, live: Sequence[int]) -> int:
        rng = example_rng(self.cfg.seed, self.epoch, f"mix:{self.consumer}:{self.step}", _CHOICE_STREAM)
        weights = [self.mixture.weights[k] for k in live]
        u = float(rng.random()) * sum(weights)
        for k, w in zip(live, weights):
            u -= w
            if u < 0:
                return k
        return live[-1]

    def _epoch_stream(self) -> Iterator[tuple[int, Sample | ErrorRecord]]:
        sources = self.mixture.sources
        finite = [k for k in range(len(sources)) if not self.mixture.resampled[k]]
        readers: dict[int, Iterator] = {}
        while True:
            live = [k for k in range(len(sources)) if not self.pos[k][2]]
            if not live or (finite and all(self.pos[k][2] for k in finite)):
                break
            k = self._choose(live)
            self.step += 1
            if k not in readers:
                readers[k] = self._records(k)
            rec = next(readers[k], None)
            if rec is None:
                self.pos[k][2] = True
                continue
            yield rec
        for k in finite:  # the next epoch reads every finite source again
            self.pos[k] = [0, 0, False]
        self.step, self.mix_dealt = 0, None


def _source_slices(state: dict | None, urls: list[str], source: int, cfg: LoaderConfig, consumer: int,
                   consumers: int, epoch: int) -> list[list]:
    """The unread ``[url, offset, stride, start]`` slices of one source of one old consumer."""
    planned = [[t.url, t.offset, t.stride, 0] for t in plan_shards(
        urls, consumer, consumers, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle_shards)]
    if state is None:
        return planned
    if state.get("done") or int(state["epoch"]) > epoch:
        return []
    mix = state["mix"]
    task, nxt, exhausted = mix["pos"][source]
    if exhausted:
        return []
    dealt = (mix.get("dealt") or [None] * len(mix["pos"]))[source]
    tasks = [list(t) for t in dealt] if dealt is not None else planned
    return [[u, int(o), int(st), max(int(b), int(nxt)) if i == int(task) else int(b)]
            for i, (u, o, st, b) in enumerate(tasks) if i >= int(task)]


def redeal_mixture(states: dict[int, dict | None], mixture: Mixture, cfg: LoaderConfig, old_consumers: int,
                   new_consumers: int, epoch: int) -> list[dict]:
    """Start states of ``new_consumers`` consumers finishing ``epoch`` of a mixture: every finite
    source's unread slices are dealt over the new consumers (as
    :func:`patchpack.pipeline.elastic.redeal` does for one dataset), held examples likewise;
    resampled sources start new draws."""
    full = {c: states.get(c) for c in range(old_consumers)}
    check_epoch(full, epoch)
    for c, st in full.items():
        if st is not None and int(st["epoch"]) > epoch and not st.get("done") and any(
                int(p[0]) or int(p[1]) for k, p in enumerate(st.get("mix", {}).get("pos", []))
                if not mixture.resampled[k]):
            raise ElasticResumeError(f"consumer {c} already started epoch {st['epoch']}: elastic resume works "
                                     "within one epoch; resume with the same num_workers and world size")
    k_all = range(len(mixture.sources))
    per_source: list[list[list[list]]] = []
    for k in k_all:
        if mixture.resampled[k]:
            per_source.append([[] for _ in range(new_consumers)])
            continue
        slices = [sl for c in range(old_consumers)
                  for sl in _source_slices(full[c], mixture.urls_by_source[k], k, cfg, c, old_consumers, epoch)]
        per_source.append(deal_slices(slices, new_consumers))
    held = sorted((r for st in full.values() for r in held_refs(st) if int(r["epoch"]) == epoch),
                  key=lambda r: (r["shard"], int(r["index"])))
    seen = sum(int(st["seen"]) for st in full.values() if st is not None)
    if any(st is not None and "mix" not in st for st in full.values()):
        raise ElasticResumeError("the state is not a state of this mixture (resume with the same sources)")
    out = []
    for c in range(new_consumers):
        mine = [None if mixture.resampled[k] else per_source[k][c] for k in k_all]
        pos = [[0, int(m[0][3]) if m else 0, False] for m in mine]
        out.append({
            "epoch": epoch, "task": 0, "next": 0, "seen": seen // new_consumers, "batches": 0, "done": False,
            "packer": None, "rows": [], "pending": held[c::new_consumers],
            "mix": {"step": 0, "pos": pos, "dealt": mine},
        })
    return out

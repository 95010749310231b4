"""What the packer holds: :class:`Held` examples (compressed bytes or stored tokens, plus their plan),
and the resume-state codec that writes each as a small JSON-ready reference (no bytes).

A state holds every buffered example as ``{"__item__": ref}``; :func:`restore_held` re-reads
the referenced samples from their shards once (one scan per shard) and rebuilds them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

from ..example import Plan
from ..sources import Sample, StoredSample, fetch_samples
from ..sources.readers import ReadOptions
from ..errors import ResumeError

__all__ = ["Held", "to_refs", "collect_refs", "from_refs", "restore_held", "held_bytes"]


class Held:
    """A packer handle: one admitted example, its compressed bytes (or stored tokens) and its plan.

    Attributes:
        key, shard, index: where it came from (sample index within its shard).
        epoch: the epoch its randomness belongs to.
        source: index of its source in the loader's sources (0 without a mixture).
        member: the media member's name (``""`` for stored examples).
        data: the member's bytes, or the stored :class:`~patchpack.tokenize.Tokens`.
        plan: the fitted :class:`~patchpack.example.Plan`.
        keep: tokens kept after dropping.
        labels: its label set (empty: unlabelled).
        fields: its text fields by name.
    """

    __slots__ = ("key", "shard", "index", "epoch", "source", "member", "data", "plan", "keep", "labels",
                 "fields", "_wrapped")

    def __init__(self, key: str, shard: str, index: int, epoch: int, source: int, member: str, data: Any,
                 plan: Plan, keep: int, labels: tuple[int, ...] = (), fields: dict | None = None) -> None:
        self.key, self.shard, self.index, self.epoch, self.source = key, shard, index, epoch, source
        self.member, self.data, self.plan, self.keep = member, data, plan, keep
        self.labels, self.fields = labels, fields or {}
        self._wrapped: dict | None = None

    def ref(self) -> dict:
        """JSON-ready reference (no bytes, no fields: both are re-read from the shard)."""
        return {"key": self.key, "shard": self.shard, "index": self.index, "epoch": self.epoch,
                "source": self.source, "member": self.member, "keep": self.keep, "labels": list(self.labels),
                "plan": self.plan.to_json()}

    def wrapped(self) -> dict:
        """``{"__item__": ref}``, built once and shared by every state that holds this example
        (states are read-only snapshots: nothing mutates them)."""
        if self._wrapped is None:
            self._wrapped = {"__item__": self.ref()}
        return self._wrapped


def held_bytes(item: Held) -> int:
    """Bytes an admitted example holds in the packer: compressed media, its key and its text
    fields (stored tokens are memory-mapped and count only their key and fields)."""
    data = item.data
    n = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0
    return n + len(item.key) + sum(len(v) for v in item.fields.values() if v)


def to_refs(obj: Any) -> Any:
    """Replace every :class:`Held` in a nested state by ``{"__item__": ref}`` (JSON-ready).

    Runs once per batch over the whole packer buffer, so the common shape, a list of
    ``(arrival, length, Held)`` entries, takes a flat path instead of three recursive calls.
    """
    if isinstance(obj, Held):
        return obj.wrapped()
    if isinstance(obj, dict):
        return {k: to_refs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        try:
            return [[a, n, h.wrapped()] for a, n, h in obj]  # (arrival, length, Held) entries
        except (TypeError, ValueError, AttributeError):
            return [to_refs(v) for v in obj]
    return obj


def collect_refs(obj: Any, out: list) -> list:
    """Every ``{"__item__": ref}``'s ref in a nested state, appended to ``out`` (returned)."""
    if isinstance(obj, dict):
        if "__item__" in obj:
            out.append(obj["__item__"])
        else:
            for v in obj.values():
                collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            collect_refs(v, out)
    return out


def from_refs(obj: Any, make: Callable[[dict], Any]) -> Any:
    """The nested state with every ``{"__item__": ref}`` replaced by ``make(ref)``."""
    if isinstance(obj, dict):
        if "__item__" in obj:
            return make(obj["__item__"])
        return {k: from_refs(v, make) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [from_refs(v, make) for v in obj]
    return obj


def restore_held(refs: Iterable[dict], options: Callable[[int], ReadOptions],
                 fields_of: Callable[[Sample, int], dict]) -> Callable[[dict], Held]:
    """Re-read the samples ``refs`` name (each shard scanned once) and return ``make(ref) -> Held``.

    ``options(source)`` are the read options of a source; ``fields_of(sample, source)`` reads a
    sample's text fields as admission did.

    Raises:
        ResumeError: a referenced sample is gone or is another sample now (the shard changed).
    """
    wanted: dict[str, set[int]] = defaultdict(set)
    source_of: dict[str, int] = {}
    for r in refs:
        wanted[r["shard"]].add(int(r["index"]))
        source_of.setdefault(r["shard"], int(r["source"]))
    fetched: dict[str, dict[int, Sample]] = {}
    for url, indices in wanted.items():
        try:
            fetched[url] = fetch_samples(url, indices, options(source_of[url]))
        except KeyError as exc:
            raise ResumeError(f"{url} changed since the state was saved: {exc.args[0]}; resume needs the same "
                              "shards") from None

    def make(ref: dict) -> Held:
        sample = fetched[ref["shard"]][int(ref["index"])]
        if sample.key != ref["key"]:
            raise ResumeError(f"{ref['shard']} changed since the state was saved: sample {ref['index']} is "
                              f"{sample.key!r}, the state expects {ref['key']!r}; resume needs the same shards")
        source = int(ref["source"])
        data = sample.tokens if isinstance(sample, StoredSample) else sample.members[ref["member"]]
        fields = fields_of(sample, source)
        return Held(ref["key"], ref["shard"], int(ref["index"]), int(ref["epoch"]), source, ref["member"], data,
                    Plan.from_json(ref["plan"]), int(ref["keep"]), tuple(int(v) for v in ref["labels"]), fields)

    return make

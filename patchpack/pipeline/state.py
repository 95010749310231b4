"""The resume-state codec: held examples as small JSON-ready references (no bytes)."""

from __future__ import annotations

from typing import Any

from ..example import Plan

__all__ = ["Held", "to_refs", "collect_refs", "from_refs"]


class Held:
    """A packer handle: the compressed bytes (or stored tokens) of one example plus its plan."""

    __slots__ = ("key", "shard", "index", "epoch", "member", "kind", "data", "plan", "keep", "label", "_ref",
                 "_wrapped")

    def __init__(self, key, shard, index, epoch, member, kind, data, plan, keep, label):
        self.key, self.shard, self.index, self.epoch = key, shard, index, epoch
        self.member, self.kind, self.data, self.plan = member, kind, data, plan
        self.keep, self.label = keep, label
        self._ref: dict | None = None
        self._wrapped: dict | None = None

    def ref(self) -> dict:
        """JSON-ready reference (no bytes); built once, since every batch's state repeats it."""
        if self._ref is None:
            self._ref = self._make_ref()
        return self._ref

    def wrapped(self) -> dict:
        """``{"__item__": ref}``, built once and shared by every state that holds this example
        (states are read-only snapshots: nothing mutates them)."""
        if self._wrapped is None:
            self._wrapped = {"__item__": self.ref()}
        return self._wrapped

    def _make_ref(self) -> dict:
        p = self.plan
        return {
            "key": self.key, "shard": self.shard, "index": self.index, "epoch": self.epoch,
            "member": self.member, "kind": self.kind, "keep": self.keep, "label": self.label,
            "plan": p.to_json(),
        }

    @classmethod
    def from_ref(cls, ref: dict, data: bytes) -> "Held":
        plan = Plan.from_json(ref["plan"])
        return cls(ref["key"], ref["shard"], ref["index"], ref["epoch"], ref["member"], ref["kind"], data,
                   plan, ref["keep"], ref["label"])


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


def collect_refs(obj: Any, out: list) -> None:
    if isinstance(obj, dict):
        if "__item__" in obj:
            out.append(obj["__item__"])
        else:
            for v in obj.values():
                collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            collect_refs(v, out)


def from_refs(obj: Any, make) -> Any:
    if isinstance(obj, dict):
        if "__item__" in obj:
            return make(obj["__item__"])
        return {k: from_refs(v, make) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [from_refs(v, make) for v in obj]
    return obj


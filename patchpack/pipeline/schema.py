"""Worker resume states: their shape, and one check of a state before it is trusted.

A worker's state nests its stages' states, grain-style: the batch stage's holds its pack
stage's (or, for stored packed rows, the stored-row stage's) under ``"parent"``, which holds
the admit stage's, which holds the read stage's::

    {"batches", "epoch", "parent": {"packer", "rows", ["pending"], "parent":
        {"parent": {"epoch", "step", "done", "sources": [{"task", "next", "exhausted", "last", ["dealt"]}]}}}}

:func:`check_worker_state` checks every field (present, of its type, in range, consistent
with the loader's sources) and raises :class:`ResumeError` naming the field, in one line.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import ResumeError
from ..pack import PackConfig
from ..pack.base import check_packer_state
from .held import collect_refs

__all__ = ["ResumeError", "stage_states", "read_state", "pack_state", "check_worker_state", "MAX_POSITION"]

#: Largest sample index or count a state may hold (beyond it the state is refused as impossible).
MAX_POSITION = 2**48


def stage_states(state: dict) -> list[dict]:
    """The stages' states of a worker state, outermost (batch) first, the read stage's last."""
    out = [state]
    while isinstance(out[-1], dict) and "parent" in out[-1]:
        out.append(out[-1]["parent"])
    return out


def read_state(state: dict) -> dict:
    """The read stage's state (epoch, step, done, per-source cursors) of a worker state."""
    return stage_states(state)[-1]


def pack_state(state: dict) -> dict | None:
    """The pack stage's state (packer buffer, rows, pending) of a worker state, if it has one."""
    return next((s for s in stage_states(state) if isinstance(s, dict) and "packer" in s), None)


def _int(value: Any, where: str, low: int = 0, high: int = MAX_POSITION) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResumeError(f"state field {where}: {str(value)[:40]!r} is not an integer")
    if not low <= value <= high:
        raise ResumeError(f"state field {where}: {value} is outside [{low}, {high}]")
    return value


def _get(obj: Any, name: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ResumeError(f"state field {where}: expected an object, got {type(obj).__name__}")
    if name not in obj:
        raise ResumeError(f"state field {where}.{name} is missing")
    return obj[name]


def _check_ref(ref: Any, where: str, urls: Sequence[Sequence[str]]) -> None:
    from ..example import Plan

    shard = _get(ref, "shard", where)
    source = _int(_get(ref, "source", where), f"{where}.source", 0, len(urls) - 1)
    if shard not in urls[source]:
        raise ResumeError(f"state field {where}.shard: {str(shard)[:80]!r} is not a shard of source {source}")
    if not isinstance(_get(ref, "key", where), str) or not isinstance(_get(ref, "member", where), str):
        raise ResumeError(f"state field {where}: key and member must be strings")
    _int(_get(ref, "index", where), f"{where}.index")
    _int(_get(ref, "epoch", where), f"{where}.epoch")
    _int(_get(ref, "keep", where), f"{where}.keep", 1)
    labels = _get(ref, "labels", where)
    if not isinstance(labels, list):
        raise ResumeError(f"state field {where}.labels: not a list")
    for i, v in enumerate(labels):
        _int(v, f"{where}.labels.{i}", 0, 2**31 - 1)
    try:
        Plan.from_json(_get(ref, "plan", where))
    except ValueError as exc:
        raise ResumeError(f"state field {where}.plan: {exc}") from None


def _check_cursor(cur: Any, where: str, tasks: int, urls: Sequence[str]) -> None:
    task = _int(_get(cur, "task", where), f"{where}.task")
    _int(_get(cur, "next", where), f"{where}.next")
    if not isinstance(_get(cur, "exhausted", where), bool):
        raise ResumeError(f"state field {where}.exhausted: not true or false")
    last = cur.get("last")
    if last is not None and not isinstance(last, str):
        raise ResumeError(f"state field {where}.last: not a key")
    dealt = cur.get("dealt")
    if dealt is not None:
        if not isinstance(dealt, list):
            raise ResumeError(f"state field {where}.dealt: not a list")
        for i, sl in enumerate(dealt):
            if not isinstance(sl, list) or len(sl) != 4 or sl[0] not in urls:
                raise ResumeError(f"state field {where}.dealt.{i}: not a [shard url, offset, stride, start] slice "
                                  "of this source")
            stride = _int(sl[2], f"{where}.dealt.{i}.stride", 1)
            _int(sl[1], f"{where}.dealt.{i}.offset", 0, stride - 1)
            _int(sl[3], f"{where}.dealt.{i}.start")
        tasks = len(dealt)
    if tasks >= 0 and task > tasks:
        raise ResumeError(f"state field {where}.task: {task} is past this consumer's {tasks} shard tasks")


def check_worker_state(state: Any, where: str, urls: Sequence[Sequence[str]], resampled: Sequence[bool],
                       tasks_of: Callable[[int, int], int], pack: PackConfig) -> None:
    """Check one worker's state (module doc) against the loader's sources.

    Args:
        where: the field path of this state, for messages (``"workers.1"``).
        urls: each source's shard urls; resampled: whether each source is drawn endlessly.
        tasks_of(source, epoch): this consumer's planned shard tasks of a source in an epoch.
        pack: the loader's packing config (the packer state is checked against it).

    Raises:
        ResumeError: the first field that is missing, of another type, out of range, or naming
            a shard or source this loader does not have.
    """
    stages = stage_states(state)
    _int(_get(state, "batches", where), f"{where}.batches")
    _int(_get(state, "epoch", where), f"{where}.epoch")
    rd = stages[-1]
    rw = where + ".parent" * (len(stages) - 1)
    epoch = _int(_get(rd, "epoch", rw), f"{rw}.epoch")
    _int(_get(rd, "step", rw), f"{rw}.step")
    if not isinstance(_get(rd, "done", rw), bool):
        raise ResumeError(f"state field {rw}.done: not true or false")
    cursors = _get(rd, "sources", rw)
    if not isinstance(cursors, list) or len(cursors) != len(urls):
        raise ResumeError(f"state field {rw}.sources: expected {len(urls)} source positions (resume with the same "
                          "sources)")
    for k, cur in enumerate(cursors):
        _check_cursor(cur, f"{rw}.sources.{k}", -1 if resampled[k] else tasks_of(k, epoch), urls[k])
    ps = pack_state(state)
    if ps is not None:
        pw = where + ".parent"
        if not (ps["packer"] is None or isinstance(ps["packer"], dict)) or not isinstance(_get(ps, "rows", pw), list) \
                or not isinstance(ps.get("pending", []), list):
            raise ResumeError(f"state field {pw}: packer, rows and pending must be an object and lists")
        if ps["packer"] is not None:
            try:
                check_packer_state(ps["packer"], pack)
            except ValueError as exc:
                raise ResumeError(f"state field {pw}.{exc}") from None
        for i, ref in enumerate(collect_refs([ps["packer"], ps["rows"], ps.get("pending", [])], [])):
            _check_ref(ref, f"{pw} held example {i}", urls)

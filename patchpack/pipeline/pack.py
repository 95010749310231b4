"""The pack stage: held examples in, packed sequences out, the packer's buffer as its state.

The packer (:func:`~patchpack.pack.make_packer`) sees token counts and handles only; it holds
compressed bytes, never pixels, and builds sequences early when the held bytes pass
``PackConfig.buffer_bytes``. An epoch's end flushes it (nothing waits across epochs). Examples
longer than ``L`` come back as ``oversize`` records. The state holds the buffer and the
sequences emitted but not yet taken, each example as a reference; ``pending`` examples (dealt
by an elastic resume) are pushed before anything is read.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

from ..errors import ErrorKind, ErrorRecord
from ..pack import PackConfig, PackedSequence, make_packer
from .admit import AdmitStage
from .held import Held, from_refs, held_bytes, to_refs
from .read import EpochEnd

__all__ = ["PackStage"]


class PackStage:
    """Streaming bin packing of ``parent``'s examples (module doc)."""

    def __init__(self, parent: AdmitStage, config: PackConfig) -> None:
        self.parent, self.config = parent, config
        self.packer = make_packer(config, size_of=held_bytes)
        self.queue: deque[PackedSequence | ErrorRecord] = deque()
        self.pending: list[Held] = []

    def state_dict(self) -> dict:
        return {"packer": to_refs(self.packer.state_dict()),
                "rows": [to_refs(list(s)) for s in self.queue if isinstance(s, PackedSequence)],
                "parent": self.parent.state_dict()}

    def load_state_dict(self, state: dict, make: Callable[[dict], Held]) -> None:
        """Restore from ``state``; ``make(ref)`` rebuilds a held example from its reference."""
        if state["packer"] is not None:
            self.packer.load_state_dict(from_refs(state["packer"], make))
        self.queue = deque(PackedSequence(*from_refs(r, make)) for r in state["rows"])
        self.pending = from_refs(state.get("pending", []), make)
        self.parent.load_state_dict(state["parent"])

    def __iter__(self) -> Iterator[PackedSequence | ErrorRecord | EpochEnd]:
        pending, self.pending = self.pending, []
        for held in pending:
            self._push(held)
        yield from self._drain()
        for item in self.parent:
            if isinstance(item, Held):
                self._push(item)
            elif isinstance(item, EpochEnd):
                self.queue.extend(self.packer.flush())
                self.queue.append(item)
            else:
                self.queue.append(item)
            yield from self._drain()
        self.queue.extend(self.packer.flush())
        yield from self._drain()

    def _push(self, held: Held) -> None:
        out = self.packer.push(held, held.keep)
        for h, length in out.rejected:
            self.queue.append(ErrorRecord(h.key, h.shard, "pack", ErrorKind.OVERSIZE,
                                          f"{length} tokens > seq_len={self.config.seq_len}"))
        self.queue.extend(out)

    def _drain(self) -> Iterator[PackedSequence | ErrorRecord | EpochEnd]:
        while self.queue:
            yield self.queue.popleft()

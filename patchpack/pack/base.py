"""The packer contract: :class:`Packer` (the base class), :class:`Emitted`, the packer registry."""

from __future__ import annotations

from typing import Any, Callable

from .buffer import Bin
from .config import PACKERS, OversizeError, PackConfig, PackedSequence

__all__ = ["Packer", "Emitted", "register_packer", "make_packer", "check_packer_state"]


class Emitted(list):
    """What :meth:`Packer.push` / :meth:`Packer.flush` return: the completed sequences (a list of
    :class:`PackedSequence`), and in ``rejected`` the ``(handle, length)`` of examples refused
    under ``oversize="skip"`` by this call."""

    __slots__ = ("rejected",)

    def __init__(self, sequences: Any = (), rejected: Any = ()) -> None:
        if sequences:
            super().__init__(sequences)
        self.rejected: list[tuple[Any, int]] = list(rejected) if rejected else []


class Packer:
    """A streaming packer: :meth:`push` examples, collect emitted sequences, :meth:`flush` at the end.

    :func:`make_packer` makes the packer registered for ``config.algorithm``. A new algorithm
    subclasses :class:`Packer`, implements the hook :meth:`place` (and :meth:`flush` when it
    holds examples back) using :attr:`open_bins`, :meth:`emit` and :meth:`is_full`, and is
    registered with :func:`register_packer`.

    >>> p = make_packer(PackConfig(seq_len=8, buffer_size=4))
    >>> out = [s for n in [5, 3, 4, 4, 8, 1] for s in p.push(n, n)] + p.flush()
    >>> [s.lengths for s in out]
    [[5, 3], [4, 4], [8], [1]]

    ``size_of(handle)`` (set by :func:`make_packer`, optional) gives an example's size in
    bytes; packers that buffer (``bfd``) then keep the held bytes under ``config.buffer_bytes``.

    Attributes:
        config: the packing policy.
        truncated_tokens: tokens cut by ``oversize="truncate"``.
        held_bytes: bytes of the examples held (0 without ``size_of``).
        arrivals: examples pushed so far (rejected ones included).
        open_bins: open (or carried) sequences, oldest first.
    """

    def __init__(self, config: PackConfig | None = None) -> None:
        self.config = config or PackConfig()
        self._seq_len = self.config.seq_len  # hot-path constant (the config is frozen)
        self.size_of: Callable[[Any], int] | None = None
        self.held_bytes = 0
        self.truncated_tokens = 0
        self.arrivals = 0
        self.open_bins: list[Bin] = []  # open (or carried) sequences, oldest first

    # -- public API -----------------------------------------------------------------
    @property
    def held(self) -> int:
        """Examples currently held (in open sequences, and buffered where the algorithm buffers)."""
        return sum(len(b.items) for b in self.open_bins)

    def push(self, handle: Any, length: int) -> Emitted:
        """Add one example of ``length`` tokens; return the sequences this completes (and any rejection)."""
        length = int(length)
        arrival = self.arrivals
        if length < 1 or length > self._seq_len:
            packed = self._irregular(handle, length)
            if packed == 0:
                self.arrivals += 1
                return Emitted((), [(handle, length)])
            length = packed
        self.arrivals = arrival + 1
        return self.place(arrival, length, handle)

    def flush(self) -> Emitted:
        """Emit everything held (end of stream)."""
        out = Emitted(self.emit(b) for b in self.open_bins)
        self.open_bins = []
        return out

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (handles are stored as given)."""
        return {
            "arrivals": self.arrivals,
            "buffer": [],
            "open": [(b.free, b.oldest, list(b.items)) for b in self.open_bins],
            "truncated_tokens": self.truncated_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (checked first: :func:`check_packer_state`)."""
        check_packer_state(state, self.config)
        size_of = self.size_of
        self.__init__(self.config)
        self.size_of = size_of
        self.arrivals = int(state["arrivals"])
        for free, oldest, items in state["open"]:
            b = Bin(int(free), int(oldest))
            b.items = [tuple(x) for x in items]
            self.open_bins.append(b)
            if self.size_of is not None:
                self.held_bytes += sum(self.size_of(x[2]) for x in b.items)
        self.truncated_tokens = int(state["truncated_tokens"])

    # -- for subclasses ---------------------------------------------------------------
    def place(self, arrival: int, length: int, handle: Any) -> Emitted:  # pragma: no cover - abstract
        raise NotImplementedError

    def _irregular(self, handle: Any, length: int) -> int:
        """Length to pack for an example outside ``1..seq_len`` (0: refused, returned as rejected)."""
        cfg = self.config
        if length < 1:
            raise ValueError(f"example {handle!r} has {length} tokens; every example needs at least one")
        if cfg.oversize == "raise":
            raise OversizeError(f"example {handle!r} has {length} tokens > seq_len={cfg.seq_len}")
        if cfg.oversize == "skip":
            return 0
        self.truncated_tokens += length - cfg.seq_len
        return cfg.seq_len

    def emit(self, b: Bin) -> PackedSequence:
        arrivals, lengths, handles = zip(*b.items)
        if self.size_of is not None:
            self.held_bytes -= sum(self.size_of(h) for h in handles)
        return PackedSequence(list(handles), list(lengths), list(arrivals), self.arrivals)

    def is_full(self, b: Bin) -> bool:
        cap = self.config.max_per_seq
        return b.free == 0 or (cap is not None and len(b.items) >= cap)


def register_packer(name: str, cls: type | None = None, *, override: bool = False) -> Any:
    """Make ``PackConfig(algorithm=name)`` use ``cls`` (a :class:`Packer` subclass); returns ``cls``.
    Without ``cls``, a class decorator.

    Raises:
        TypeError: ``cls`` is not a :class:`Packer` subclass.
        RegistryError: ``name`` is taken and ``override`` is false.
    """
    if cls is None:
        return lambda c: register_packer(name, c, override=override)
    if not (isinstance(cls, type) and issubclass(cls, Packer)):
        raise TypeError(f"a packer must subclass patchpack.pack.Packer, got {cls!r}")
    return PACKERS.register(name, cls, override=override)


def make_packer(config: PackConfig | None = None, size_of: Callable[[Any], int] | None = None) -> Packer:
    """The packer registered for ``config.algorithm``; ``size_of(handle)`` (bytes of one example)
    lets it keep the held bytes under ``config.buffer_bytes``."""
    config = config or PackConfig()
    packer = PACKERS.get(config.algorithm)(config)
    packer.size_of = size_of
    return packer


def _entry(entry: Any, where: str, arrivals: int, seq_len: int) -> int:
    """Check one ``(arrival, length, handle)`` entry; return its length."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 3:
        raise ValueError(f"{where}: not an (arrival, length, example) entry")
    arrival, length = entry[0], entry[1]
    for name, v, lo, hi in (("arrival", arrival, 0, arrivals - 1), ("length", length, 1, seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{where}.{name}: {str(v)[:30]!r} is not an integer in [{lo}, {hi}]")
    return length


def check_packer_state(state: Any, config: PackConfig) -> None:
    """Check a packer state (:meth:`Packer.state_dict`) against ``config`` before loading it: every
    count in range, every held example's arrival before ``arrivals`` and length within ``seq_len``,
    every open sequence's free space and oldest arrival consistent with what it holds.

    Raises:
        ValueError: naming the first field that is wrong.
    """
    if not isinstance(state, dict) or any(k not in state for k in ("arrivals", "buffer", "open", "truncated_tokens")):
        raise ValueError("packer: expected an object with arrivals, buffer, open and truncated_tokens")
    arrivals = state["arrivals"]
    for name in ("arrivals", "truncated_tokens"):
        v = state[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**48:
            raise ValueError(f"packer.{name}: {str(v)[:30]!r} is not a count")
    if not isinstance(state["buffer"], list) or not isinstance(state["open"], list):
        raise ValueError("packer.buffer and packer.open must be lists")
    for i, entry in enumerate(state["buffer"]):
        _entry(entry, f"packer.buffer.{i}", arrivals, config.seq_len)
    for i, b in enumerate(state["open"]):
        if not isinstance(b, (list, tuple)) or len(b) != 3 or not isinstance(b[2], list) or not b[2]:
            raise ValueError(f"packer.open.{i}: not a (free, oldest, examples) sequence")
        used = sum(_entry(e, f"packer.open.{i}.{j}", arrivals, config.seq_len) for j, e in enumerate(b[2]))
        cap = config.max_per_seq
        if b[0] != config.seq_len - used or b[1] != min(e[0] for e in b[2]) or (cap and len(b[2]) > cap):
            raise ValueError(f"packer.open.{i}: free space {b[0]!r} or oldest arrival {b[1]!r} does not match "
                             "what it holds")

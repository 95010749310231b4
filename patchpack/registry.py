"""One registry shape for everything users extend: sources, packers, models, attention backends.

A :class:`Registry` maps names to entries (a class, a function, or a small record). It is
used as a decorator or called directly, refuses a name that is taken unless
``override=True``, lists its names for ``--help`` and error messages, and answers an
unknown name with one line naming the close ones::

    PACKERS = Registry("packer", hint="patchpack.register_packer")

    @PACKERS.register("greedy")
    class Greedy(Packer): ...

    PACKERS.register("greedy", Greedy, override=True)   # replace on purpose
    PACKERS.get("gredy")  # KeyError: unknown packer 'gredy'; did you mean 'greedy'? registered: ...

Entries keep the order they were registered in; :meth:`Registry.names` lists them sorted
unless ``ordered=True``. No torch, no other patchpack import: every layer can hold one.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name; its message is one line (``str()`` gives it unquoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind (module doc).

    Args:
        kind: what an entry is, for messages (``"source"``, ``"packer"``, ``"model"``).
        hint: how a user adds one, appended to the message for an unknown name.
    """

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind, self.hint = kind, hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, override: bool = False) -> Any:
        """Register ``entry`` under ``name`` and return it; without ``entry``, a decorator.

        Raises:
            RegistryError: ``name`` is taken and ``override`` is false.
            TypeError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if entry is None:
            def decorate(obj: T) -> T:
                self.register(name, obj, override=override)
                return obj
            return decorate
        if name in self._entries and not override and self._entries[name] is not entry:
            raise RegistryError(f"a {self.kind} named {name!r} is already registered; pass override=True "
                                "to replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (tests and plug-ins that clean up)."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            RegistryError: unknown name (one line: the close names, every name, the hint).
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown(name)) from None

    def unknown(self, name: Any) -> str:
        """The one-line message for an unknown ``name``."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=2, cutoff=0.6)
        msg = f"unknown {self.kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" registered: {', '.join(self.names()) or 'none'}"
        return msg + (f" (add one with {self.hint})" if self.hint else "")

    def names(self, ordered: bool = False) -> list[str]:
        """Registered names: sorted, or in registration order with ``ordered=True``."""
        return list(self._entries) if ordered else sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def find(self, accept: Callable[[T], bool], newest_first: bool = True) -> tuple[str, T] | None:
        """The first ``(name, entry)`` for which ``accept(entry)`` is true (newest first by default)."""
        pairs = self.items()
        for name, entry in (reversed(pairs) if newest_first else pairs):
            if accept(entry):
                return name, entry
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

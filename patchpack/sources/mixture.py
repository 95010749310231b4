"""A weighted dataset source for mixtures: :class:`Source` and :func:`as_sources`.

``make_loader({"imgs/{0..99}.tar": 0.7, "vids/{0..9}.tar": 0.3}, ...)`` mixes two datasets
by weight; :class:`Source` adds a name, per-source loader options and resampling::

    make_loader([Source("imgs/{0..99}.tar", 0.7, max_patches=256),
                 Source("vids/{0..9}.tar", 0.3, name="video", video=VideoConfig(frames=8, tubelet=2))])

The overrides are applied to the loader's config by :mod:`patchpack.pipeline.mixture`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from .plan import expand_sources

__all__ = ["Source", "as_sources", "is_mixture"]


class Source:
    """One dataset of a mixture.

    Attributes:
        urls: shard urls or patterns (as for ``make_loader``), one or a list.
        weight: relative share of the samples drawn from this source while it has samples
            (weights are normalised over the sources not yet exhausted).
        name: label for stats and errors (default: the first url pattern).
        resampled: draw this source's shards with replacement, endlessly: it never runs
            out, and an epoch ends when the other sources are exhausted.
        overrides: loader options for this source only, as ``make_loader`` keywords
            (``max_patches=``, ``video=``, ``label_field=``, ``augment=``, ``fit__mode=``, ...).
    """

    def __init__(self, urls: str | Sequence[str], weight: float = 1.0, *, name: str | None = None,
                 resampled: bool = False, **overrides: Any) -> None:
        if isinstance(urls, (str, os.PathLike)):
            urls = [os.fspath(urls)]
        self.urls = [os.fspath(u) for u in urls]
        if not self.urls:
            raise ValueError("a Source needs at least one url")
        weight = float(weight)
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"source weight must be a positive number, got {weight!r} for {self.urls[0]!r}")
        self.weight = weight
        self.name = str(name) if name is not None else self.urls[0]
        self.resampled = bool(resampled)
        self.overrides = dict(overrides)

    def expanded(self) -> list[str]:
        """The shard urls with brace patterns expanded."""
        return expand_sources(self.urls)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in sorted(self.overrides.items()))
        res = ", resampled=True" if self.resampled else ""
        return f"Source({self.urls!r}, {self.weight!r}, name={self.name!r}{res}{extra})"


def is_mixture(urls: Any) -> bool:
    """Whether ``make_loader``'s first argument describes a mixture (a dict or :class:`Source`\\ s)."""
    if isinstance(urls, (Source, Mapping)):
        return True
    return isinstance(urls, (list, tuple)) and bool(urls) and all(isinstance(u, Source) for u in urls)


def as_sources(urls: Any) -> list[Source]:
    """``{url pattern: weight}``, a :class:`Source` or a list of them -> a list of :class:`Source`.

    Raises:
        ValueError: no sources, duplicate names, or a url in two sources.
    """
    if isinstance(urls, Source):
        sources = [urls]
    elif isinstance(urls, Mapping):
        sources = [Source(u, w) for u, w in urls.items()]
    else:
        sources = list(urls)
    if not sources:
        raise ValueError("a mixture needs at least one source")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must differ, got {names}; pass name= to Source")
    return sources

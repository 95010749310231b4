"""The loader's sources resolved against its config: expanded urls and one config per source.

A plain loader has one source (its urls). A weighted mixture
(:class:`patchpack.sources.mixture.Source`, or ``{url pattern: weight}``) has several, each
with its own shards, weight and loader options; every consumer splits every source's shards
as a plain loader would, so each source is read exactly once per epoch (or endlessly when
resampled), and the read stage interleaves them by weight. One packer serves all sources:
they must share the token width (patch size and tubelet) and the options one packer and one
batch layout need (:data:`SHARED`); an image source mixed with video sources takes the video
config, so its images become one-tubelet clips.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..config import LoaderConfig
from ..sources import expand_sources
from ..sources.mixture import Source, as_sources, is_mixture

__all__ = ["Sources", "SHARED"]

#: loader options one packer and one batch layout need the same for every source
SHARED = ("pack", "batch_size", "max_per_seq", "epochs", "resampled", "rank", "world_size", "errors",
          "errors_path", "shuffle_shards", "decode_threads", "packed_shards", "tokenizer", "text_len", "num_classes")


class Sources:
    """The sources of one loader (module doc).

    Attributes:
        mixture: whether the loader was given a mixture (per-source stats are kept then).
        names: source names (a plain loader's one source is named ``""``).
        urls_by_source: each source's expanded shard urls.
        configs: each source's :class:`LoaderConfig` (the base with its overrides).
        base: the loader-level config (with the mixture's video config when a source has one).
        weights: normalised weights.
        resampled: per source, whether it is drawn with replacement, endlessly.
    """

    def __init__(self, urls: Any, base: LoaderConfig) -> None:
        self.mixture = is_mixture(urls)
        sources = as_sources(urls) if self.mixture else [Source(expand_sources(urls), 1.0, name="")]
        self.names = [s.name for s in sources]
        self.urls_by_source = [s.expanded() for s in sources]
        self._owner: dict[str, int] = {}
        for k, source_urls in enumerate(self.urls_by_source):
            for u in source_urls:
                if self._owner.setdefault(u, k) != k:
                    raise ValueError(f"shard {u!r} is in sources {self.names[self._owner[u]]!r} and "
                                     f"{self.names[k]!r}; a shard belongs to one source")
        configs = [_source_config(base, s) for s in sources]
        videos = [c.video for c in configs if c.video is not None]
        if videos:  # images become one-tubelet clips beside the videos
            configs = [c if c.video is not None else replace(c, video=videos[0]) for c in configs]
        dims = {(c.patch_size, c.tubelet) for c in configs}
        if len(dims) > 1:
            raise ValueError(f"mixed sources must share the token width: patch size and tubelet differ {sorted(dims)}")
        self.configs = configs
        self.base = base if base.video is not None or not videos else replace(base, video=videos[0])
        self.resampled = [s.resampled or base.resampled for s in sources]
        total = sum(s.weight for s in sources)
        self.weights = [s.weight / total for s in sources]
        self._signature = [[s.name, s.weight, s.resampled, json.loads(json.dumps(s.overrides, sort_keys=True,
                                                                                  default=repr))] for s in sources]

    @property
    def urls(self) -> list[str]:
        """Every shard url of every source, source by source."""
        return [u for urls in self.urls_by_source for u in urls]

    def source_of(self, url: str) -> int | None:
        """Index of the source a shard url belongs to (``None`` if none)."""
        return self._owner.get(url)

    def signature(self) -> list | None:
        """JSON-ready description of a mixture (names, weights, resampling, overrides) for state
        fingerprints; ``None`` for a plain loader."""
        return self._signature if self.mixture else None


def _source_config(base: LoaderConfig, source: Source) -> LoaderConfig:
    """The base with the source's overrides; an override of a shared option is refused by the
    name the user wrote (``seq_len``, not the ``pack`` section it lives in)."""
    for name, value in source.overrides.items():
        one = base.with_overrides(**{name: value})
        if any(getattr(one, shared) != getattr(base, shared) for shared in SHARED):
            raise ValueError(f"source {source.name!r}: option {name!r} cannot differ per source (one packer "
                             "and one batch layout serve the whole mixture); set it on the loader")
    return base.with_overrides(**source.overrides)
